"""pocketsphinx hears an agent's phrases in real speech, off the event loop."""

from __future__ import annotations

import numpy as np
import structlog
from livekit import rtc

from tests.conftest import loop_ticks_while
from tests.voice_client import espeak
from voicebot.providers.sphinx_stt import SphinxSTT

PHRASES = ["what are your opening hours", "can i leave a message", "goodbye"]


async def hear(stt: SphinxSTT, text: str, *, sample_rate: int | None = None) -> str:
    samples, rate = await espeak(text)
    if sample_rate is not None and sample_rate != rate:
        positions = np.linspace(0, len(samples) - 1, int(len(samples) * sample_rate / rate))
        samples = np.interp(positions, np.arange(len(samples)), samples).astype(np.int16)
        rate = sample_rate
    event = await stt.recognize(rtc.AudioFrame(samples.tobytes(), rate, 1, len(samples)))
    return event.alternatives[0].text


async def test_each_phrase_is_recognised_in_spoken_audio() -> None:
    stt = SphinxSTT(phrases=PHRASES)

    for phrase in PHRASES:
        assert await hear(stt, phrase) == phrase


async def test_audio_at_the_rooms_48k_rate_is_resampled() -> None:
    assert await hear(SphinxSTT(phrases=PHRASES), "can I leave a message", sample_rate=48000) == (
        "can i leave a message"
    )


async def test_speech_outside_the_phrases_is_not_forced_into_one() -> None:
    assert await hear(SphinxSTT(phrases=PHRASES), "the weather is lovely this afternoon") == ""


def test_phrases_are_normalised_and_unknown_words_dropped_with_a_warning() -> None:
    with structlog.testing.capture_logs() as logs:
        stt = SphinxSTT(phrases=["What are your OPENING hours?", "ask zqxjv", "zqxjv", "goodbye", "Goodbye!"])

    assert stt.phrases == ("what are your opening hours", "ask", "goodbye")
    assert [e["unknown"] for e in logs if e["event"] == "stt_words_unknown"] == [["zqxjv"], ["zqxjv"]]


async def test_recognition_leaves_the_event_loop_free() -> None:
    stt = SphinxSTT(phrases=PHRASES)
    samples, rate = await espeak("what are your opening hours " * 4)
    frame = rtc.AudioFrame(samples.tobytes(), rate, 1, len(samples))

    # A decode on the loop would run start to finish between two ticks.
    assert await loop_ticks_while(stt.recognize(frame)) > 50


async def test_sessions_of_one_agent_share_one_decoder() -> None:
    first, second = SphinxSTT(phrases=PHRASES), SphinxSTT(phrases=list(PHRASES))

    assert first._recogniser is second._recogniser
    assert SphinxSTT(phrases=["goodbye"])._recogniser is not first._recogniser
