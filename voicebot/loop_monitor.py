"""Measures how late the event loop runs: the lag every call in this process shares."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

SLOW_CALLBACK_S = 0.1  # the threshold livekit-agents' own worker sets on its loops


@dataclass(frozen=True)
class LoopLag:
    """Recent event-loop lag in milliseconds."""

    last_ms: float
    max_ms: float
    p99_ms: float
    samples: int
    blocked_count: int


class LoopMonitor:
    """Wakes every `interval_s`, records how late it woke, and warns when the loop was blocked."""

    def __init__(
        self, interval_s: float = 0.25, window: int = 240, on_lag: Callable[[float], None] | None = None
    ) -> None:
        self._interval_s = interval_s
        # Hears every measurement, in seconds: the metrics' lag histogram.
        self._on_lag = on_lag
        self._lags_ms: deque[float] = deque(maxlen=window)
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
        """The lag over the recent window."""
        lags = sorted(self._lags_ms)
        if not lags:
            return LoopLag(0.0, 0.0, 0.0, 0, self._blocked)
        p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        return LoopLag(
            round(self._lags_ms[-1], 3), round(lags[-1], 3), round(p99, 3), len(lags), self._blocked
        )

    async def _run(self) -> None:
        while True:
            expected = time.perf_counter() + self._interval_s
            await asyncio.sleep(self._interval_s)
            lag_s = max(0.0, time.perf_counter() - expected)
            self._lags_ms.append(lag_s * 1000)
            if self._on_lag is not None:
                self._on_lag(lag_s)
            if lag_s >= SLOW_CALLBACK_S:
                self._blocked += 1
                log.warning("event_loop_blocked", lag_ms=round(lag_s * 1000, 1))
