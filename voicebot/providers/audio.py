"""The audio conversion the offline recognisers share: a room's frames to 16 kHz mono PCM."""

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
