"""The greeting cache: synthesised once per agent and text (at startup or first heard), replayed whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from livekit import rtc

from tests.fakes import ToneTTS
from voicebot.agents.greeting import FRAME_S, GreetingCache, cache_offline_greetings
from voicebot.config import AgentDefinition

GREETING = "Hello, how can I help?"


def agent_with(agent_id: str, greeting: str) -> AgentDefinition:
    return AgentDefinition(id=agent_id, name=agent_id, greeting=greeting)


async def seconds(frames: AsyncIterator[rtc.AudioFrame]) -> float:
    return sum([frame.duration async for frame in frames])


async def test_a_greeting_is_synthesised_once_as_it_is_heard_then_replayed_whole() -> None:
    voice = ToneTTS(audio_s=0.6)
    cache = GreetingCache()
    assert not cache.cached("a", GREETING)
    assert await seconds(cache.audio("a", GREETING, voice)) == pytest.approx(0.6, abs=0.011)
    assert cache.cached("a", GREETING)
    # Every later session gets a fresh stream of the same frames, and the voice is not asked again.
    assert await seconds(cache.audio("a", GREETING, voice)) == pytest.approx(0.6, abs=0.011)
    assert await seconds(cache.audio("a", GREETING, voice)) == pytest.approx(0.6, abs=0.011)
    assert voice.spoken == [GREETING]
    assert not cache.cached("b", GREETING), "another agent's greeting is its own"
    await voice.aclose()


async def test_a_greeting_cut_off_before_its_end_is_not_kept() -> None:
    voice = ToneTTS(audio_s=0.6)
    cache = GreetingCache()
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
    cache = GreetingCache()
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


async def test_offline_voices_greetings_are_synthesised_at_startup_and_cloud_voices_are_left_alone() -> None:
    agents = [
        agent_with("offline", "Hello from the desk."),
        agent_with("cloud", "Hello from the cloud."),
        agent_with("silent", ""),
        agent_with("broken", "Hello, if I could."),
    ]
    voices: dict[str, ToneTTS] = {"offline": ToneTTS(audio_s=0.4), "broken": FailingTTS()}
    asked: list[str] = []

    async def offline_voice(agent: AgentDefinition) -> ToneTTS | None:
        asked.append(agent.id)
        return voices.get(agent.id)

    cache = GreetingCache()
    await cache_offline_greetings(cache, agents, offline_voice)

    assert cache.cached("offline", "Hello from the desk.")
    assert voices["offline"].spoken == ["Hello from the desk."]
    assert not cache.cached("cloud", "Hello from the cloud."), "a cloud voice is charged for every synthesis"
    assert not cache.cached("broken", "Hello, if I could."), "a failure is left to the first call"
    assert asked == ["offline", "cloud", "broken"], "an agent without a greeting needs no voice"
    # The first call then plays it from memory: the voice is not asked again.
    assert await seconds(cache.audio("offline", "Hello from the desk.", voices["offline"])) == pytest.approx(
        0.4, abs=0.011
    )
    assert voices["offline"].spoken == ["Hello from the desk."]
