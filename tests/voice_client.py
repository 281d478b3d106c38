"""A real LiveKit client for tests: speaks espeak-ng audio into a room and records what the agent says."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc

from voicebot.livekit import AGENT_IDENTITY_PREFIX

TRANSCRIPTION_TOPIC = "lk.transcription"
FINAL_ATTRIBUTE = "lk.transcription_final"
STATE_ATTRIBUTE = "lk.agent.state"
FRAME_MS = 10


async def espeak(text: str, *, voice: str = "en-us", wpm: int = 160) -> tuple[np.ndarray, int]:
    """Speech for `text` made by the espeak-ng program: (int16 samples, sample rate)."""
    process = await asyncio.create_subprocess_exec(
        "espeak-ng",
        "--stdout",
        "-v",
        voice,
        "-s",
        str(wpm),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(text.encode())
    assert process.returncode == 0, err.decode()
    with wave.open(io.BytesIO(out)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16), wav.getframerate()


def rms(samples: np.ndarray) -> float:
    """Root-mean-square level of int16 samples (silence is 0, full scale 32767)."""
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0


@dataclass
class Heard:
    """One transcription the room carried."""

    identity: str
    text: str
    final: bool
    at: float


@dataclass
class VoiceClient:
    """Joins a room as a person would: publishes a microphone track and listens to the agent."""

    url: str
    token: str
    room: rtc.Room = field(default_factory=rtc.Room)
    agent_audio: list[tuple[float, np.ndarray]] = field(default_factory=list)
    agent_sample_rate: int = 48000
    heard: list[Heard] = field(default_factory=list)
    agent_states: list[str] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _source: rtc.AudioSource | None = None

    async def connect(self) -> None:
        """Join the room and start listening to agents' audio, transcriptions and state."""
        self.room.on("track_subscribed", self._on_track)
        self.room.on("participant_attributes_changed", self._on_attributes)
        self.room.on("participant_connected", lambda _p: self._changed.set())
        self.room.register_text_stream_handler(TRANSCRIPTION_TOPIC, self._on_text_stream)
        await self.room.connect(self.url, self.token)

    async def close(self) -> None:
        """Leave the room."""
        await self.room.disconnect()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def agents(self) -> list[rtc.RemoteParticipant]:
        """The agent participants in the room now."""
        return [
            p for p in self.room.remote_participants.values() if p.identity.startswith(AGENT_IDENTITY_PREFIX)
        ]

    async def wait_for(self, condition: Callable[[], bool], within_s: float, what: str) -> None:
        """Wait until `condition()` holds, re-checking whenever the room changes."""
        deadline = time.monotonic() + within_s
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"gave up after {within_s}s waiting for {what}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))

    async def wait_until_listening(self, within_s: float, what: str) -> None:
        """Wait until the agent's published state is `listening` (it has finished speaking)."""
        await self.wait_for(lambda: self.agent_states[-1:] == ["listening"], within_s, what)

    def agent_audio_since(self, since: float) -> np.ndarray:
        """Agent audio received after `since` (monotonic time), as int16 samples."""
        chunks = [samples for at, samples in self.agent_audio if at >= since]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def loud_seconds(self, samples: np.ndarray, threshold: float = 300.0) -> float:
        """How many seconds of `samples` are above a speech-like level, in 20 ms windows."""
        window = self.agent_sample_rate // 50
        count = sum(
            1 for i in range(0, len(samples) - window, window) if rms(samples[i : i + window]) > threshold
        )
        return count * 0.02

    async def say(self, samples: np.ndarray, sample_rate: int, trailing_silence_s: float = 1.2) -> float:
        """Publish speech in real time, then silence; returns when the speech ended (monotonic time)."""
        if self._source is None:
            self._source = rtc.AudioSource(sample_rate, 1)
            track = rtc.LocalAudioTrack.create_audio_track("microphone", self._source)
            options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            await self.room.local_participant.publish_track(track, options)
        step = sample_rate * FRAME_MS // 1000
        padded = np.concatenate([samples, np.zeros(-len(samples) % step, dtype=np.int16)])
        ended = 0.0
        for offset in range(0, len(padded), step):
            await self._push(padded[offset : offset + step], sample_rate)
        ended = time.monotonic()
        silence = np.zeros(step, dtype=np.int16)
        for _ in range(int(trailing_silence_s * 1000 / FRAME_MS)):
            await self._push(silence, sample_rate)
        return ended

    async def _push(self, chunk: np.ndarray, sample_rate: int) -> None:
        assert self._source is not None
        frame = rtc.AudioFrame(chunk.tobytes(), sample_rate, 1, len(chunk))
        await self._source.capture_frame(frame)
        # capture_frame returns once the frame is queued; pace to real time as a microphone does.
        await asyncio.sleep(FRAME_MS / 1000 * 0.95)

    def _on_track(
        self, track: rtc.Track, _publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and participant.identity.startswith(AGENT_IDENTITY_PREFIX):
            task = asyncio.create_task(
                self._record(rtc.AudioStream(track, sample_rate=self.agent_sample_rate))
            )
            self._tasks.add(task)

    async def _record(self, stream: rtc.AudioStream) -> None:
        async for event in stream:
            samples = np.frombuffer(event.frame.data, dtype=np.int16).copy()
            self.agent_audio.append((time.monotonic(), samples))
            self._changed.set()

    def _on_attributes(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        if STATE_ATTRIBUTE in changed and participant.identity.startswith(AGENT_IDENTITY_PREFIX):
            self.agent_states.append(changed[STATE_ATTRIBUTE])
            self._changed.set()

    def _on_text_stream(self, reader: rtc.TextStreamReader, identity: str) -> None:
        task = asyncio.create_task(self._read_text(reader, identity))
        self._tasks.add(task)

    async def _read_text(self, reader: rtc.TextStreamReader, identity: str) -> None:
        text = await reader.read_all()
        final = (reader.info.attributes or {}).get(FINAL_ATTRIBUTE) == "true"
        self.heard.append(Heard(identity, text, final, time.monotonic()))
        self._changed.set()

    def finals(self, *, agent: bool) -> list[str]:
        """Final transcriptions from the agent (its replies) or from people (what they said)."""
        return [
            h.text
            for h in self.heard
            if h.final and h.text.strip() and h.identity.startswith(AGENT_IDENTITY_PREFIX) == agent
        ]
