"""The offline models' pools record how long each job waited for a thread, and admission reads it."""

from __future__ import annotations

import threading

import pytest

from tests.clock import VirtualClock
from voicebot.providers.pools import MeasuredPool, QueueWaits


def test_a_started_job_counts_its_wait_within_the_window_only() -> None:
    clock = VirtualClock(now=100.0)
    waits = QueueWaits(clock)
    ticket = waits.queued()
    clock.advance(0.3)
    waits.started(ticket)

    assert waits.recent_ms(10) == pytest.approx(300)
    clock.advance(11)
    assert waits.recent_ms(10) == 0


def test_the_wait_is_the_90th_percentile_of_the_window() -> None:
    clock = VirtualClock(now=100.0)
    waits = QueueWaits(clock)
    for wait_s in [0.01] * 9 + [1.0] * 1:
        ticket = waits.queued()
        clock.advance(wait_s)
        waits.started(ticket)

    assert waits.recent_ms(60) == pytest.approx(1000)  # one wait in ten is the 90th percentile
    ticket = waits.queued()
    clock.advance(0.01)
    waits.started(ticket)
    assert waits.recent_ms(60) == pytest.approx(10)  # one in eleven is past it


def test_a_job_still_queued_counts_what_it_has_waited_so_far() -> None:
    """A pool whose threads are all stuck starts nothing, and must not read as idle."""
    clock = VirtualClock(now=100.0)
    waits = QueueWaits(clock)
    ticket = waits.queued()
    clock.advance(2.0)

    assert waits.recent_ms(10) == pytest.approx(2000)
    waits.forget(ticket)
    assert waits.recent_ms(10) == 0


def test_a_pool_records_the_wait_of_a_job_queued_behind_a_busy_thread() -> None:
    waits = QueueWaits()
    pool = MeasuredPool(1, "test-pool", waits)
    release = threading.Event()
    try:
        busy = pool.submit(release.wait, 5)
        queued = pool.submit(lambda: "done")
        assert not queued.done()
        assert waits.recent_ms(10) > 0  # the queued job, before it starts
        release.set()
        assert busy.result(5) is True
        assert queued.result(5) == "done"
    finally:
        release.set()
        pool.shutdown()

    assert waits.recent_ms(10) > 0  # both started within the window, the second after a wait


def test_a_job_cancelled_before_it_started_is_no_longer_waiting() -> None:
    clock = VirtualClock(now=100.0)
    waits = QueueWaits(clock)
    pool = MeasuredPool(1, "test-pool", waits)
    release = threading.Event()
    try:
        busy = pool.submit(release.wait, 5)
        queued = pool.submit(lambda: None)
        assert queued.cancel()
        clock.advance(5.0)
        # Only the running job was ever started; nothing is left queued to read as waiting.
        release.set()
        busy.result(5)
    finally:
        release.set()
        pool.shutdown()

    assert waits.recent_ms(1) == 0
