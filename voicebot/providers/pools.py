"""The thread pools the offline models run on, and how long their jobs wait for a thread.

Every session shares one pool per model (one model in memory, a bounded number of inferences at once), so
when sessions ask for more inference than the pool's threads give, jobs queue and every call's replies come
late together: a run of nine calls on Moonshine and Piper had Piper's jobs waiting 186 ms on average and
up to 1.1 s, and a quarter of the questions went unanswered within their 7 s, while the event loop's lag
was still under admission's threshold. The wait is what admission reads for the offline pipeline.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import count
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

KEPT_WAITS = 4096
"""Waits remembered, newest first kept: far more than any admission window holds at a few jobs a second."""


class QueueWaits:
    """How long jobs waited for a thread, across pools; written by the pools' threads, read by the loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started: deque[tuple[float, float]] = deque(maxlen=KEPT_WAITS)
        """(when a job started, seconds it waited)"""
        self._queued: dict[int, float] = {}
        """Jobs not started yet: ticket -> when queued."""
        self._tickets = count()

    def queued(self) -> int:
        """Note a job submitted now; returns its ticket for `started`."""
        with self._lock:
            ticket = next(self._tickets)
            self._queued[ticket] = self._clock()
            return ticket

    def started(self, ticket: int) -> None:
        """The job of `ticket` got a thread."""
        now = self._clock()
        with self._lock:
            queued_at = self._queued.pop(ticket, now)
            self._started.append((now, now - queued_at))

    def forget(self, ticket: int) -> None:
        """The job of `ticket` will never start (its pool refused or cancelled it)."""
        with self._lock:
            self._queued.pop(ticket, None)

    def recent_ms(self, window_s: float, percentile: float = 90.0) -> float:
        """The `percentile` of the waits of jobs started within `window_s`, or the wait so far of the
        longest-queued job if that is longer (a pool that is stuck starts nothing); 0 with no jobs."""
        now = self._clock()
        with self._lock:
            waits = sorted(wait for at, wait in self._started if at >= now - window_s)
            oldest = min(self._queued.values(), default=now)
        recent = waits[min(len(waits) - 1, int(len(waits) * percentile / 100))] if waits else 0.0
        return max(recent, now - oldest) * 1000


MODEL_WAITS = QueueWaits()
"""The waits of every offline model's pool in this process."""


class MeasuredPool(ThreadPoolExecutor):
    """A thread pool whose jobs' waits for a thread are recorded in `waits`."""

    def __init__(self, max_workers: int, thread_name_prefix: str, waits: QueueWaits = MODEL_WAITS) -> None:
        super().__init__(max_workers, thread_name_prefix=thread_name_prefix)
        self.waits = waits

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        ticket = self.waits.queued()

        def timed() -> T:
            self.waits.started(ticket)
            return fn(*args, **kwargs)

        try:
            future = super().submit(timed)
        except BaseException:
            self.waits.forget(ticket)
            raise
        # A job cancelled before it started never reaches `timed`.
        future.add_done_callback(lambda done: self.waits.forget(ticket) if done.cancelled() else None)
        return future
