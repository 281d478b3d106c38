"""The state every process shares, as one protocol: sessions, transcripts, leases, processes, jobs, events.

InMemoryStore (memory.py) serves one process (`make run`); RedisStore (redis.py) lets several share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from voicebot.errors import StateUnavailable
from voicebot.store.transcripts import TranscriptLine

__all__ = ["Placement", "RoomRecord", "StateStore", "StateUnavailable"]


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

    async def push_job(self, process_id: str, job: dict[str, Any]) -> None:
        """Queue work (start or stop a session) for one process."""

    async def pop_job(self, process_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The process's next job, waiting up to timeout_s."""

    async def save_room(self, room: RoomRecord) -> None:
        """Remember a room voicebot created."""

    async def room(self, room_name: str) -> RoomRecord | None:
        """A room voicebot created, if it is remembered."""

    async def save_session(self, session: dict[str, Any]) -> None:
        """Record a live session (its `room_name` is the key); written again as its state changes."""

    async def end_session(self, session: dict[str, Any], retention_s: float) -> None:
        """Record a session as ended; it stays readable for retention_s."""

    async def session(self, room_name: str) -> dict[str, Any] | None:
        """The room's latest session, live or recently ended."""

    async def live_sessions(self) -> list[dict[str, Any]]:
        """Every live session of every process."""

    async def append(self, room_name: str, line: TranscriptLine) -> None:
        """Add a line to the room's transcript: exactly once, in order, even across an outage."""

    async def lines(self, room_name: str) -> list[TranscriptLine] | None:
        """The room's transcript in order, or None when there is none (never, or expired)."""

    async def close(self, room_name: str, retention_s: float) -> None:
        """The room's session ended: keep its transcript for retention_s."""

    async def first_delivery(self, event_id: str, ttl_s: float) -> bool:
        """True the first time an event id is seen (by any process) within ttl_s."""

    async def aclose(self) -> None:
        """Flush what is buffered (as far as possible) and release connections."""
