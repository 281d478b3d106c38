"""The one-call spectral flux gives livekit-agents' own numbers, and the synchroniser's streams use it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice.transcription._speaking_rate import SpeakingRateDetector, SpeakingRateStream

from tests.fakes import tone
from voicebot.sessions import speaking_rate
from voicebot.sessions.speaking_rate import LIVEKIT_SPECTRAL_FLUX, spectral_flux

Flux = Callable[[SpeakingRateStream, np.ndarray[tuple[int], np.dtype[np.float32]], int], float]


@pytest.fixture
def livekit_flux() -> Iterator[Flux]:
    """livekit-agents' own method (an app started in this process may have swapped it already), and the
    class left as it was found."""
    found = SpeakingRateStream._spectral_flux
    SpeakingRateStream._spectral_flux = LIVEKIT_SPECTRAL_FLUX  # type: ignore[method-assign]
    yield LIVEKIT_SPECTRAL_FLUX
    SpeakingRateStream._spectral_flux = found  # type: ignore[method-assign]


@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050, 24000, 48000])
def test_the_flux_is_livekits_own(sample_rate: int, livekit_flux: Flux) -> None:
    stream = SpeakingRateStream.__new__(SpeakingRateStream)
    generator = np.random.default_rng(sample_rate)
    for seconds in (0.5, 1.0):
        audio = generator.normal(0, 0.1, int(seconds * sample_rate)).astype(np.float32)
        assert spectral_flux(audio, sample_rate) == pytest.approx(
            livekit_flux(stream, audio, sample_rate), rel=1e-12
        )


def test_too_short_for_two_frames_has_no_flux() -> None:
    assert spectral_flux(np.zeros(300, dtype=np.float32), 16000) == 0.0


async def _rates(frames: list[rtc.AudioFrame]) -> list[float]:
    stream = SpeakingRateDetector().stream()
    for frame in frames:
        stream.push_frame(frame)
    stream.end_input()
    return [event.speaking_rate async for event in stream]


async def test_streams_give_the_same_events_with_the_one_call(livekit_flux: Flux) -> None:
    rate = 24000
    voice = tone(0.3, rate) + bytes(2 * rate // 10) + tone(1.2, rate, frequency_hz=660.0)
    step = rate // 50
    frames = [
        rtc.AudioFrame(voice[i * 2 : (i + step) * 2], rate, 1, len(voice[i * 2 : (i + step) * 2]) // 2)
        for i in range(0, len(voice) // 2, step)
    ]
    before = await _rates(frames)
    speaking_rate.estimate_in_one_call()
    assert SpeakingRateStream._spectral_flux is not livekit_flux
    after = await asyncio.wait_for(_rates(frames), 10)
    assert len(before) >= 5
    assert any(rate > 0 for rate in before)
    assert after == pytest.approx(before, rel=1e-12)
