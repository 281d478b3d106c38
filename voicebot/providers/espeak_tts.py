"""Offline text-to-speech with the espeak-ng program, run as a child process so the loop never waits on it."""

from __future__ import annotations

import asyncio
import secrets
from typing import Never

from livekit.agents import APIConnectionError, APIConnectOptions, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

SAMPLE_RATE = 22050  # what espeak-ng writes
CHUNK_BYTES = 8192


class EspeakTTS(tts.TTS[Never]):
    """espeak-ng voices; the program and its voice data come from Debian's espeak-ng package."""

    def __init__(self, voice: str = "en-us", speed_wpm: int = 175, binary: str = "espeak-ng") -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False), sample_rate=SAMPLE_RATE, num_channels=1
        )
        self.voice = voice
        self.speed_wpm = speed_wpm
        self.binary = binary

    @property
    def model(self) -> str:
        """The voice, as metrics and logs show it."""
        return f"espeak-ng/{self.voice}"

    @property
    def provider(self) -> str:
        """The provider name metrics and logs show."""
        return "espeak-ng"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        """Speak `text`: a WAV stream decoded into audio frames by livekit-agents."""
        return EspeakStream(tts=self, input_text=text, conn_options=conn_options)


class EspeakStream(tts.ChunkedStream):
    """One espeak-ng run; its WAV output is pushed as it arrives."""

    def __init__(self, *, tts: EspeakTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._espeak = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                self._espeak.binary, "--stdout", "-v", self._espeak.voice, "-s", str(self._espeak.speed_wpm),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except OSError as exc:
            raise APIConnectionError(
                f"cannot run {self._espeak.binary}: {exc.strerror}", retryable=False
            ) from exc
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        try:
            # Text goes in on stdin, never argv: any text is safe and there is no length limit.
            process.stdin.write(self.input_text.encode())
            await process.stdin.drain()
            process.stdin.close()
            output_emitter.initialize(
                request_id=f"espeak_{secrets.token_hex(4)}",
                sample_rate=SAMPLE_RATE,
                num_channels=1,
                mime_type="audio/wav",
            )
            while chunk := await process.stdout.read(CHUNK_BYTES):
                output_emitter.push(chunk)
            stderr = await process.stderr.read()
            if await process.wait() != 0:
                message = stderr.decode(errors="replace").strip() or f"exit code {process.returncode}"
                raise APIConnectionError(f"espeak-ng failed: {message}", retryable=False)
            output_emitter.flush()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
