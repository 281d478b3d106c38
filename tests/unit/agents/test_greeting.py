"""The greeting cache: synthesised once per agent and text, replayed whole, retried after a failure."""

from __future__ import annotations

from typing import Never

import pytest
from livekit.agents import APIConnectionError, APIConnectOptions, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS
from structlog.testing import capture_logs

from tests.fakes import ToneTTS
from voicebot.agents.greeting import GreetingCache

GREETING = "Hello, how can I help?"


async def replayed_seconds(cache: GreetingCache) -> float:
    audio = cache.audio("a", GREETING)
    assert audio is not None
    return sum([frame.duration async for frame in audio])


async def test_a_greeting_is_synthesised_once_and_replayed_whole_each_time() -> None:
    voice = ToneTTS(audio_s=0.6)
    cache = GreetingCache()
    assert cache.audio("a", GREETING) is None
    cache.fill("a", GREETING, voice)
    cache.fill("a", GREETING, voice)  # already on its way: not synthesised twice
    await cache.settled()
    assert voice.spoken == [GREETING]
    assert await replayed_seconds(cache) == pytest.approx(0.6, abs=0.011)
    # Every session gets a fresh stream of the same frames.
    assert await replayed_seconds(cache) == pytest.approx(0.6, abs=0.011)
    cache.fill("a", GREETING, voice)
    await cache.settled()
    assert voice.spoken == [GREETING]
    assert cache.audio("b", GREETING) is None, "another agent's greeting is its own"


class FailingTTS(ToneTTS):
    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        self.spoken.append(text)
        return FailingStream(tts=self, input_text=text, conn_options=APIConnectOptions(max_retry=0))


class FailingStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> Never:
        raise APIConnectionError("the voice is unreachable", retryable=False)


async def test_a_failed_synthesis_is_logged_and_tried_again_next_time() -> None:
    voice = FailingTTS()
    cache = GreetingCache()
    with capture_logs() as logs:
        cache.fill("a", GREETING, voice)
        await cache.settled()
    assert cache.audio("a", GREETING) is None
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == ["greeting_not_cached"]
    cache.fill("a", GREETING, voice)
    await cache.settled()
    assert voice.spoken == [GREETING, GREETING]
    await voice.aclose()


async def test_closing_stops_a_synthesis_on_its_way() -> None:
    cache = GreetingCache()
    cache.fill("a", GREETING, ToneTTS(audio_s=0.2))
    await cache.aclose()
    assert cache.audio("a", GREETING) is None
