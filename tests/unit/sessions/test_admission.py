"""Admission by measured load: the decision, the capacity report, placement around an overloaded process."""

from __future__ import annotations

import pytest

from tests.clock import VirtualClock
from tests.unit.sessions.test_cluster import FAQ, HERE, LEASE_S, SETTINGS, FakeLiveKit, FakeSessions
from voicebot.config import SessionSettings, default_max_concurrent
from voicebot.errors import Overloaded, SessionLimitReached
from voicebot.loop_monitor import LoopLoad
from voicebot.sessions.admission import Admission, overload
from voicebot.sessions.cluster import Cluster
from voicebot.store.memory import InMemoryStore

LIMITS = SessionSettings(max_concurrent=4, admission_max_loop_lag_ms=50, admission_max_cpu=0.8)


@pytest.mark.parametrize(
    ("lag_ms", "cpu", "refusal"),
    [
        (0.0, 0.0, None),
        (50.0, 0.8, None),  # at the thresholds is still admitted
        (50.1, 0.0, "loop_lag"),
        (0.0, 0.81, "cpu"),
        (300.0, 0.95, "loop_lag"),
    ],
)
def test_a_new_session_is_refused_when_the_loop_is_late_or_busy(
    lag_ms: float, cpu: float, refusal: str | None
) -> None:
    assert overload(LoopLoad(lag_ms, cpu, 40), LIMITS) == refusal


def test_a_new_session_is_refused_while_the_offline_models_jobs_wait_for_a_thread() -> None:
    settings = SessionSettings(admission_max_model_wait_ms=200)
    idle = LoopLoad(0.0, 0.0, 40)

    assert overload(idle, settings, model_wait_ms=200.0) is None
    assert overload(idle, settings, model_wait_ms=201.0) == "model_wait"
    # The loop's own measurements are named first: they are the ones every session shares.
    assert overload(LoopLoad(60.0, 0.0, 40), settings, model_wait_ms=900.0) == "loop_lag"


@pytest.mark.parametrize(
    ("machine_cpu", "live", "refusal"),
    [
        (0.85, 0, None),
        (0.95, 0, "machine_cpu"),
        (0.8, 8, None),  # 0.8 now, 0.9 with a ninth session like the eight: at the threshold
        (0.8, 7, "machine_cpu"),  # an eighth session like the seven would take it to 0.91
        (0.5, 1, "machine_cpu"),  # one session using half the machine leaves no room for a second
    ],
)
def test_a_new_session_is_refused_when_the_machine_would_be_too_busy_with_it(
    machine_cpu: float, live: int, refusal: str | None
) -> None:
    settings = SessionSettings(admission_max_machine_cpu=0.9)

    assert overload(LoopLoad(0.0, 0.0, 40, machine_cpu), settings, live=live) == refusal


def test_a_threshold_of_zero_turns_its_check_off() -> None:
    off = SessionSettings(
        admission_max_loop_lag_ms=0,
        admission_max_cpu=0,
        admission_max_machine_cpu=0,
        admission_max_model_wait_ms=0,
    )

    assert overload(LoopLoad(10_000.0, 1.0, 40, 1.0), off, model_wait_ms=10_000.0, live=10) is None


def no_model_wait(_window_s: float) -> float:
    """The offline models' pools are process-wide; other tests' jobs must not count here."""
    return 0.0


class Measured:
    """A load the test sets, and the windows it was asked for."""

    def __init__(self) -> None:
        self.load = LoopLoad(0.0, 0.0, 0)
        self.windows: list[float] = []

    def __call__(self, window_s: float) -> LoopLoad:
        self.windows.append(window_s)
        return self.load


def test_the_capacity_report_says_whether_and_why_not_admitting() -> None:
    measured = Measured()
    admission = Admission(LIMITS, measured, no_model_wait)

    idle = admission.capacity("p1", live=1)
    measured.load = LoopLoad(120.0, 0.4, 40)
    late = admission.capacity("p1", live=1)
    measured.load = LoopLoad(0.0, 0.0, 40)
    full = admission.capacity("p1", live=4)

    assert (idle.admitting, idle.refusing_because, idle.limit, idle.live) == (True, None, 4, 1)
    assert (late.admitting, late.refusing_because, late.loop_lag_ms) == (False, "loop_lag", 120.0)
    assert (full.admitting, full.refusing_because) == (False, "limit")
    assert set(measured.windows) == {LIMITS.admission_window_s}


def test_the_capacity_report_shows_the_models_wait_and_refuses_for_it() -> None:
    waits: list[float] = []

    def model_wait_ms(window_s: float) -> float:
        waits.append(window_s)
        return 450.0

    admission = Admission(LIMITS, Measured(), model_wait_ms)
    report = admission.capacity("p1", live=1)

    assert (report.admitting, report.refusing_because) == (False, "model_wait")
    assert (report.model_wait_ms, report.max_model_wait_ms) == (450.0, LIMITS.admission_max_model_wait_ms)
    assert waits == [LIMITS.admission_window_s]


def test_max_concurrent_defaults_to_six_a_core() -> None:
    assert default_max_concurrent(2) == 12
    assert default_max_concurrent(0) == 6


def cluster_with(store: InMemoryStore, measured: Measured, limit: int = 2) -> Cluster:
    sessions = FakeSessions(limit=limit)
    admission = Admission(SETTINGS.sessions, measured, no_model_wait)
    return Cluster(SETTINGS, store, sessions, FakeLiveKit(), takes_over=False, admission=admission)


async def test_an_overloaded_process_alone_refuses_with_at_capacity_and_counts_it() -> None:
    store, measured = InMemoryStore(clock=VirtualClock()), Measured()
    cluster = cluster_with(store, measured)
    await cluster.start()
    try:
        measured.load = LoopLoad(500.0, 0.2, 40)
        with pytest.raises(Overloaded) as refused:
            await cluster.place("room-1")
        measured.load = LoopLoad(1.0, 0.2, 40)
        placement = await cluster.place("room-2")
    finally:
        await cluster.stop()

    assert isinstance(refused.value, SessionLimitReached)
    assert (refused.value.status, refused.value.code) == (503, "at_capacity")
    assert refused.value.reason == "loop_lag"
    assert await store.owner("room-1") is None, "a refused room holds no lease"
    assert placement.process_id == HERE
    assert cluster.capacity().refused_overloaded == 1


async def test_an_overloaded_process_advertises_no_room_so_placement_picks_another() -> None:
    store, measured = InMemoryStore(clock=VirtualClock()), Measured()
    cluster = cluster_with(store, measured)
    await cluster.start()
    try:
        await store.heartbeat("there", 5, 60)
        measured.load = LoopLoad(0.0, 0.99, 40)
        placement = await cluster.place("room-1")
        record = await cluster.run_agent(FAQ, "room-1", placement, owns_room=True, phone_call=False)
        # Nor does it adopt an orphan while it is overloaded: a takeover is a new session here too.
        adopted = await store.adopt("room-2", HERE, LEASE_S)
    finally:
        await cluster.stop()

    assert placement.process_id == "there"
    assert record.state == "starting"
    assert adopted is False
    assert cluster.capacity().refused_overloaded == 0, "sent elsewhere is not refused"


async def test_the_count_limit_still_refuses_with_the_limit_when_the_load_is_fine() -> None:
    store, measured = InMemoryStore(clock=VirtualClock()), Measured()
    cluster = cluster_with(store, measured, limit=1)
    await cluster.start()
    try:
        await cluster.place("room-1")
        with pytest.raises(SessionLimitReached) as refused:
            await cluster.place("room-2")
    finally:
        await cluster.stop()

    assert not isinstance(refused.value, Overloaded)
