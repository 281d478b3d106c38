"""The greeting cache: synthesised once per agent and text as it is first heard, replayed whole after."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from livekit import rtc

from tests.fakes import ToneTTS
from voicebot.agents.greeting import FRAME_S, GreetingCache

GREETING = "Hello, how can I help?"


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
