"""A blocked event loop is noticed, measured and logged."""

from __future__ import annotations

import asyncio
import time

import structlog

from voicebot.loop_monitor import SLOW_CALLBACK_S, LoopMonitor


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
