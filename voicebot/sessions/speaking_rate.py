"""The transcript synchroniser's speaking-rate estimate, computed in one numpy call per window.

livekit-agents paces the agent's captions by how fast it speaks, estimated from the spectral flux of each 1 s
window of its voice, every 100 ms, on the event loop (`transcription/_speaking_rate.py`). Its STFT runs
one FFT per 25 ms frame in a Python loop, 79 of them a window, and its flux another Python loop over them:
with the agent speaking, 5% of a core per session went to it, a fifth of the loop's time at six sessions
(py-spy). The same numbers come from one FFT over all of a window's frames at once. Pacing, events and the
synchroniser are livekit-agents' own; only how the average flux is computed changes.
"""

from __future__ import annotations

import functools

import numpy as np

# The class the synchroniser estimates with (its version pinned by requirements.lock;
# tests/unit/sessions/test_speaking_rate.py checks the two computations agree on it).
from livekit.agents.voice.transcription._speaking_rate import SpeakingRateStream

FRAME_S = 0.025
"""livekit-agents' STFT frame: 25 ms, with 50% overlap."""

Samples = np.ndarray[tuple[int], np.dtype[np.float32]]

LIVEKIT_SPECTRAL_FLUX = SpeakingRateStream._spectral_flux
"""livekit-agents' own method, kept for the tests that compare the two."""


def spectral_flux(audio: Samples, sample_rate: int) -> float:
    """The mean L1 change of the magnitude spectrum between consecutive 25 ms frames of `audio`."""
    frame_length = int(sample_rate * FRAME_S)
    hop_length = frame_length // 2
    frames = (len(audio) - frame_length) // hop_length + 1
    if frames < 2:
        return 0.0
    windows = np.lib.stride_tricks.sliding_window_view(audio, frame_length)[::hop_length][:frames]
    taper, scale = _taper(frame_length)
    magnitudes = np.abs(np.fft.rfft(windows * taper, axis=1) * scale)
    return float(np.mean(np.sum(np.abs(np.diff(magnitudes, axis=0)), axis=1)))


@functools.cache
def _taper(frame_length: int) -> tuple[np.ndarray[tuple[int], np.dtype[np.float64]], float]:
    """The Hann window and its scale for a frame length: the same for every window of a rate (a fifth of
    the flux's time went to building them again)."""
    taper = np.hanning(frame_length)
    taper.flags.writeable = False
    return taper, float(1.0 / np.sqrt(np.sum(taper**2)))


def _stream_spectral_flux(_stream: SpeakingRateStream, audio: Samples, sample_rate: int) -> float:
    return spectral_flux(audio, sample_rate)


def estimate_in_one_call() -> None:
    """Make every speaking-rate stream of this process compute its flux with `spectral_flux`.

    The synchroniser builds its streams inside RoomIO, for each segment the agent speaks, with no way to pass
    another detector in; the method is swapped on the class once, for the whole process.
    """
    SpeakingRateStream._spectral_flux = _stream_spectral_flux  # type: ignore[method-assign,assignment]
