"""Cluster placement, jobs and takeovers on the in-memory store, with virtual time and no network."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import pytest
import structlog
from livekit import api

from tests.clock import VirtualClock
from tests.conftest import eventually
from voicebot.config import AgentDefinition, RedisSettings, Settings
from voicebot.sessions.cluster import Cluster
from voicebot.sessions.session import SessionInfo
from voicebot.store.base import EndReason, Job, RoomRecord, SessionRecord, StartJob, StopJob
from voicebot.store.memory import InMemoryStore
from voicebot.store.transcripts import TranscriptLine

HERE = "here"
LEASE_S = 2.0
FAQ = AgentDefinition(id="faq", name="FAQ")
SETTINGS = Settings(agents=(FAQ,), redis=RedisSettings(lease_ttl_s=LEASE_S, heartbeat_s=0.05))


@dataclass(frozen=True)
class Started:
    room_name: str
    agent_id: str
    owns_room: bool
    history: tuple[TranscriptLine, ...]
    phone_call: bool = False


@dataclass
class FakeSessions:
    """This process's supervisor: remembers what it was asked to start and stop, and runs nothing."""

    process_id: str = HERE
    limit: int = 2
    started: list[Started] = field(default_factory=list)
    stopped: list[tuple[str, EndReason]] = field(default_factory=list)
    running: dict[str, SessionInfo] = field(default_factory=dict)

    def live(self) -> list[SessionInfo]:
        return list(self.running.values())

    async def ensure_running(
        self,
        agent: AgentDefinition,
        room_name: str,
        *,
        owns_room: bool,
        phone_call: bool = False,
        history: Sequence[TranscriptLine] = (),
    ) -> SessionInfo:
        if room_name not in self.running:
            self.started.append(Started(room_name, agent.id, owns_room, tuple(history), phone_call))
            self.running[room_name] = SessionInfo(
                session_id=f"SS_{room_name}",
                room_name=room_name,
                agent_id=agent.id,
                identity=f"agent-{agent.id}",
                started_at=1.0,
                process_id=self.process_id,
                state="listening",
            )
        return self.running[room_name]

    async def voice_published(self, room_name: str, within_s: float) -> bool:
        return room_name in self.running

    async def stop(self, room_name: str, reason: EndReason = "stopped") -> SessionInfo | None:
        info = self.running.pop(room_name, None)
        if info is not None:
            info.state, info.end_reason = "ended", reason
            self.stopped.append((room_name, reason))
        return info


@dataclass
class FakeLiveKit:
    """LiveKit's view of who is in which room."""

    rooms: dict[str, list[api.ParticipantInfo]] = field(default_factory=dict)

    async def room_exists(self, name: str) -> bool:
        return name in self.rooms

    async def participants(self, room_name: str) -> list[api.ParticipantInfo]:
        return list(self.rooms.get(room_name, []))


@dataclass
class RecordingStore(InMemoryStore):
    """The in-memory store, keeping the order of the session writes and jobs sent through it."""

    calls: list[tuple[str, SessionRecord | Job]] = field(default_factory=list)

    async def save_session(self, session: SessionRecord) -> None:
        self.calls.append(("save_session", session))
        await super().save_session(session)

    async def push_job(self, process_id: str, job: Job) -> None:
        self.calls.append((f"push_job:{process_id}", job))
        await super().push_job(process_id, job)


@dataclass
class World:
    clock: VirtualClock
    store: RecordingStore
    sessions: FakeSessions
    livekit: FakeLiveKit
    cluster: Cluster


@pytest.fixture
def world() -> World:
    clock = VirtualClock()
    store = RecordingStore(clock=clock)
    sessions, livekit = FakeSessions(), FakeLiveKit()
    cluster = Cluster(SETTINGS, store, sessions, livekit, takes_over=True)
    return World(clock, store, sessions, livekit, cluster)


def person(identity: str) -> api.ParticipantInfo:
    return api.ParticipantInfo(identity=identity, kind=api.ParticipantInfo.Kind.STANDARD)


def agent(identity: str) -> api.ParticipantInfo:
    return api.ParticipantInfo(identity=identity, kind=api.ParticipantInfo.Kind.AGENT)


async def orphan(world: World, room_name: str) -> SessionRecord:
    """A live session of a process that then dies: its heartbeat and its lease lapse."""
    await world.store.heartbeat("dead", 1, LEASE_S)
    await world.store.heartbeat(HERE, 2, 60)
    await world.store.place(room_name, "dead", LEASE_S)
    record = SessionRecord(
        session_id="SS_old",
        room_name=room_name,
        agent_id="faq",
        process_id="dead",
        state="listening",
        started_at=1.0,
    )
    await world.store.save_session(record)
    world.clock.advance(LEASE_S + 0.1)
    return record


async def test_a_room_placed_here_runs_in_this_process_and_sends_no_job(world: World) -> None:
    await world.store.heartbeat(HERE, 2, 60)
    await world.store.heartbeat("there", 5, 60)

    placement = await world.cluster.place("room-1")
    record = await world.cluster.run_agent(FAQ, "room-1", placement, owns_room=True, phone_call=False)

    assert (placement.process_id, placement.new) == (HERE, True)
    assert world.sessions.started == [Started("room-1", "faq", True, ())]
    assert (record.session_id, record.process_id, record.state) == ("SS_room-1", HERE, "listening")
    assert await world.store.pop_job("there", 0.1) is None


async def test_a_room_placed_on_another_process_is_recorded_as_starting_before_its_job_is_sent(
    world: World,
) -> None:
    await world.store.heartbeat(HERE, 0, 60)
    await world.store.heartbeat("there", 1, 60)

    placement = await world.cluster.place("room-1")
    record = await world.cluster.run_agent(FAQ, "room-1", placement, owns_room=False, phone_call=True)

    job = StartJob(room_name="room-1", agent_id="faq", owns_room=False, phone_call=True)
    assert placement.process_id == "there"
    assert (record.process_id, record.state, record.session_id) == ("there", "starting", "")
    assert world.store.calls == [("save_session", record), ("push_job:there", job)]
    assert await world.store.session("room-1") == record
    assert await world.store.pop_job("there", 0.1) == job
    assert world.sessions.started == []


async def test_an_orphaned_room_with_a_person_in_it_is_taken_over_with_its_history(world: World) -> None:
    await orphan(world, "room-1")
    await world.store.save_room(RoomRecord("room-1", "faq", "dead", 1.0))
    lines = [TranscriptLine("agent", "Hello", 2.0), TranscriptLine("user", "opening hours", 3.0)]
    for line in lines:
        await world.store.append("room-1", line)
    world.livekit.rooms["room-1"] = [agent("agent-old"), person("caller")]

    await world.cluster.take_over_orphans()

    assert world.sessions.started == [Started("room-1", "faq", True, tuple(lines))]
    assert await world.store.owner("room-1") == HERE


async def test_an_orphaned_phone_call_is_taken_over_as_a_phone_call(world: World) -> None:
    """Regression: a taken-over session was always started as a web one, so the call was counted as a web
    session."""
    await orphan(world, "room-1")
    world.livekit.rooms["room-1"] = [
        agent("agent-old"),
        api.ParticipantInfo(identity="sip_caller", kind=api.ParticipantInfo.Kind.SIP),
    ]

    await world.cluster.take_over_orphans()

    assert world.sessions.started == [Started("room-1", "faq", False, (), phone_call=True)]


async def test_an_orphaned_room_with_nobody_left_in_it_is_closed_as_owner_lost(world: World) -> None:
    record = await orphan(world, "room-1")
    world.livekit.rooms["room-1"] = [agent("agent-old")]

    await world.cluster.take_over_orphans()

    ended = await world.store.session("room-1")
    assert ended is not None
    assert (ended.session_id, ended.state, ended.end_reason) == (record.session_id, "ended", "owner_lost")
    assert world.sessions.started == []
    assert await world.store.live_sessions() == []
    assert await world.store.owner("room-1") is None


async def test_a_room_whose_process_still_beats_is_not_taken_over(world: World) -> None:
    await orphan(world, "room-1")
    await world.store.heartbeat("dead", 1, 60)
    world.livekit.rooms["room-1"] = [person("caller")]

    await world.cluster.take_over_orphans()

    assert world.sessions.started == []
    session = await world.store.session("room-1")
    assert session is not None
    assert session.live


async def test_a_start_job_for_an_unknown_agent_is_recorded_as_failed_and_its_lease_released(
    world: World,
) -> None:
    await world.store.heartbeat(HERE, 1, 60)
    await world.store.place("room-1", HERE, LEASE_S)

    await world.cluster.run_job(
        StartJob(room_name="room-1", agent_id="nobody", owns_room=False, phone_call=False)
    )

    ended = await world.store.session("room-1")
    assert ended is not None
    assert (ended.state, ended.end_reason, ended.process_id) == ("ended", "failed", HERE)
    assert "nobody" in (ended.error or "")
    assert await world.store.owner("room-1") is None
    assert world.sessions.started == []


async def test_a_stop_job_with_an_unknown_reason_is_refused_and_the_next_job_still_runs(world: World) -> None:
    for room_name in ("room-1", "room-2"):
        await world.sessions.ensure_running(FAQ, room_name, owns_room=False)
    # As a process running other code might send it: a reason this code has never heard of.
    await world.store.push_job(HERE, StopJob(room_name="room-1", reason=cast(EndReason, "bored")))
    await world.store.push_job(HERE, StopJob(room_name="room-2", reason="call_not_answered"))

    with structlog.testing.capture_logs() as logs:
        await world.cluster.start()
        try:
            await eventually(lambda: bool(world.sessions.stopped), 5, "the second job to run")
        finally:
            await world.cluster.stop()

    assert world.sessions.stopped == [("room-2", "call_not_answered")]
    assert "room-1" in world.sessions.running
    assert [e for e in logs if e["event"] == "job_rejected" and "bored" in e["error"]]
