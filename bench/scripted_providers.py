"""Cloud-style providers with no model behind them: what a session costs the runtime itself (issue 14).

With the offline pipeline, a session's CPU is mostly its models'. These stand in for a cloud STT and TTS as
their plugins look from inside the process, and cost nothing beyond what the runtime does with them:

- the STT is handed each utterance the VAD cut out (as livekit-agents' StreamAdapter hands any STT that does
  not stream, OpenAI's for one) and answers `transcript` after a network round trip;
- the TTS streams 24 kHz PCM back after a round trip, in 100 ms chunks arriving four times faster than they
  play, as a cloud voice's HTTP stream does; the audio is a tone as long as the text would take to say;
- the rules LLM matches exact phrases only (no sentence encoder), and the VAD is the one every pipeline has.

bench/density.py runs voicebot with them (`python -m bench.scripted_voicebot`) and the standard worker
(bench/standard_worker.py with BENCH_PROVIDERS=scripted).
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Never

from livekit.agents import APIConnectOptions, stt, tts, utils
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from tests.fakes import tone
from voicebot.agents.pipeline import Pipeline, SharedVADs
from voicebot.config import AgentDefinition
from voicebot.providers.rules_llm import RulesLLM

ROUND_TRIP_S = 0.1
"""A cloud provider's time to first byte, about what Deepgram's and ElevenLabs' are from Europe."""
SAMPLE_RATE = 24000
CHUNK_S = 0.1
ARRIVAL_SPEEDUP = 4.0
"""How much faster than real time the voice's chunks arrive."""
SPEECH_S_PER_CHARACTER = 0.065
"""About 15 characters a second: how long a text takes to say."""


class ScriptedCloudSTT(stt.STT[Never]):
    """Hears `transcript` in every utterance, one round trip after it ended."""

    def __init__(self, transcript: str) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._transcript = transcript

    @property
    def model(self) -> str:
        """The model name metrics show."""
        return "scripted"

    @property
    def provider(self) -> str:
        """The provider name metrics show."""
        return "bench"

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        await asyncio.sleep(ROUND_TRIP_S)
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[
                stt.SpeechData(language=LanguageCode("en-US"), text=self._transcript, confidence=1.0)
            ],
        )


class ScriptedCloudTTS(tts.TTS[Never]):
    """Streams a tone for any text, one round trip after it was asked, faster than real time."""

    def __init__(self) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False), sample_rate=SAMPLE_RATE, num_channels=1
        )

    @property
    def model(self) -> str:
        """The model name metrics show."""
        return "scripted"

    @property
    def provider(self) -> str:
        """The provider name metrics show."""
        return "bench"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        """A stream of `text`'s tone."""
        return _ScriptedSpeech(tts=self, input_text=text, conn_options=conn_options)


class _ScriptedSpeech(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=f"scripted_{secrets.token_hex(4)}",
            sample_rate=SAMPLE_RATE,
            num_channels=1,
            mime_type="audio/pcm",
        )
        audio = tone(len(self.input_text) * SPEECH_S_PER_CHARACTER, SAMPLE_RATE, frequency_hz=220.0)
        chunk = 2 * round(SAMPLE_RATE * CHUNK_S)
        await asyncio.sleep(ROUND_TRIP_S)
        for start in range(0, len(audio), chunk):
            output_emitter.push(audio[start : start + chunk])
            await asyncio.sleep(CHUNK_S / ARRIVAL_SPEEDUP)
        output_emitter.flush()


class ScriptedPipelines:
    """voicebot's PipelineFactory for the benchmark: the scripted providers, one shared VAD per setting."""

    def __init__(self, transcript: str) -> None:
        self._transcript = transcript
        self.vads = SharedVADs()

    async def build(self, agent: AgentDefinition) -> Pipeline:
        """The pipeline for one new session of `agent`."""
        return Pipeline(
            stt=ScriptedCloudSTT(self._transcript),
            # Without meanings RulesLLM matches exact phrases and patterns: no sentence encoder loads.
            llm=RulesLLM(agent, None),
            tts=ScriptedCloudTTS(),
            vad=await self.vads.of(agent),
        )
