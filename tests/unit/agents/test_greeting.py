"""The greeting cache: synthesised once per agent and text as it is first heard, replayed whole after."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from livekit import rtc

from tests.fakes import ToneTTS
from voicebot.agents.greeting import GreetingCache

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
