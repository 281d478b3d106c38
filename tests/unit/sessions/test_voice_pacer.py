"""The paced voice keeps the audio source's contract: real time, back-pressure, clearing, playout."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from livekit import rtc

from voicebot.sessions.voice_pacer import CHUNK_S, MAX_LATE_S, QUEUE_S, PacedAudioSource, VoicePacer

RATE = 24000


class ManualPacer(VoicePacer):
    """A pacer whose clock the test turns: no thread, `send_due` called by hand."""

    def __init__(self) -> None:
        self._active: set[PacedAudioSource] = set()
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self.thread_id = None


def frame(seconds: float) -> rtc.AudioFrame:
    samples = int(RATE * seconds)
    return rtc.AudioFrame(np.ones(samples, dtype=np.int16).tobytes(), RATE, 1, samples)


async def test_chunks_leave_one_per_10_ms_of_the_sources_own_schedule() -> None:
    source = PacedAudioSource(RATE, 1, ManualPacer())
    try:
        await source.capture_frame(frame(0.1))
        start = source.next_due
        assert source.queued_duration == pytest.approx(0.1)
        # Due now: the first chunk; 35 ms later, three more (at 10, 20 and 30 ms).
        assert source.send_due(start)
        assert source.queued_duration == pytest.approx(0.09)
        assert source.send_due(start + 0.035)
        assert source.queued_duration == pytest.approx(0.06)
        assert not source.send_due(start + 0.2), "the source should say it has nothing left to send"
        assert source.queued_duration == 0
    finally:
        await source.aclose()


async def test_a_frame_that_is_not_whole_10_ms_is_padded_with_silence() -> None:
    source = PacedAudioSource(RATE, 1, ManualPacer())
    try:
        await source.capture_frame(frame(0.015))
        assert source.queued_duration == pytest.approx(2 * CHUNK_S)
    finally:
        await source.aclose()


async def test_a_stalled_source_restarts_its_schedule_instead_of_bursting() -> None:
    source = PacedAudioSource(RATE, 1, ManualPacer())
    try:
        await source.capture_frame(frame(0.1))
        late = source.next_due + MAX_LATE_S + 0.05
        source.send_due(late)
        # One chunk, not the 25 that a catch-up over the stall would have sent at once.
        assert source.queued_duration == pytest.approx(0.09)
        assert source.next_due == pytest.approx(late + CHUNK_S)
    finally:
        await source.aclose()


async def test_capture_waits_while_more_than_the_queue_is_queued() -> None:
    source = PacedAudioSource(RATE, 1, ManualPacer())
    try:
        capture = asyncio.ensure_future(source.capture_frame(frame(0.5)))
        await asyncio.sleep(0.05)
        assert not capture.done(), "0.5 s queued is more than the queue holds: capture should wait"
        start = source.next_due
        for step in range(30):
            source.send_due(start + step * CHUNK_S)
        assert source.queued_duration == pytest.approx(QUEUE_S)
        await asyncio.wait_for(capture, 1)
    finally:
        await source.aclose()


async def test_clearing_drops_the_queue_and_releases_whoever_waits() -> None:
    source = PacedAudioSource(RATE, 1, ManualPacer())
    try:
        capture = asyncio.ensure_future(source.capture_frame(frame(1.0)))
        await asyncio.sleep(0)
        playout = asyncio.ensure_future(source.wait_for_playout())
        await asyncio.sleep(0.05)
        assert not playout.done()
        source.clear_queue()
        await asyncio.wait_for(asyncio.gather(capture, playout), 1)
        assert source.queued_duration == 0
    finally:
        await source.aclose()


async def test_the_shared_pacer_plays_a_frame_out_in_real_time_and_goes_quiet() -> None:
    source = PacedAudioSource(RATE, 1)
    try:
        await source.capture_frame(frame(0.3))
        assert 0 < source.queued_duration <= QUEUE_S
        await asyncio.wait_for(source.wait_for_playout(), 5)
        assert source.queued_duration == 0
        # And again after the pause: a source that went quiet is paced again when audio comes.
        await source.capture_frame(frame(0.05))
        await asyncio.wait_for(source.wait_for_playout(), 5)
        assert source.queued_duration == 0
    finally:
        await source.aclose()
