"""Owns every agent session task: one per room, a hard limit, isolation of failures, and draining."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from opentelemetry import context as otel_context

from voicebot.agents.pipeline import PipelineFactory
from voicebot.agents.spoken_lines import SpokenLines
from voicebot.config import AgentDefinition, SessionSettings
from voicebot.errors import SessionLimitReached
from voicebot.livekit import LiveKitGateway
from voicebot.monitoring.events import Observers
from voicebot.monitoring.tracing import Tracing
from voicebot.sessions.agent_voice import SAMPLE_RATE as VOICE_SAMPLE_RATE
from voicebot.sessions.session import RoomSession, SessionInfo
from voicebot.store.base import EndReason, StateStore
from voicebot.store.transcripts import TranscriptLine

log = structlog.get_logger(__name__)


@dataclass
class Slot:
    """A place under the session limit, held for one room until its session ends or it is released."""

    room_name: str
    released: bool = False
    session: asyncio.Future[RoomSession] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    """Resolves when the session starts, so a second caller for the same room gets the same one."""


class SessionSupervisor:
    """Starts, lists and stops agent sessions; the limit is exact because slots are taken synchronously."""

    def __init__(
        self,
        settings: SessionSettings,
        *,
        livekit: LiveKitGateway,
        pipelines: PipelineFactory,
        state: StateStore,
        process_id: str = "",
        observers: Observers | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._settings = settings
        self.observers = observers or Observers()
        """Everything that hears how sessions go (metrics, traces, the operator page)."""
        self.lines = SpokenLines(sample_rate=VOICE_SAMPLE_RATE)
        """Each agent's fixed lines' audio (greeting, rules' replies), shared by its sessions."""
        self.tracing = tracing or Tracing.off()
        self._livekit = livekit
        self._pipelines = pipelines
        self.state = state
        self.process_id = process_id
        self._slots: dict[str, Slot] = {}
        self._live: dict[str, tuple[RoomSession, asyncio.Task[SessionInfo]]] = {}
        self.counters: Counter[str] = Counter()
        self._closing = False

    @property
    def limit(self) -> int:
        """How many sessions may run at once."""
        return self._settings.max_concurrent

    def session(self, room_name: str) -> RoomSession | None:
        """The live session in a room, if any."""
        live = self._live.get(room_name)
        return live[0] if live is not None else None

    def live(self) -> list[SessionInfo]:
        """Every live session, oldest first."""
        return sorted((session.info for session, _ in self._live.values()), key=lambda info: info.started_at)

    def claim(self, room_name: str) -> tuple[Slot, bool]:
        """The room's slot and whether it is new; a new one counts against the limit (SessionLimitReached).

        Nothing here awaits, so two requests can never both take the last place.
        """
        existing = self._slots.get(room_name)
        if existing is not None:
            return existing, False
        if self._closing or len(self._slots) >= self._settings.max_concurrent:
            self.counters["refused"] += 1
            raise SessionLimitReached(self._settings.max_concurrent)
        slot = Slot(room_name)
        self._slots[room_name] = slot
        return slot, True

    def release(self, slot: Slot, error: BaseException | None = None) -> None:
        """Give back a slot; callers waiting for its session get `error` if it never started."""
        if not slot.released:
            slot.released = True
            if self._slots.get(slot.room_name) is slot:
                del self._slots[slot.room_name]
            if not slot.session.done():
                slot.session.set_exception(error or RuntimeError("the session did not start"))
                # The claimant saw the error already; this stops asyncio warning it was never retrieved.
                slot.session.exception()

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
        slot, new = self.claim(room_name)
        if not new:
            session = await asyncio.shield(slot.session)
            return session.info
        session = await self.start(agent, slot, owns_room=owns_room, phone_call=phone_call, history=history)
        return session.info

    async def voice_published(self, room_name: str, within_s: float) -> bool:
        """Wait until the server lists the room's agent's voice; False if it does not within `within_s`,
        or the room has no session here."""
        session = self.session(room_name)
        if session is None:
            return False
        try:
            async with asyncio.timeout(within_s):
                return await session.voice_listed()
        except TimeoutError:
            return False

    async def start(
        self,
        agent: AgentDefinition,
        slot: Slot,
        *,
        owns_room: bool,
        phone_call: bool = False,
        history: Sequence[TranscriptLine] = (),
    ) -> RoomSession:
        """Start `agent` in the slot's room as a task; the slot is released when the session ends."""
        requested_at = time.monotonic()
        try:
            pipeline = await self._pipelines.build(agent)
        except BaseException as exc:
            self.release(slot, exc)
            raise
        session = RoomSession(
            agent,
            slot.room_name,
            livekit=self._livekit,
            pipeline=pipeline,
            state=self.state,
            owns_room=owns_room,
            phone_call=phone_call,
            history=history,
            process_id=self.process_id,
            retention_s=self._settings.transcript_retention_s,
            max_provider_errors=self._settings.max_provider_errors,
            max_duration_s=self._settings.max_duration_s,
            # Only a room made for a person who may never come (create-room): a phone caller is already
            # there, and a room an agent was sent into is someone else's to close.
            unjoined_timeout_s=self._settings.unjoined_timeout_s if owns_room and not phone_call else None,
            observer=self.observers,
            requested_at=requested_at,
            lines=self.lines,
            tracing=self.tracing,
            # The task below starts in a fresh context, which drops the caller's trace; the session's
            # span carries it on instead (create-room's span becomes its parent).
            trace_parent=otel_context.get_current(),
        )
        # A fresh context: the session outlives the request that started it, so it must not log
        # under that request's method and path.
        task = asyncio.create_task(
            session.run(), name=f"session:{slot.room_name}", context=contextvars.Context()
        )
        self._live[slot.room_name] = (session, task)
        task.add_done_callback(lambda t: self._finished(slot, session, t))
        slot.session.set_result(session)
        self.counters["started"] += 1
        return session

    def _finished(self, slot: Slot, session: RoomSession, task: asyncio.Task[SessionInfo]) -> None:
        room_name = slot.room_name
        if self._live.get(room_name, (None,))[0] is session:
            del self._live[room_name]
        self.release(slot)
        if task.cancelled():
            self.counters["cancelled"] += 1
        elif task.exception() is not None:
            # run() records failures itself; an exception here is a bug in the runtime, still contained.
            self.counters["failed"] += 1
            log.error("session_crashed", room=room_name, error=repr(task.exception()))
        elif session.info.end_reason == "failed":
            self.counters["failed"] += 1
        else:
            self.counters["ended"] += 1

    async def stop(self, room_name: str, reason: EndReason = "stopped") -> SessionInfo | None:
        """Stop the session in a room and wait until its agent has left; None if there is none."""
        live = self._live.get(room_name)
        if live is None:
            return None
        session, task = live
        session.stop(reason)
        return await asyncio.shield(task)

    async def shutdown(self) -> None:
        """Refuse new sessions, ask every live one to end, and cancel what outlasts the drain timeout."""
        self._closing = True
        live = list(self._live.values())
        if not live:
            return
        log.info("sessions_draining", count=len(live), timeout_s=self._settings.drain_timeout_s)
        for session, _ in live:
            session.stop("shutdown")
        tasks = [task for _, task in live]
        _, pending = await asyncio.wait(tasks, timeout=self._settings.drain_timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("sessions_cancelled", count=len(pending))
            await asyncio.wait(pending)
        log.info("sessions_drained", count=len(tasks))
