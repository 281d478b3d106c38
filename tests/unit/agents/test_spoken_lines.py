"""An agent's fixed lines: synthesised once per agent and text (at startup or first heard), replayed whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import ChatContext, ModelSettings

from tests.fakes import ToneTTS
from voicebot.agents.rules_agent import RulesAgent
from voicebot.agents.spoken_lines import FRAME_S, SpokenLines, cache_offline_lines, fixed_lines
from voicebot.config import AgentDefinition, ProviderChoice, Rule

GREETING = "Hello, how can I help?"


def agent_with(agent_id: str, greeting: str) -> AgentDefinition:
    return AgentDefinition(id=agent_id, name=agent_id, greeting=greeting)


async def seconds(frames: AsyncIterator[rtc.AudioFrame]) -> float:
    return sum([frame.duration async for frame in frames])


async def test_a_greeting_is_synthesised_once_as_it_is_heard_then_replayed_whole() -> None:
    voice = ToneTTS(audio_s=0.6)
    cache = SpokenLines()
    assert not cache.cached("a", GREETING)
    assert await seconds(cache.audio("a", GREETING, voice)) == pytest.approx(0.6, abs=0.011)
    assert cache.cached("a", GREETING)
    # Every later session gets a fresh stream of the same frames, and the voice is not asked again.
    assert await seconds(cache.audio("a", GREETING, voice)) == pytest.approx(0.6, abs=0.011)
    assert await seconds(cache.audio("a", GREETING, voice)) == pytest.approx(0.6, abs=0.011)
    assert voice.spoken == [GREETING]
    assert not cache.cached("b", GREETING), "another agent's greeting is its own"
    await voice.aclose()


async def test_a_line_is_kept_at_the_outputs_rate_as_livekit_agents_would_resample_it() -> None:
    """Regression (issue 14): Piper speaks at 22,050 Hz and the agent's output runs at 24 kHz, so
    livekit-agents resampled every line on the event loop each time it was played (5.8% of the loop's samples
    at 4 density sessions). A line is resampled once, when it is kept, by the same resampler."""
    voice = ToneTTS(audio_s=0.6, sample_rate=22050)
    cache = SpokenLines(sample_rate=24000)
    synthesised = [frame async for frame in cache.audio("a", GREETING, voice)]
    assert {frame.sample_rate for frame in synthesised} == {22050}, "the first hearing is the voice's own"
    replayed = [frame async for frame in cache.audio("a", GREETING, voice)]
    assert {frame.sample_rate for frame in replayed} == {24000}
    assert all(frame.duration == pytest.approx(FRAME_S) for frame in replayed[:-1])
    resampler = rtc.AudioResampler(input_rate=22050, output_rate=24000, num_channels=1)
    expected = [out for frame in synthesised for out in resampler.push(frame)] + resampler.flush()
    kept, resampled = (
        np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in fs]) for fs in (replayed, expected)
    )
    # The same samples but for the resampler's dither (two fresh resamplers differ by up to 2 in 32768).
    assert len(kept) == len(resampled)
    assert np.abs(kept.astype(np.int32) - resampled).max() <= 2
    await voice.aclose()


async def test_a_greeting_cut_off_before_its_end_is_not_kept() -> None:
    voice = ToneTTS(audio_s=0.6)
    cache = SpokenLines()
    frames = cache.audio("a", GREETING, voice)
    assert isinstance(frames, AsyncIterator)
    await anext(frames)  # an interruption: the greeting's speech stops consuming it
    await frames.aclose()  # type: ignore[attr-defined]  # an async generator
    assert not cache.cached("a", GREETING)
    assert await seconds(cache.audio("a", GREETING, voice)) == pytest.approx(0.6, abs=0.011)
    assert voice.spoken == [GREETING, GREETING]
    await voice.aclose()


async def test_the_greeting_goes_out_in_short_frames_with_the_loop_free_between_them() -> None:
    """Regression (issue 12): the greeting waits whole for a subscriber, then reached livekit-agents as
    seconds of audio at once, and its transcript synchroniser estimated the speaking rate of all of it on the
    loop in one go: the first frame left ~25 ms late. Each frame must be short, the loop free between them."""
    voice = ToneTTS(audio_s=1.0)
    cache = SpokenLines()
    for attempt in ("synthesised", "replayed"):
        ticks = 0

        def tick() -> None:
            nonlocal ticks
            ticks += 1

        seen: list[tuple[float, int]] = []
        async for frame in cache.audio("a", GREETING, voice):
            seen.append((frame.duration, ticks))
            asyncio.get_running_loop().call_soon(tick)
        assert max(duration for duration, _ in seen) <= FRAME_S + 1e-9, attempt
        assert sum(duration for duration, _ in seen) == pytest.approx(1.0, abs=0.011), attempt
        # A callback scheduled with one frame has run before the next frame is handed on.
        assert [t for _, t in seen[1:]] == list(range(1, len(seen))), attempt
    assert voice.spoken == [GREETING]
    await voice.aclose()


class FailingTTS(ToneTTS):
    """A voice whose every synthesis fails."""

    def synthesize(self, text: str, **_options: Any) -> Any:
        raise RuntimeError("the voice is broken")


def rules_agent(agent_id: str, greeting: str) -> AgentDefinition:
    return AgentDefinition(
        id=agent_id,
        name=agent_id,
        greeting=greeting,
        fallback="Sorry, say that again?",
        rules=(Rule(phrases=("hours",), reply="Nine to five."), Rule(phrases=("bye",), reply="Goodbye.")),
    )


def test_an_agent_on_the_rules_engine_has_every_reply_as_a_fixed_line_and_another_only_its_greeting() -> None:
    agent = rules_agent("desk", "Hello from the desk.")
    assert fixed_lines(agent) == (
        "Hello from the desk.",
        "Nine to five.",
        "Goodbye.",
        "Sorry, say that again?",
    )
    # An LLM's replies are its own: only the greeting is fixed.
    chatty = replace(agent, llm=ProviderChoice(provider="openai"))
    assert fixed_lines(chatty) == ("Hello from the desk.",)
    assert fixed_lines(replace(chatty, greeting="")) == ()


async def test_offline_voices_lines_are_synthesised_at_startup_and_cloud_voices_are_left_alone() -> None:
    agents = [
        rules_agent("offline", "Hello from the desk."),
        rules_agent("cloud", "Hello from the cloud."),
        replace(rules_agent("silent", ""), llm=ProviderChoice(provider="openai")),
        rules_agent("broken", "Hello, if I could."),
    ]
    voices: dict[str, ToneTTS] = {"offline": ToneTTS(audio_s=0.4), "broken": FailingTTS()}
    asked: list[str] = []

    async def offline_voice(agent: AgentDefinition) -> ToneTTS | None:
        asked.append(agent.id)
        return voices.get(agent.id)

    cache = SpokenLines()
    await cache_offline_lines(cache, agents, offline_voice)

    lines = fixed_lines(agents[0])
    assert all(cache.cached("offline", line) for line in lines)
    assert voices["offline"].spoken == list(lines)
    assert not cache.cached("cloud", "Hello from the cloud."), "a cloud voice is charged for every synthesis"
    assert not cache.cached("broken", "Hello, if I could."), "a failure is left to the first call"
    assert asked == ["offline", "cloud", "broken"], "an agent with no fixed line needs no voice"
    # The first call then plays them from memory: the voice is not asked again.
    assert await seconds(cache.audio("offline", "Nine to five.", voices["offline"])) == pytest.approx(
        0.4, abs=0.011
    )
    assert voices["offline"].spoken == list(lines)


async def test_a_rules_agent_speaks_a_fixed_reply_from_memory() -> None:
    definition = rules_agent("desk", "Hello from the desk.")
    voice = ToneTTS(audio_s=0.4)
    cache = SpokenLines()
    await cache.fill("desk", "Nine to five.", voice)
    agent = RulesAgent(definition, cache, voice, ChatContext())

    async def reply() -> AsyncIterator[str]:
        # As the rules engine streams it: a chunk per sentence, the space with the first.
        for chunk in ("Nine ", "to five."):
            yield chunk

    frames = [frame async for frame in agent.tts_node(reply(), ModelSettings())]
    assert sum(frame.duration for frame in frames) == pytest.approx(0.4, abs=0.011)
    assert voice.spoken == ["Nine to five."], "played from memory, not synthesised again"
