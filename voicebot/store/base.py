"""The state every process shares, as one protocol, and the records it speaks: sessions, jobs, rooms.

InMemoryStore (memory.py) serves one process (`make run`); RedisStore (redis.py) lets several share it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, TypeGuard, get_args

from voicebot.errors import StateUnavailable
from voicebot.store.transcripts import TranscriptLine

__all__ = [
    "DEFAULT_MAX_TRANSCRIPT_LINES",
    "Clock",
    "EndReason",
    "InvalidRecord",
    "Job",
    "Placement",
    "RoomRecord",
    "SessionRecord",
    "SessionState",
    "StartJob",
    "StateStore",
    "StateUnavailable",
    "StopJob",
    "job_from_json",
    "parse_end_reason",
]

DEFAULT_MAX_TRANSCRIPT_LINES = 500
"""Lines a transcript keeps (sessions.max_transcript_lines): past it the oldest are dropped."""

Clock = Callable[[], float]
"""Seconds now: what a store judges leases, heartbeats and expiry by; tests pass one they move by hand."""

EndReason = Literal[
    "room_closed",
    "participants_left",
    "stopped",
    "call_ended",
    "call_not_answered",
    "failed",
    "shutdown",
    "lease_lost",
    "owner_lost",
    "max_duration",
    "nobody_joined",
]

# "starting" until the agent joins, then livekit-agents' AgentState as it changes, then "ended".
SessionState = Literal["starting", "initializing", "idle", "listening", "thinking", "speaking", "ended"]

_END_REASONS: frozenset[str] = frozenset(get_args(EndReason))
_SESSION_STATES: frozenset[str] = frozenset(get_args(SessionState))


class InvalidRecord(ValueError):
    """A record read back from the shared state does not have the shape this code writes."""


def _is_end_reason(value: object) -> TypeGuard[EndReason]:
    return isinstance(value, str) and value in _END_REASONS


def _is_session_state(value: object) -> TypeGuard[SessionState]:
    return isinstance(value, str) and value in _SESSION_STATES


def parse_end_reason(value: object) -> EndReason:
    """The end reason `value` names; raises InvalidRecord for anything else."""
    if _is_end_reason(value):
        return value
    raise InvalidRecord(f"unknown end reason {value!r}; known: {', '.join(sorted(_END_REASONS))}")


def _parse_session_state(value: object) -> SessionState:
    if _is_session_state(value):
        return value
    raise InvalidRecord(f"unknown session state {value!r}; known: {', '.join(sorted(_SESSION_STATES))}")


def _object(data: object, what: str) -> Mapping[str, object]:
    if not isinstance(data, Mapping):
        raise InvalidRecord(f"a {what} must be a JSON object, got {data!r}")
    return data


def _str(data: Mapping[str, object], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise InvalidRecord(f"{key!r} must be a string, got {value!r}")
    return value


def _optional_str(data: Mapping[str, object], key: str) -> str | None:
    return None if data.get(key) is None else _str(data, key)


def _float(data: Mapping[str, object], key: str) -> float:
    value = data.get(key)
    # bool is an int, but never a time.
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidRecord(f"{key!r} must be a number, got {value!r}")
    return float(value)


def _optional_float(data: Mapping[str, object], key: str) -> float | None:
    return None if data.get(key) is None else _float(data, key)


def _bool(data: Mapping[str, object], key: str) -> bool:
    value = data.get(key)
    if not isinstance(value, bool):
        raise InvalidRecord(f"{key!r} must be true or false, got {value!r}")
    return value


@dataclass(frozen=True, kw_only=True)
class SessionRecord:
    """A session as every process and the API see it: starting, in one of its agent's states, or ended."""

    session_id: str = ""
    """Empty while another process has yet to start the agent it was sent."""
    room_name: str
    agent_id: str
    identity: str = ""
    """The agent's participant identity; empty until it joins."""
    started_at: float
    process_id: str
    """The voicebot process that runs the agent."""
    state: SessionState = "starting"
    ended_at: float | None = None
    end_reason: EndReason | None = None
    error: str | None = None

    @property
    def live(self) -> bool:
        """Whether the session has yet to end."""
        return self.state != "ended"

    def to_json(self) -> dict[str, Any]:
        """The record as the API returns it and the Redis store keeps it."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> SessionRecord:
        """The record `to_json` wrote; raises InvalidRecord for any other shape."""
        record = _object(data, "session record")
        end_reason = record.get("end_reason")
        return cls(
            session_id=_str(record, "session_id"),
            room_name=_str(record, "room_name"),
            agent_id=_str(record, "agent_id"),
            identity=_str(record, "identity"),
            started_at=_float(record, "started_at"),
            process_id=_str(record, "process_id"),
            state=_parse_session_state(record.get("state")),
            ended_at=_optional_float(record, "ended_at"),
            end_reason=None if end_reason is None else parse_end_reason(end_reason),
            error=_optional_str(record, "error"),
        )


@dataclass(frozen=True, kw_only=True)
class StartJob:
    """Another process asks this one to start an agent in a room it placed here."""

    action: Literal["start"] = field(default="start", init=False)
    room_name: str
    agent_id: str
    owns_room: bool
    phone_call: bool

    def to_json(self) -> dict[str, Any]:
        """The job as it travels between processes."""
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class StopJob:
    """Another process asks this one to stop the session it runs in a room."""

    action: Literal["stop"] = field(default="stop", init=False)
    room_name: str
    reason: EndReason = "stopped"

    def to_json(self) -> dict[str, Any]:
        """The job as it travels between processes."""
        return asdict(self)


Job = StartJob | StopJob


def job_from_json(data: object) -> Job:
    """The job `to_json` wrote; raises InvalidRecord for an unknown action or reason, or a missing field."""
    job = _object(data, "job")
    action = job.get("action")
    if action == "start":
        return StartJob(
            room_name=_str(job, "room_name"),
            agent_id=_str(job, "agent_id"),
            owns_room=_bool(job, "owns_room"),
            phone_call=_bool(job, "phone_call"),
        )
    if action == "stop":
        # A stop without a reason is a plain stop; a reason this code does not know is refused, not guessed.
        reason = job.get("reason", "stopped")
        return StopJob(room_name=_str(job, "room_name"), reason=parse_end_reason(reason))
    raise InvalidRecord(f"unknown job action {action!r}")


@dataclass(frozen=True)
class RoomRecord:
    """A room voicebot created, so a process that takes it over knows it may delete it."""

    room_name: str
    agent_id: str
    created_by: str
    created_at: float


@dataclass(frozen=True)
class Placement:
    """Which process runs a room's agent, and whether this call chose it (False: it already had one)."""

    process_id: str
    new: bool


class StateStore(Protocol):
    """What every process shares; the in-memory and Redis stores pass the same contract tests."""

    async def ping(self) -> None:
        """Raise StateUnavailable unless the state can be read and written now."""

    async def heartbeat(self, process_id: str, capacity: int, ttl_s: float) -> None:
        """Announce a live process and how many sessions it may run; it counts as dead after ttl_s."""

    async def live_processes(self) -> list[str]:
        """Processes whose heartbeat has not expired."""

    async def place(self, room_name: str, prefer: str, ttl_s: float) -> Placement | None:
        """Lease the room to `prefer` if it has room, else to the live process with the most; None when
        every process is full. A room already leased keeps its process (new=False). Atomic."""

    async def adopt(self, room_name: str, process_id: str, ttl_s: float) -> bool:
        """Take the lease of a room nobody holds, if the process has room; False otherwise."""

    async def renew(self, room_name: str, process_id: str, ttl_s: float) -> bool:
        """Extend the process's lease (taking it again if it lapsed); False when another process holds it."""

    async def release(self, room_name: str, process_id: str) -> None:
        """Give up the process's lease on a room."""

    async def owner(self, room_name: str) -> str | None:
        """The process holding the room's lease, if any."""

    async def push_job(self, process_id: str, job: Job) -> None:
        """Queue work (start or stop a session) for one process."""

    async def pop_job(self, process_id: str, timeout_s: float) -> Job | None:
        """The process's next job, waiting up to timeout_s; raises InvalidRecord (the job is dropped) for
        one this code cannot read."""

    async def save_room(self, room: RoomRecord) -> None:
        """Remember a room voicebot created."""

    async def room(self, room_name: str) -> RoomRecord | None:
        """A room voicebot created, if it is remembered."""

    async def save_session(self, session: SessionRecord) -> None:
        """Record a live session (its `room_name` is the key); written again as its state changes."""

    async def end_session(self, session: SessionRecord, retention_s: float) -> None:
        """Record a session as ended; it stays readable for retention_s."""

    async def session(self, room_name: str) -> SessionRecord | None:
        """The room's latest session, live or recently ended."""

    async def live_sessions(self) -> list[SessionRecord]:
        """Every live session of every process, oldest first."""

    async def append(self, room_name: str, line: TranscriptLine) -> None:
        """Add a line to the room's transcript: exactly once, in order, even across an outage. Past the
        store's max_transcript_lines the oldest line is dropped, so the newest (what a takeover carries
        on from) are kept."""

    async def lines(self, room_name: str) -> list[TranscriptLine] | None:
        """The room's transcript in order, or None when there is none (never, or expired)."""

    async def close(self, room_name: str, retention_s: float) -> None:
        """The room's session ended: keep its transcript for retention_s."""

    async def first_delivery(self, event_id: str, ttl_s: float) -> bool:
        """True the first time an event id is seen (by any process) within ttl_s."""

    async def take_slot(self, pool: str, member: str, limit: int, ttl_s: float) -> bool:
        """Hold one of `limit` places in `pool` for `member` (at most ttl_s, in case nobody gives it back);
        False when all are held. Taking a place already held is a no-op that returns True. Atomic."""

    async def free_slot(self, pool: str, member: str) -> None:
        """Give back `member`'s place in `pool`, if it holds one."""

    async def hit_rate(self, key: str, limit: int, window_s: float) -> float | None:
        """Count one event under `key` unless `limit` were counted in the last window_s: None when it is
        counted, else the seconds until one of those leaves the window. Atomic."""

    async def aclose(self) -> None:
        """Flush what is buffered (as far as possible) and release connections."""
