"""Several voicebot processes as one: where a room's agent runs, leases and heartbeats, and taking over
the rooms of a process that died. With the in-memory store it is a cluster of one."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import replace
from typing import Protocol

import structlog
from livekit import api

from voicebot.config import AgentDefinition, Settings
from voicebot.errors import (
    LiveKitUnavailable,
    Overloaded,
    SessionLimitReached,
    StateUnavailable,
    UnknownAgent,
)
from voicebot.sessions.admission import Admission, Capacity, always_admit
from voicebot.sessions.session import SessionInfo
from voicebot.store.base import (
    EndReason,
    InvalidRecord,
    Job,
    Placement,
    SessionRecord,
    StartJob,
    StateStore,
    StopJob,
)
from voicebot.store.transcripts import TranscriptLine

log = structlog.get_logger(__name__)


class LocalSessions(Protocol):
    """What the cluster asks of this process's SessionSupervisor."""

    @property
    def process_id(self) -> str:
        """This process."""

    @property
    def limit(self) -> int:
        """How many sessions this process may run at once."""

    def live(self) -> list[SessionInfo]:
        """Every live session of this process."""

    async def ensure_running(
        self,
        agent: AgentDefinition,
        room_name: str,
        *,
        owns_room: bool,
        phone_call: bool = False,
        history: Sequence[TranscriptLine] = (),
    ) -> SessionInfo:
        """The room's session, started now unless one is already starting or running there."""

    async def voice_published(self, room_name: str, within_s: float) -> bool:
        """Wait until the server lists the voice of the room's agent here; False if not within `within_s`."""

    async def stop(self, room_name: str, reason: EndReason = "stopped") -> SessionInfo | None:
        """Stop the room's session once its agent has left; None if there is none."""


class RoomLookup(Protocol):
    """What the cluster asks of LiveKit (LiveKitGateway): who is still in a room."""

    async def room_exists(self, name: str) -> bool:
        """Whether the server has an open room with this name."""

    async def participants(self, room_name: str) -> list[api.ParticipantInfo]:
        """Everyone in the room now."""


def new_process_id() -> str:
    """An id for this process, readable in logs: host, pid and a few random characters."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class Cluster:
    """Places agents on processes with room for them, keeps this process's leases, runs the jobs other
    processes send it, and takes over orphaned rooms that still have someone in them."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        supervisor: LocalSessions,
        livekit: RoomLookup,
        *,
        takes_over: bool,
        admission: Admission | None = None,
    ) -> None:
        self._settings = settings
        self.admission = admission or Admission(settings.sessions, always_admit)
        """This process's measured load, judged; an overloaded process advertises no free capacity."""
        self._store = store
        self._supervisor = supervisor
        self._livekit = livekit
        self._takes_over = takes_over
        self.process_id = supervisor.process_id
        self._lease_ttl_s = settings.redis.lease_ttl_s
        self._beat_s = settings.redis.heartbeat_s
        self._tasks: list[asyncio.Task[None]] = []
        self._state_ok_since: float | None = None
        self._advertised: int | None = None

    async def start(self) -> None:
        """Announce this process and start its background work."""
        with suppress(StateUnavailable):
            await self._beat()
        self._tasks = [
            asyncio.create_task(self._heartbeats(), name="cluster-heartbeats"),
            asyncio.create_task(self._jobs(), name="cluster-jobs"),
        ]
        if self._takes_over:
            self._tasks.append(asyncio.create_task(self._orphans(), name="cluster-takeovers"))

    async def stop(self) -> None:
        """Stop the background work; the sessions themselves are the supervisor's to end."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task

    async def place(self, room_name: str) -> Placement:
        """The process that runs the room's agent; raises SessionLimitReached when every one is full,
        Overloaded when this process is too busy and no other has room."""
        refusal = self.admission.refusal(len(self._supervisor.live()))
        if self._flipped(self._capacity(refusal)):
            # Placement weighs the capacity each process last advertised: say at once that this one has
            # none (or has again), rather than leave it to the next heartbeat.
            await self._beat()
        placement = await self._store.place(room_name, self.process_id, self._lease_ttl_s)
        if placement is None:
            if refusal is not None:
                self.admission.refused += 1
                log.warning("session_refused", reason=refusal, room=room_name, **self.admission.measured())
                raise Overloaded(refusal)
            sessions = self._settings.sessions
            raise SessionLimitReached(sessions.max_concurrent)
        return placement

    def capacity(self) -> Capacity:
        """This process's limit, live sessions, measured load and whether it admits new sessions now."""
        return self.admission.capacity(self.process_id, len(self._supervisor.live()))

    def _capacity(self, refusal: str | None) -> int:
        """What this process advertises: its limit, or nothing while its load refuses new sessions."""
        return 0 if refusal is not None else self._supervisor.limit

    def _flipped(self, capacity: int) -> bool:
        """Whether `capacity` admits where the last heartbeat refused, or the other way round."""
        return self._advertised is not None and (capacity == 0) != (self._advertised == 0)

    async def release(self, room_name: str, process_id: str) -> None:
        """Give back a placement that was not used."""
        with suppress(StateUnavailable):
            await self._store.release(room_name, process_id)

    async def run_agent(
        self,
        agent: AgentDefinition,
        room_name: str,
        placement: Placement,
        *,
        owns_room: bool,
        phone_call: bool,
        voice_within_s: float = 0.0,
    ) -> SessionRecord:
        """Start the agent where it was placed: here, or by a job for the process that holds the lease.

        Here, with `voice_within_s`, it returns once the agent's voice is published (or that long has passed).
        """
        if placement.process_id == self.process_id:
            info = await self._supervisor.ensure_running(
                agent, room_name, owns_room=owns_room, phone_call=phone_call
            )
            if voice_within_s > 0:
                await self._supervisor.voice_published(room_name, voice_within_s)
            return info.record()
        job = StartJob(room_name=room_name, agent_id=agent.id, owns_room=owns_room, phone_call=phone_call)
        # Recorded before the job is sent: should that process die before it runs the job, the room is
        # an orphan like any other and another process takes it over.
        starting = SessionRecord(
            room_name=room_name, agent_id=agent.id, process_id=placement.process_id, started_at=time.time()
        )
        await self._store.save_session(starting)
        await self._store.push_job(placement.process_id, job)
        log.info("agent_sent_to_process", room=room_name, agent=agent.id, process=placement.process_id)
        return starting

    async def session_of(
        self, room_name: str, agent_id: str, process_id: str, within_s: float = 10
    ) -> SessionRecord:
        """The room's live session once whichever process runs it has recorded it."""
        with suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                while True:
                    session = await self._store.session(room_name)
                    if session is not None and session.live:
                        return session
                    await asyncio.sleep(0.05)
        return SessionRecord(
            room_name=room_name, agent_id=agent_id, process_id=process_id, started_at=time.time()
        )

    async def stop_session(self, room_name: str, reason: EndReason = "stopped") -> SessionRecord | None:
        """Stop a room's session wherever it runs; the ended session, or None if none was live."""
        info = await self._supervisor.stop(room_name, reason)
        if info is not None:
            return info.record()
        owner = await self._store.owner(room_name)
        if owner is None or owner == self.process_id:
            return None
        await self._store.push_job(owner, StopJob(room_name=room_name, reason=reason))
        async with asyncio.timeout(self._settings.sessions.drain_timeout_s + 5):
            while True:
                record = await self._store.session(room_name)
                if record is None or not record.live:
                    return record
                await asyncio.sleep(0.1)

    async def _beat(self) -> None:
        refusal = self.admission.refusal(len(self._supervisor.live()))
        capacity = self._capacity(refusal)
        await self._store.heartbeat(self.process_id, capacity, self._lease_ttl_s)
        if self._flipped(capacity):
            event = "admission_paused" if refusal else "admission_resumed"
            log.warning(event, reason=refusal, **self.admission.measured())
        self._advertised = capacity
        if self._state_ok_since is None:
            self._state_ok_since = time.monotonic()
            log.info("state_reachable", process=self.process_id)
        for info in self._supervisor.live():
            if not await self._store.renew(info.room_name, self.process_id, self._lease_ttl_s):
                # Another process holds the room now: two agents in one room would talk over each other.
                log.warning("lease_lost", room=info.room_name, session=info.session_id)
                await self._supervisor.stop(info.room_name, "lease_lost")

    async def _heartbeats(self) -> None:
        while True:
            try:
                await self._beat()
            except StateUnavailable as exc:
                if self._state_ok_since is not None:
                    log.warning("state_unreachable", reason=str(exc))
                self._state_ok_since = None
            await asyncio.sleep(self._beat_s)

    async def _jobs(self) -> None:
        while True:
            try:
                job = await self._store.pop_job(self.process_id, 1.0)
            except StateUnavailable:
                await asyncio.sleep(self._beat_s)
                continue
            except InvalidRecord as exc:
                # Sent by code that writes jobs differently (another version): refused, never guessed at.
                log.error("job_rejected", error=str(exc))
                continue
            if job is not None:
                await self.run_job(job)

    async def run_job(self, job: Job) -> None:
        """Carry out a job another process sent; a start that fails is recorded as an ended session."""
        if isinstance(job, StopJob):
            await self._supervisor.stop(job.room_name, job.reason)
            return
        try:
            agent = self._settings.agent(job.agent_id)
            if agent is None:
                raise UnknownAgent(job.agent_id)
            await self._supervisor.ensure_running(
                agent, job.room_name, owns_room=job.owns_room, phone_call=job.phone_call
            )
        except Exception as exc:
            log.error("job_failed", job=job.to_json(), error=str(exc))
            await self.release(job.room_name, self.process_id)
            now = time.time()
            failed = SessionRecord(
                room_name=job.room_name,
                agent_id=job.agent_id,
                process_id=self.process_id,
                state="ended",
                started_at=now,
                ended_at=now,
                end_reason="failed",
                error=str(exc),
            )
            with suppress(StateUnavailable):
                await self._store.end_session(failed, self._settings.sessions.transcript_retention_s)

    async def _orphans(self) -> None:
        while True:
            await asyncio.sleep(self._beat_s)
            # Right after Redis comes back every lease may have lapsed; owners get a lease's time to renew.
            settled = self._state_ok_since is not None and (
                time.monotonic() - self._state_ok_since > self._lease_ttl_s + self._beat_s
            )
            if not settled:
                continue
            try:
                await self.take_over_orphans()
            except (StateUnavailable, LiveKitUnavailable) as exc:
                log.warning("takeover_scan_failed", reason=str(exc))

    async def take_over_orphans(self) -> None:
        """Adopt each live session whose process is dead and whose room nobody leases: carry it on if
        someone is still in the room, else record it as ended (owner_lost)."""
        alive = set(await self._store.live_processes())
        for record in await self._store.live_sessions():
            room_name = record.room_name
            if record.process_id in alive or await self._store.owner(room_name) is not None:
                continue
            if not await self._store.adopt(room_name, self.process_id, self._lease_ttl_s):
                continue
            await self._take_over(record)

    async def _take_over(self, record: SessionRecord) -> None:
        room_name = record.room_name
        bound = log.bind(room=room_name, from_process=record.process_id)
        humans = []
        if await self._livekit.room_exists(room_name):
            participants = await self._livekit.participants(room_name)
            humans = [p for p in participants if p.kind != api.ParticipantInfo.Kind.AGENT]
        agent = self._settings.agent(record.agent_id)
        if not humans or agent is None:
            ended = replace(record, state="ended", end_reason="owner_lost", ended_at=time.time())
            retention = self._settings.sessions.transcript_retention_s
            await self._store.end_session(ended, retention)
            await self._store.close(room_name, retention)
            await self._store.release(room_name, self.process_id)
            bound.info(
                "orphan_closed", reason="nobody left in the room" if agent else "agent no longer defined"
            )
            return
        history = await self._store.lines(room_name) or []
        owns_room = await self._store.room(room_name) is not None
        # The record does not say; the room does: a caller on a phone line is counted as a phone call in
        # the metrics and the session list.
        phone_call = any(p.kind == api.ParticipantInfo.Kind.SIP for p in humans)
        started = time.monotonic()
        try:
            info = await self._supervisor.ensure_running(
                agent, room_name, owns_room=owns_room, phone_call=phone_call, history=history
            )
        except Exception:
            await self._store.release(room_name, self.process_id)
            raise
        bound.info(
            "session_taken_over",
            session=info.session_id,
            lines=len(history),
            start_ms=round((time.monotonic() - started) * 1000, 1),
        )
