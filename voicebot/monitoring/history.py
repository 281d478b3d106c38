"""The last hour of this process's sessions, in memory and bounded, for the operator page.

`SessionHistory` hears sessions as a `SessionObserver` and keeps first-word and turn latencies with their
times, the live-session count at each start and end, and the last ended sessions. `snapshot()` gives the
hour as per-minute buckets aligned to the wall clock, the newest (still filling) last.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypedDict

from voicebot.monitoring.events import (
    ProviderError,
    ProviderUsage,
    SessionEnd,
    SessionLabels,
    TurnTiming,
)
from voicebot.store.base import EndReason

Clock = Callable[[], float]
"""Wall-clock seconds (Unix time), as time.time gives them; tests pass a clock they move."""

BUCKET_S = 60
BUCKETS = 60
"""An hour of minutes."""
MAX_SAMPLES = 20_000
"""Per series: past it the oldest samples go first, so a flood of turns cannot grow memory."""
MAX_ENDED = 50


@dataclass(frozen=True)
class Sample:
    """One measurement at a moment."""

    at: float
    value: float


class LatencyStats(TypedDict):
    """Seconds: how many samples, and their nearest-rank median and 95th percentile (None when none)."""

    count: int
    p50: float | None
    p95: float | None


class MinuteBucket(TypedDict):
    """One minute of the hour."""

    start: float
    """Unix time of the minute's first second."""
    first_word: LatencyStats
    """From asking for a session to its greeting's first audio frame."""
    turn: LatencyStats
    """From the end of the caller's speech to the reply's first audio (livekit-agents' e2e_latency)."""
    live_sessions: int
    """The most sessions live at once during the minute."""


class EndedSession(TypedDict):
    """A session this process ran, once it had ended."""

    session_id: str
    room_name: str
    agent_id: str
    phone_call: bool
    end_reason: EndReason
    ended_at: float
    """Unix time."""
    duration_s: float
    error: str | None
    """What failed, for end reason `failed`."""


class HourStats(TypedDict):
    """The whole hour's latencies."""

    first_word: LatencyStats
    turn: LatencyStats


class HistorySnapshot(TypedDict):
    """The last hour as GET /api/ops/history returns it."""

    now: float
    bucket_s: int
    buckets: list[MinuteBucket]
    """Oldest first; the last is the minute now under way."""
    hour: HourStats
    live_sessions: int
    """Sessions live in this process now."""
    ended: list[EndedSession]
    """The last ended sessions, newest first."""


def percentile(sorted_values: Sequence[float], percent: int) -> float:
    """Nearest rank: the smallest value with at least `percent`% of the values at or below it."""
    # In integers, so 95% of 20 is rank 19 exactly, not one more through a float's rounding.
    rank = max(1, -(-percent * len(sorted_values) // 100))
    return sorted_values[rank - 1]


def latency_stats(values: Iterable[float]) -> LatencyStats:
    """Count, p50 and p95 of some latencies."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "p50": None, "p95": None}
    return {"count": len(ordered), "p50": percentile(ordered, 50), "p95": percentile(ordered, 95)}


class SessionHistory:
    """A `SessionObserver` that remembers the last hour; every call is cheap and never blocks the loop."""

    def __init__(
        self,
        *,
        clock: Clock = time.time,
        max_samples: int = MAX_SAMPLES,
        max_ended: int = MAX_ENDED,
    ) -> None:
        self._clock = clock
        self._first_words: deque[Sample] = deque(maxlen=max_samples)
        self._turns: deque[Sample] = deque(maxlen=max_samples)
        self._live: set[str] = set()
        self._live_counts: deque[Sample] = deque(maxlen=max_samples)
        # The count in effect when the window opens: the last one that fell out of it.
        self._live_before = 0
        self._ended: deque[EndedSession] = deque(maxlen=max_ended)

    # The SessionObserver protocol: only what the history keeps does anything.

    def session_started(self, session: SessionLabels) -> None:
        self._live.add(session.session_id)
        self._count_live()

    def agent_joined(self, session: SessionLabels, seconds: float) -> None:
        pass

    def first_word(self, session: SessionLabels, seconds: float) -> None:
        self._first_words.append(Sample(self._clock(), seconds))

    def turn_measured(self, session: SessionLabels, timing: TurnTiming) -> None:
        if timing.e2e_s is not None:
            self._turns.append(Sample(self._clock(), timing.e2e_s))

    def usage(self, session: SessionLabels, usage: ProviderUsage) -> None:
        pass

    def provider_failed(self, session: SessionLabels, error: ProviderError) -> None:
        pass

    def dtmf_received(self, session: SessionLabels) -> None:
        pass

    def session_ended(self, session: SessionLabels, end: SessionEnd) -> None:
        self._live.discard(session.session_id)
        self._count_live()
        self._ended.append(
            {
                "session_id": session.session_id,
                "room_name": session.room_name,
                "agent_id": session.agent_id,
                "phone_call": session.phone_call,
                "end_reason": end.reason,
                "ended_at": self._clock(),
                "duration_s": end.duration_s,
                "error": end.error,
            }
        )

    def _count_live(self) -> None:
        self._live_counts.append(Sample(self._clock(), len(self._live)))

    # Reading it back.

    def window_start(self, now: float) -> float:
        """Where the hour's first minute begins: the buckets are whole wall-clock minutes."""
        return (now // BUCKET_S) * BUCKET_S - (BUCKETS - 1) * BUCKET_S

    def _forget_before(self, start: float) -> None:
        for series in (self._first_words, self._turns):
            while series and series[0].at < start:
                series.popleft()
        while self._live_counts and self._live_counts[0].at < start:
            self._live_before = int(self._live_counts.popleft().value)

    def snapshot(self) -> HistorySnapshot:
        """The last hour in per-minute buckets, and the last ended sessions."""
        now = self._clock()
        start = self.window_start(now)
        self._forget_before(start)
        first_words: list[list[float]] = [[] for _ in range(BUCKETS)]
        turns: list[list[float]] = [[] for _ in range(BUCKETS)]
        for series, buckets in ((self._first_words, first_words), (self._turns, turns)):
            for sample in series:
                buckets[self._index(sample.at, start)].append(sample.value)
        live = [0] * BUCKETS
        carried = self._live_before
        samples = iter(self._live_counts)
        pending = next(samples, None)
        for index in range(BUCKETS):
            # A minute holds the count carried into it and every count reached during it.
            most = carried
            while pending is not None and self._index(pending.at, start) <= index:
                carried = int(pending.value)
                most = max(most, carried)
                pending = next(samples, None)
            live[index] = most
        return {
            "now": now,
            "bucket_s": BUCKET_S,
            "buckets": [
                {
                    "start": start + index * BUCKET_S,
                    "first_word": latency_stats(first_words[index]),
                    "turn": latency_stats(turns[index]),
                    "live_sessions": live[index],
                }
                for index in range(BUCKETS)
            ],
            "hour": {
                "first_word": latency_stats(s.value for s in self._first_words),
                "turn": latency_stats(s.value for s in self._turns),
            },
            "live_sessions": len(self._live),
            "ended": [ended.copy() for ended in reversed(self._ended)],
        }

    @staticmethod
    def _index(at: float, start: float) -> int:
        # A sample stamped after `now` (a clock stepped back) counts in the newest minute.
        return min(BUCKETS - 1, int((at - start) // BUCKET_S))
