"""A blocked event loop is noticed, measured and logged."""

from __future__ import annotations

import asyncio
import time

import pytest
import structlog

from voicebot.loop_monitor import SLOW_CALLBACK_S, LoopLoad, LoopMonitor, machine_cpu_ticks


async def test_a_blocking_call_on_the_loop_is_measured_and_logged() -> None:
    monitor = LoopMonitor(interval_s=0.01)
    monitor.start()
    await asyncio.sleep(0.05)
    assert monitor.snapshot().blocked_count == 0

    with structlog.testing.capture_logs() as logs:
        time.sleep(0.3)  # noqa: ASYNC251 - the blocking call this monitor exists to catch
        await asyncio.sleep(0.05)
    await monitor.stop()

    lag = monitor.snapshot()
    assert lag.blocked_count == 1
    assert lag.max_ms >= 250
    assert lag.samples > 5
    (event,) = [e for e in logs if e["event"] == "event_loop_blocked"]
    assert event["lag_ms"] >= 250


async def test_asyncio_reports_slow_callbacks_at_livekits_threshold() -> None:
    monitor = LoopMonitor()
    monitor.start()
    await monitor.stop()

    assert asyncio.get_running_loop().slow_callback_duration == SLOW_CALLBACK_S == 0.1


def test_recent_load_is_the_lag_percentile_and_loop_cpu_of_the_window_only() -> None:
    monitor = LoopMonitor()
    # An old stretch of a blocked, busy loop, then ten quiet seconds at a quarter of a core.
    for i in range(20):
        monitor.record(at_s=i * 0.25, lag_ms=400.0, cpu_s=i * 0.25)
    start, cpu = 5.0, 5.0
    for i in range(41):
        monitor.record(at_s=start + i * 0.25, lag_ms=2.0 if i % 10 else 30.0, cpu_s=cpu + i * 0.25 * 0.25)

    recent = monitor.recent(10.0)
    whole = monitor.recent(100.0)

    assert recent.samples == 41
    assert recent.lag_ms == 30.0, "one wake-up in ten was late by 30 ms"
    assert recent.cpu == pytest.approx(0.25)
    assert whole.lag_ms == 400.0
    assert monitor.snapshot().max_ms == 400.0


def test_recent_load_without_samples_is_none() -> None:
    assert LoopMonitor().recent(10.0) == LoopLoad(0.0, 0.0, 0)


def test_recent_load_has_the_machines_busy_share_of_the_window() -> None:
    monitor = LoopMonitor()
    # Ticks of every core: 100 a second in all, of which 90 busy at first, then 30 over the window.
    busy = total = 0
    for i in range(80):
        monitor.record(at_s=i * 0.25, lag_ms=1.0, cpu_s=0.0, machine_ticks=(busy, total))
        total += 25
        busy += 22 if i < 40 else 8  # 22.5 and 7.5 a quarter second, in whole ticks near enough

    assert monitor.recent(5.0).machine_cpu == pytest.approx(0.32)
    assert monitor.recent(100.0).machine_cpu == pytest.approx((40 * 22 + 39 * 8) / (79 * 25), abs=1e-3)


def test_the_machines_cpu_ticks_are_read_from_proc_stat() -> None:
    busy, total = machine_cpu_ticks()
    later_busy, later_total = machine_cpu_ticks()

    assert 0 < busy <= total
    assert later_total >= total
    assert later_busy >= busy
