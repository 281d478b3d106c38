"""Choosing each agent's STT, LLM, TTS and VAD from its config and the keys that are set."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from livekit.agents import llm, stt, tts, vad

from voicebot.config import (
    MOONSHINE_MODELS,
    OFFLINE_TTS,
    AgentDefinition,
    ModelSettings,
    ProviderKeys,
    Rule,
)

if TYPE_CHECKING:
    from voicebot.providers.rules_llm import RuleMeanings
    from voicebot.providers.silero_vad import BatchedSileroVAD

log = structlog.get_logger(__name__)


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


def listened_words(agent: AgentDefinition) -> frozenset[str]:
    """The words a recogniser favours for `agent`: its rules' phrases and examples, and its STT keywords."""
    from voicebot.providers.rules_llm import words

    said = (text for rule in agent.rules for text in (*rule.phrases, *rule.examples))
    return frozenset(word for text in (*said, *agent.stt.keywords) for word in words(text))


class SharedVADs:
    """One VAD per turn setting for the whole process: each session opens its own stream on it, and the
    streams' windows are judged together (providers/silero_vad.py)."""

    def __init__(self) -> None:
        self._vads: dict[tuple[float, float], BatchedSileroVAD] = {}
        self._lock = asyncio.Lock()

    async def of(self, agent: AgentDefinition) -> BatchedSileroVAD:
        """The VAD for `agent`'s turn settings, loaded the first time it is asked for."""
        key = (agent.turn.vad_activation_threshold, agent.turn.vad_min_silence_s)
        async with self._lock:
            if key not in self._vads:
                from voicebot.providers.silero_vad import BatchedSileroVAD

                # Loading the ONNX model is CPU work: keep it off the event loop.
                self._vads[key] = await asyncio.to_thread(
                    BatchedSileroVAD, activation_threshold=key[0], min_silence_duration=key[1]
                )
            return self._vads[key]

    async def aclose(self) -> None:
        """Stop the VADs' batchers, once the sessions using them have ended."""
        for shared in self._vads.values():
            await shared.aclose()


class PipelineFactory(Protocol):
    """Builds the pipeline for an agent; tests pass scripted ones."""

    async def build(self, agent: AgentDefinition) -> Pipeline:
        """The pipeline for one new session of `agent`."""


class ProviderPipelineFactory:
    """Cloud providers when their keys are set, the offline pipeline otherwise."""

    def __init__(self, keys: ProviderKeys, models: ModelSettings) -> None:
        self._keys = keys
        self._models = models
        self._vads = SharedVADs()

    async def build(self, agent: AgentDefinition) -> Pipeline:
        """The pipeline for one new session of `agent`."""
        # The first offline STT built reads pocketsphinx's 135k-word dictionary or loads Moonshine's model:
        # not on the loop.
        speech_to_text = await asyncio.to_thread(self._stt, agent)
        return Pipeline(
            stt=speech_to_text,
            llm=await self._llm(agent),
            tts=await self._tts(agent),
            vad=await self._vads.of(agent),
        )

    async def prepare(self, agents: Sequence[AgentDefinition]) -> None:
        """Load the offline models `agents` use now, before any session is started.

        Loaded at the first session instead, they cost that caller a second or more, and their loading
        (onnxruntime building its sessions holds the GIL) stalled every session already talking.
        """
        for agent in agents:
            if self._stt_choice(agent) != "deepgram":
                await asyncio.to_thread(self._stt, agent)
            if self._tts_choice(agent) == "piper":
                await self._tts(agent)
            if agent.llm.provider == "rules":
                await self._rule_meanings(agent)
            await self._vads.of(agent)

    async def offline_voice(self, agent: AgentDefinition) -> tts.TTS[Any] | None:
        """`agent`'s voice if it is an offline one (Piper or espeak-ng), None if it is a cloud voice."""
        if self._tts_choice(agent) not in OFFLINE_TTS:
            return None
        return await self._tts(agent)

    def _stt_choice(self, agent: AgentDefinition) -> str:
        choice = agent.stt.provider
        if choice == "auto" and self._keys.deepgram_api_key:
            return "deepgram"
        return self._models.stt if choice in ("offline", "auto") else choice

    def _tts_choice(self, agent: AgentDefinition) -> str:
        choice = agent.tts.provider
        if choice == "auto" and self._keys.eleven_api_key:
            return "elevenlabs"
        return self._models.tts if choice in ("offline", "auto") else choice

    def _stt(self, agent: AgentDefinition) -> stt.STT[Any]:
        choice = self._stt_choice(agent)
        if choice == "deepgram":
            from livekit.agents import NOT_GIVEN
            from livekit.plugins import deepgram

            model = agent.stt.model or "nova-3"
            # Key terms are a nova-3 feature: the plugin refuses them with any other model.
            key_terms = list(agent.stt.keywords) if model.startswith("nova-3") else []
            return deepgram.STT(
                model=model,
                language=agent.language,
                api_key=self._keys.deepgram_api_key,
                keyterm=key_terms or NOT_GIVEN,
            )
        if choice == "moonshine":
            from voicebot.providers.moonshine_stt import DEFAULT_MODEL, MoonshineSTT

            return MoonshineSTT(
                models_dir=self._models.path,
                language=agent.language,
                keywords=listened_words(agent),
                keyword_boost=agent.stt.keyword_boost,
                beam_width=agent.stt.beam_width,
                # Empty, or with provider "auto" or "offline" naming Deepgram's model: Moonshine's default.
                model=agent.stt.model if agent.stt.model in MOONSHINE_MODELS else DEFAULT_MODEL,
            )
        from voicebot.providers.sphinx_stt import SphinxSTT

        phrases = [phrase for rule in agent.rules for phrase in rule.phrases]
        return SphinxSTT(phrases=phrases, language=agent.language)

    async def _tts(self, agent: AgentDefinition) -> tts.TTS[Any]:
        choice = self._tts_choice(agent)
        if choice == "elevenlabs":
            from livekit.agents import NOT_GIVEN
            from livekit.plugins import elevenlabs

            voice = elevenlabs.TTS(api_key=self._keys.eleven_api_key)
            # Unset options keep the plugin's own defaults.
            voice.update_options(voice_id=agent.tts.voice or NOT_GIVEN, model=agent.tts.model or NOT_GIVEN)
            return voice
        if choice == "piper":
            from voicebot.providers.piper_tts import PiperTTS, shared_voice

            # The voice loads once per process (0.3 s of CPU, off the loop): here, not in the first reply.
            await shared_voice()
            return PiperTTS(speed_wpm=agent.tts.speed_wpm)
        from voicebot.providers.espeak_tts import EspeakTTS

        return EspeakTTS(voice=agent.tts.voice or "en-us", speed_wpm=agent.tts.speed_wpm)

    async def _llm(self, agent: AgentDefinition) -> llm.LLM[Any]:
        if agent.llm.provider == "openai":
            from livekit.plugins import openai

            return openai.LLM(
                model=agent.llm.model or "llama3.2",
                base_url=agent.llm.base_url,
                # Local servers (Ollama, vLLM) accept any key; the client library insists on one.
                api_key=self._keys.openai_api_key or "unused",
            )
        from voicebot.providers.rules_llm import RulesLLM

        return RulesLLM(agent, await self._rule_meanings(agent))

    async def _rule_meanings(self, agent: AgentDefinition) -> RuleMeanings | None:
        if not agent.rules_matching.by_meaning:
            return None
        # Loading the encoder (the first time), embedding the examples and training are CPU work.
        return await asyncio.to_thread(_meanings_of, agent.rules, agent.id)

    async def aclose(self) -> None:
        """Stop the shared VADs' batchers, once the sessions using them have ended."""
        await self._vads.aclose()


# The rules' meanings, one per distinct rule list for the whole process, shared by every factory and
# session: built per factory, every app the tests start (hundreds) trained the same classifiers again.
_meanings: dict[tuple[Rule, ...], RuleMeanings | None] = {}
_meanings_lock = threading.Lock()


def _meanings_of(rules: tuple[Rule, ...], agent_id: str) -> RuleMeanings | None:
    """The rules' meanings, built the first time they are asked for; CPU work for a thread."""
    from voicebot.providers.rules_llm import RuleMeanings
    from voicebot.providers.sentence_encoder import EncoderUnavailableError, shared_encoder

    with _meanings_lock:
        if rules not in _meanings:
            try:
                _meanings[rules] = RuleMeanings.of(rules, shared_encoder())
            except EncoderUnavailableError as exc:
                # The agent still answers its exact phrases; said once, not per session.
                log.warning("rules_matching_unavailable", agent_id=agent_id, error=str(exc))
                _meanings[rules] = None
        return _meanings[rules]
