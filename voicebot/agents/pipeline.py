"""Choosing each agent's STT, LLM, TTS and VAD from its config and the keys that are set."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from livekit.agents import llm, stt, tts, vad

from voicebot.config import AgentDefinition, ProviderKeys

if TYPE_CHECKING:
    from voicebot.providers.silero_vad import BatchedSileroVAD


@dataclass(frozen=True)
class Pipeline:
    """The models one agent session listens, thinks and speaks with."""

    stt: stt.STT[Any]
    llm: llm.LLM[Any]
    tts: tts.TTS[Any]
    vad: vad.VAD

    @property
    def description(self) -> dict[str, str]:
        """Which provider does what, for logs and health (no keys)."""
        return {
            "stt": f"{self.stt.provider}/{self.stt.model}",
            "llm": f"{self.llm.provider}/{self.llm.model}",
            "tts": f"{self.tts.provider}/{self.tts.model}",
        }


class PipelineFactory(Protocol):
    """Builds the pipeline for an agent; tests pass scripted ones."""

    async def build(self, agent: AgentDefinition) -> Pipeline:
        """The pipeline for one new session of `agent`."""


class ProviderPipelineFactory:
    """Cloud providers when their keys are set, the offline pipeline otherwise."""

    def __init__(self, keys: ProviderKeys) -> None:
        self._keys = keys
        # The VAD model is loaded once per setting and shared: each session opens its own stream on it, and
        # the streams' windows are judged together (providers/silero_vad.py).
        self._vads: dict[tuple[float, float], BatchedSileroVAD] = {}
        self._vad_lock = asyncio.Lock()

    async def build(self, agent: AgentDefinition) -> Pipeline:
        """The pipeline for one new session of `agent`."""
        # Building the offline STT reads pocketsphinx's 135k-word dictionary the first time: not on the loop.
        speech_to_text = await asyncio.to_thread(self._stt, agent)
        return Pipeline(
            stt=speech_to_text, llm=self._llm(agent), tts=self._tts(agent), vad=await self._vad(agent)
        )

    def _stt(self, agent: AgentDefinition) -> stt.STT[Any]:
        choice = agent.stt.provider
        if choice == "deepgram" or (choice == "auto" and self._keys.deepgram_api_key):
            from livekit.plugins import deepgram

            return deepgram.STT(
                model=agent.stt.model or "nova-3",
                language=agent.language,
                api_key=self._keys.deepgram_api_key,
            )
        from voicebot.providers.sphinx_stt import SphinxSTT

        phrases = [phrase for rule in agent.rules for phrase in rule.phrases]
        return SphinxSTT(phrases=phrases, language=agent.language)

    def _tts(self, agent: AgentDefinition) -> tts.TTS[Any]:
        choice = agent.tts.provider
        if choice == "elevenlabs" or (choice == "auto" and self._keys.eleven_api_key):
            from livekit.agents import NOT_GIVEN
            from livekit.plugins import elevenlabs

            voice = elevenlabs.TTS(api_key=self._keys.eleven_api_key)
            # Unset options keep the plugin's own defaults.
            voice.update_options(voice_id=agent.tts.voice or NOT_GIVEN, model=agent.tts.model or NOT_GIVEN)
            return voice
        from voicebot.providers.espeak_tts import EspeakTTS

        return EspeakTTS(voice=agent.tts.voice or "en-us", speed_wpm=agent.tts.speed_wpm)

    def _llm(self, agent: AgentDefinition) -> llm.LLM[Any]:
        if agent.llm.provider == "openai":
            from livekit.plugins import openai

            return openai.LLM(
                model=agent.llm.model or "llama3.2",
                base_url=agent.llm.base_url,
                # Local servers (Ollama, vLLM) accept any key; the client library insists on one.
                api_key=self._keys.openai_api_key or "unused",
            )
        from voicebot.providers.rules_llm import RulesLLM

        return RulesLLM(agent)

    async def _vad(self, agent: AgentDefinition) -> vad.VAD:
        key = (agent.turn.vad_activation_threshold, agent.turn.vad_min_silence_s)
        async with self._vad_lock:
            if key not in self._vads:
                from voicebot.providers.silero_vad import BatchedSileroVAD

                # Loading the ONNX model is CPU work: keep it off the event loop.
                self._vads[key] = await asyncio.to_thread(
                    BatchedSileroVAD, activation_threshold=key[0], min_silence_duration=key[1]
                )
            return self._vads[key]

    async def aclose(self) -> None:
        """Stop the shared VADs' batchers, once the sessions using them have ended."""
        for shared in self._vads.values():
            await shared.aclose()
