"""The espeak-ng TTS speaks real audio through livekit-agents' TTS interface."""

from __future__ import annotations

import numpy as np
import pytest
from livekit.agents import APIConnectionError

from voicebot.providers.espeak_tts import SAMPLE_RATE, EspeakTTS


async def speak(tts: EspeakTTS, text: str) -> np.ndarray:
    samples: list[np.ndarray] = []
    async with tts.synthesize(text) as stream:
        async for event in stream:
            assert event.frame.sample_rate == SAMPLE_RATE
            assert event.frame.num_channels == 1
            samples.append(np.frombuffer(event.frame.data, dtype=np.int16))
    return np.concatenate(samples)


async def test_speech_is_loud_and_as_long_as_its_text() -> None:
    tts = EspeakTTS()

    short = await speak(tts, "Hello.")
    long = await speak(
        tts, "We are open from nine in the morning until five in the evening, Monday to Friday."
    )

    assert np.sqrt(np.mean(long.astype(np.float64) ** 2)) > 500
    assert 0.3 < len(short) / SAMPLE_RATE < 1.5
    assert len(long) > 4 * len(short)


async def test_slower_speech_takes_longer() -> None:
    text = "Thank you for calling."

    fast = await speak(EspeakTTS(speed_wpm=260), text)
    slow = await speak(EspeakTTS(speed_wpm=120), text)

    assert len(slow) > 1.5 * len(fast)


async def test_text_is_never_taken_for_options() -> None:
    """Text reaches espeak-ng on stdin, so a leading dash is spoken, not parsed."""
    audio = await speak(EspeakTTS(), "--version -h")

    assert len(audio) / SAMPLE_RATE > 0.5


async def test_a_missing_program_is_an_api_error() -> None:
    tts = EspeakTTS(binary="/nonexistent/espeak-ng")

    with pytest.raises(APIConnectionError, match="cannot run"):
        await speak(tts, "hello")
