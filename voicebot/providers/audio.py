"""Audio the offline providers share: a room's frames to 16 kHz mono PCM, and speech without its lead-in."""

from __future__ import annotations

import numpy as np
from livekit import rtc

SAMPLE_RATE = 16000  # the rate pocketsphinx's English acoustic model and Moonshine were trained on


def to_16k_mono(frame: rtc.AudioFrame) -> bytes:
    """16 kHz mono int16 PCM; resampling is CPU work, so callers run this off the event loop."""
    samples = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels > 1:
        samples = samples.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
    if frame.sample_rate == SAMPLE_RATE:
        return samples.tobytes()
    mono = rtc.AudioFrame(samples.tobytes(), frame.sample_rate, 1, len(samples))
    resampler = rtc.AudioResampler(frame.sample_rate, SAMPLE_RATE, num_channels=1)
    out = [*resampler.push(mono), *resampler.flush()]
    return b"".join(bytes(f.data) for f in out)


# Quieter than any speech onset the offline voices make (their breaths and "h"s start above ~130), louder
# than the dither in their silence (<= 6).
LEAD_IN_FLOOR = 64
LEAD_IN_KEPT_S = 0.005


def first_sound(samples: np.ndarray) -> int | None:
    """The index of the first int16 sample louder than the lead-in floor; None when there is none."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > LEAD_IN_FLOOR)
    return int(loud[0]) if len(loud) else None


def without_lead_in(pcm: bytes, sample_rate: int) -> bytes:
    """Mono int16 `pcm` from just before its first sound: a voice's lead-in silence only delays the first
    word (Piper starts 25-65 ms late). All of it when nothing in it is louder than the floor."""
    samples = np.frombuffer(pcm, dtype=np.int16)
    start = first_sound(samples)
    if start is None:
        return pcm
    return samples[max(0, start - int(sample_rate * LEAD_IN_KEPT_S)) :].tobytes()
