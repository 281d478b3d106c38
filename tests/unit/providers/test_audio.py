"""Speech without its lead-in: cut just before the first sound, never into it, and silence left whole."""

from __future__ import annotations

import numpy as np

from voicebot.providers.audio import LEAD_IN_FLOOR, LEAD_IN_KEPT_S, without_lead_in

RATE = 22050
KEPT = int(RATE * LEAD_IN_KEPT_S)


def pcm(*parts: np.ndarray) -> bytes:
    return np.concatenate(parts).astype(np.int16).tobytes()


def samples(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.int16)


def test_the_lead_in_goes_and_a_moment_before_the_first_sound_stays() -> None:
    dither = np.random.default_rng(1).integers(-6, 7, 1000)
    sound = (3000 * np.sin(np.arange(2000) / 5)).astype(np.int16)
    sound[0] = LEAD_IN_FLOOR + 1

    out = samples(without_lead_in(pcm(dither, sound), RATE))

    assert len(out) == KEPT + len(sound)
    assert np.array_equal(out[KEPT:], sound)


def test_sound_from_the_first_sample_is_left_as_it_is() -> None:
    sound = np.full(500, 2000)

    assert without_lead_in(pcm(sound), RATE) == pcm(sound)


def test_all_silence_is_kept_whole() -> None:
    # A text with nothing to say is spoken as silence, and livekit-agents counts no audio as a failure.
    quiet = np.full(2205, LEAD_IN_FLOOR)

    assert without_lead_in(pcm(quiet), RATE) == pcm(quiet)


def test_a_negative_first_sound_counts() -> None:
    out = samples(without_lead_in(pcm(np.zeros(800), np.array([-20000, 5, 5])), RATE))

    assert out[KEPT] == -20000
