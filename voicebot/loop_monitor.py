"""Measures how late the event loop runs, the lag every call in this process shares, and how busy it is."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

SLOW_CALLBACK_S = 0.1  # the threshold livekit-agents' own worker sets on its loops
RECENT_PERCENTILE = 0.9
"""The lag `recent()` reports: late this much on one wake-up in ten, sustained rather than one GC pause."""


@dataclass(frozen=True)
class LoopLag:
    """Recent event-loop lag in milliseconds."""

    last_ms: float
    max_ms: float
    p99_ms: float
    samples: int
    blocked_count: int


@dataclass(frozen=True)
class LoopLoad:
    """How the loop fared over the last few seconds: what admission of new sessions is judged by."""

    lag_ms: float
    """The 90th percentile of the wake-up lag (RECENT_PERCENTILE), in milliseconds."""
    cpu: float
    """CPU time of the loop's own thread per second of wall time: 1.0 is one core, all the GIL lets it use."""
    samples: int
    machine_cpu: float = 0.0
    """The share of the whole machine's CPU time that was busy (every process, every core): 1.0 is all."""


@dataclass(frozen=True)
class _Sample:
    at_s: float
    lag_ms: float
    cpu_s: float
    machine_busy: int = 0
    machine_total: int = 0


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat; (0, 0) without one.

    Read on the loop: /proc/stat is made by the kernel on reading, a few microseconds, never the disk.
    """
    try:
        with open("/proc/stat", "rb") as stat:
            first = stat.readline().split()
    except OSError:
        return 0, 0
    if not first or first[0] != b"cpu":
        return 0, 0
    # user nice system idle iowait irq softirq steal; guest time is already counted in user and nice.
    ticks = [int(field) for field in first[1:9]]
    idle = sum(ticks[3:5])
    return sum(ticks) - idle, sum(ticks)


class LoopMonitor:
    """Wakes every `interval_s`, records how late it woke and the loop thread's CPU time, and warns when the
    loop was blocked."""

    def __init__(
        self, interval_s: float = 0.25, window: int = 240, on_lag: Callable[[float], None] | None = None
    ) -> None:
        self._interval_s = interval_s
        self._samples: deque[_Sample] = deque(maxlen=window)
        # Hears every measurement, in seconds: the metrics' lag histogram.
        self._on_lag = on_lag
        self._blocked = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start measuring on the running loop, and make asyncio report slow callbacks in debug mode."""
        asyncio.get_running_loop().slow_callback_duration = SLOW_CALLBACK_S
        self._task = asyncio.create_task(self._run(), name="loop-monitor")

    async def stop(self) -> None:
        """Stop measuring."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def snapshot(self) -> LoopLag:
        """The lag over the whole window kept (a minute at the default interval)."""
        lags = sorted(sample.lag_ms for sample in self._samples)
        if not lags:
            return LoopLag(0.0, 0.0, 0.0, 0, self._blocked)
        p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        return LoopLag(
            round(self._samples[-1].lag_ms, 3), round(lags[-1], 3), round(p99, 3), len(lags), self._blocked
        )

    def recent(self, window_s: float) -> LoopLoad:
        """Lag and CPU over the samples of the last `window_s` seconds (all zero before there are two)."""
        if not self._samples:
            return LoopLoad(0.0, 0.0, 0)
        newest = self._samples[-1]
        inside = [s for s in self._samples if s.at_s >= newest.at_s - window_s]
        lags = sorted(s.lag_ms for s in inside)
        # Nearest rank: of ten or more samples, one late wake-up alone never sets it.
        lag = lags[math.ceil(len(lags) * RECENT_PERCENTILE) - 1]
        # CPU between the oldest sample inside the window and the newest; one sample spans no time.
        span_s = newest.at_s - inside[0].at_s
        cpu = (newest.cpu_s - inside[0].cpu_s) / span_s if span_s > 0 else 0.0
        total = newest.machine_total - inside[0].machine_total
        machine = (newest.machine_busy - inside[0].machine_busy) / total if total > 0 else 0.0
        return LoopLoad(round(lag, 3), round(cpu, 3), len(inside), round(machine, 3))

    def record(
        self, at_s: float, lag_ms: float, cpu_s: float, machine_ticks: tuple[int, int] = (0, 0)
    ) -> None:
        """Add one wake-up: when (a monotonic clock), how late, the loop thread's CPU time by then, and the
        machine's (busy, total) CPU ticks by then."""
        self._samples.append(_Sample(at_s, lag_ms, cpu_s, *machine_ticks))

    async def _run(self) -> None:
        while True:
            expected = time.perf_counter() + self._interval_s
            await asyncio.sleep(self._interval_s)
            now = time.perf_counter()
            lag_s = max(0.0, now - expected)
            # thread_time(): this task runs on the loop's thread, so it is that thread's CPU alone; the
            # speech models' executor threads and LiveKit's native threads are not the loop's to spend.
            self.record(now, lag_s * 1000, time.thread_time(), machine_cpu_ticks())
            if self._on_lag is not None:
                self._on_lag(lag_s)
            if lag_s >= SLOW_CALLBACK_S:
                self._blocked += 1
                log.warning("event_loop_blocked", lag_ms=round(lag_s * 1000, 1))
