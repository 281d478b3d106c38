"""The operator page's hour: per-minute percentiles, the window on a virtual clock, and its bounds."""

from __future__ import annotations

from itertools import pairwise

from tests.clock import VirtualClock
from voicebot.monitoring.events import SessionEnd, SessionLabels, TurnTiming
from voicebot.monitoring.history import BUCKET_S, BUCKETS, SessionHistory, latency_stats

# A minute's first second, so a test knows which bucket each sample lands in.
T0 = 1_800_000_000.0


def labels(n: int, agent_id: str = "agent-123") -> SessionLabels:
    return SessionLabels(
        f"SS_{n}", f"voicebot_{agent_id}_{n:08x}", agent_id, phone_call=False, requested_at=0.0
    )


def test_percentiles_are_nearest_rank() -> None:
    assert latency_stats([]) == {"count": 0, "p50": None, "p95": None}
    assert latency_stats([0.3]) == {"count": 1, "p50": 0.3, "p95": 0.3}
    # 20 values 1..20: the median is the 10th, the 95th percentile the 19th, never the 20th.
    assert latency_stats(float(v) for v in range(20, 0, -1)) == {"count": 20, "p50": 10.0, "p95": 19.0}
    assert latency_stats([1.0, 2.0, 3.0]) == {"count": 3, "p50": 2.0, "p95": 3.0}


def test_each_minute_has_its_own_count_and_percentiles() -> None:
    clock = VirtualClock(T0)
    history = SessionHistory(clock=clock)
    session = labels(1)
    for seconds in (0.2, 0.4, 0.3):
        history.first_word(session, seconds)
    for e2e in (0.5, 0.7):
        history.turn_measured(session, TurnTiming(e2e_s=e2e))
    history.turn_measured(session, TurnTiming(llm_ttft_s=0.01))  # no e2e: not a turn latency
    clock.advance(BUCKET_S)
    history.turn_measured(session, TurnTiming(e2e_s=0.9))

    snapshot = history.snapshot()

    buckets = snapshot["buckets"]
    assert len(buckets) == BUCKETS
    assert [b["start"] for b in buckets[-2:]] == [T0, T0 + BUCKET_S]
    assert all(b["start"] - a["start"] == BUCKET_S for a, b in pairwise(buckets))
    previous, current = buckets[-2], buckets[-1]
    assert previous["first_word"] == {"count": 3, "p50": 0.3, "p95": 0.4}
    assert previous["turn"] == {"count": 2, "p50": 0.5, "p95": 0.7}
    assert current["first_word"] == {"count": 0, "p50": None, "p95": None}
    assert current["turn"] == {"count": 1, "p50": 0.9, "p95": 0.9}
    assert snapshot["hour"]["turn"] == {"count": 3, "p50": 0.7, "p95": 0.9}
    assert snapshot["now"] == T0 + BUCKET_S


def test_samples_older_than_the_hour_drop_out() -> None:
    clock = VirtualClock(T0 + 30)
    history = SessionHistory(clock=clock)
    history.first_word(labels(1), 0.25)

    clock.advance((BUCKETS - 1) * BUCKET_S)
    kept = history.snapshot()
    clock.advance(BUCKET_S)
    dropped = history.snapshot()

    assert kept["buckets"][0]["start"] == T0
    assert kept["buckets"][0]["first_word"]["count"] == 1
    assert kept["hour"]["first_word"]["count"] == 1
    assert dropped["buckets"][0]["start"] == T0 + BUCKET_S
    assert sum(b["first_word"]["count"] for b in dropped["buckets"]) == 0
    assert dropped["hour"]["first_word"] == {"count": 0, "p50": None, "p95": None}


def test_live_sessions_per_minute_are_the_most_at_once_carried_across_quiet_minutes() -> None:
    clock = VirtualClock(T0)
    history = SessionHistory(clock=clock)
    history.session_started(labels(1))
    history.session_started(labels(2))
    clock.advance(10)
    history.session_ended(labels(2), SessionEnd("participants_left", 10.0))
    clock.advance(3 * BUCKET_S)

    snapshot = history.snapshot()

    assert [b["live_sessions"] for b in snapshot["buckets"][-4:]] == [2, 1, 1, 1]
    assert snapshot["live_sessions"] == 1
    assert snapshot["buckets"][0]["live_sessions"] == 0

    # Long after the last start or end, the count still in effect fills the whole hour.
    clock.advance(2 * BUCKETS * BUCKET_S)
    assert {b["live_sessions"] for b in history.snapshot()["buckets"]} == {1}
    history.session_ended(labels(1), SessionEnd("stopped", 9000.0))
    assert [b["live_sessions"] for b in history.snapshot()["buckets"][-2:]] == [1, 1]
    clock.advance(BUCKET_S)
    assert [b["live_sessions"] for b in history.snapshot()["buckets"][-2:]] == [1, 0]


def test_ended_sessions_are_the_last_n_newest_first_with_their_reason() -> None:
    clock = VirtualClock(T0)
    history = SessionHistory(clock=clock, max_ended=3)
    for n in range(5):
        history.session_started(labels(n))
        clock.advance(1)
        end = (
            SessionEnd("failed", 1.0 + n, error="RuntimeError: boom")
            if n == 4
            else SessionEnd("participants_left", 1.0 + n)
        )
        history.session_ended(labels(n), end)

    ended = history.snapshot()["ended"]

    assert [e["session_id"] for e in ended] == ["SS_4", "SS_3", "SS_2"]
    assert ended[0] == {
        "session_id": "SS_4",
        "room_name": "voicebot_agent-123_00000004",
        "agent_id": "agent-123",
        "phone_call": False,
        "end_reason": "failed",
        "ended_at": T0 + 5,
        "duration_s": 5.0,
        "error": "RuntimeError: boom",
    }
    assert ended[1]["end_reason"] == "participants_left"


def test_the_samples_kept_are_bounded() -> None:
    clock = VirtualClock(T0)
    history = SessionHistory(clock=clock, max_samples=10)
    for n in range(25):
        history.turn_measured(labels(1), TurnTiming(e2e_s=float(n)))

    turns = history.snapshot()["hour"]["turn"]

    # The newest ten: 15..24.
    assert turns == {"count": 10, "p50": 19.0, "p95": 24.0}


def test_the_snapshot_is_a_copy_a_caller_cannot_change_the_history_through() -> None:
    history = SessionHistory(clock=VirtualClock(T0))
    history.session_ended(labels(1), SessionEnd("stopped", 1.0))

    history.snapshot()["ended"][0]["end_reason"] = "failed"

    assert history.snapshot()["ended"][0]["end_reason"] == "stopped"
