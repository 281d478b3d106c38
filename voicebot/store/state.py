"""Shared state behind one interface: sessions, transcripts, room leases, processes, jobs and webhook events.

InMemoryStore serves one process (`make run`); RedisStore (redis_store.py) lets several processes share it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from voicebot.errors import StateUnavailable
from voicebot.store.transcripts import TranscriptLine

__all__ = ["InMemoryStore", "Placement", "RoomRecord", "StateStore", "StateUnavailable"]


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


@dataclass
class _Expiring:
    value: Any
    expires_at: float | None = None

    def alive(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass
class InMemoryStore:
    """The state of a single process, in its memory; the same contract as the Redis store."""

    _kv: dict[str, _Expiring] = field(default_factory=dict)
    _capacity: dict[str, int] = field(default_factory=dict)
    _jobs: dict[str, asyncio.Queue[dict[str, Any]]] = field(default_factory=dict)
    _transcripts: dict[str, list[TranscriptLine]] = field(default_factory=dict)
    _writes: int = 0

    def _get(self, key: str) -> Any:
        entry = self._kv.get(key)
        if entry is None:
            return None
        if not entry.alive(time.monotonic()):
            del self._kv[key]
            return None
        return entry.value

    def _set(self, key: str, value: Any, ttl_s: float | None = None) -> None:
        self._kv[key] = _Expiring(value, time.monotonic() + ttl_s if ttl_s is not None else None)
        self._writes += 1
        if self._writes % 512 == 0:
            # Expired keys nobody reads again (old events, ended sessions) must not pile up for months.
            now = time.monotonic()
            for stale in [key for key, entry in self._kv.items() if not entry.alive(now)]:
                del self._kv[stale]
                if stale.startswith("transcript:"):
                    self._transcripts.pop(stale.removeprefix("transcript:"), None)

    def _keys(self, prefix: str) -> list[str]:
        return [key for key in list(self._kv) if key.startswith(prefix) and self._get(key) is not None]

    async def ping(self) -> None:
        return None

    async def heartbeat(self, process_id: str, capacity: int, ttl_s: float) -> None:
        self._set(f"proc:{process_id}", True, ttl_s)
        self._capacity[process_id] = capacity

    async def live_processes(self) -> list[str]:
        return sorted(key.removeprefix("proc:") for key in self._keys("proc:"))

    def _free(self, process_id: str) -> int:
        held = sum(1 for key in self._keys("lease:") if self._get(key) == process_id)
        return self._capacity.get(process_id, 0) - held

    async def place(self, room_name: str, prefer: str, ttl_s: float) -> Placement | None:
        owner = self._get(f"lease:{room_name}")
        if owner is not None:
            return Placement(owner, new=False)
        live = await self.live_processes()
        free = {process: self._free(process) for process in live}
        if free.get(prefer, 0) > 0:
            chosen = prefer
        else:
            chosen = max((p for p in live if free[p] > 0), key=lambda p: free[p], default="")
        if not chosen:
            return None
        self._set(f"lease:{room_name}", chosen, ttl_s)
        return Placement(chosen, new=True)

    async def adopt(self, room_name: str, process_id: str, ttl_s: float) -> bool:
        if self._get(f"lease:{room_name}") is not None or self._free(process_id) <= 0:
            return False
        self._set(f"lease:{room_name}", process_id, ttl_s)
        return True

    async def renew(self, room_name: str, process_id: str, ttl_s: float) -> bool:
        owner = self._get(f"lease:{room_name}")
        if owner not in (None, process_id):
            return False
        self._set(f"lease:{room_name}", process_id, ttl_s)
        return True

    async def release(self, room_name: str, process_id: str) -> None:
        if self._get(f"lease:{room_name}") == process_id:
            del self._kv[f"lease:{room_name}"]

    async def owner(self, room_name: str) -> str | None:
        owner: str | None = self._get(f"lease:{room_name}")
        return owner

    async def push_job(self, process_id: str, job: dict[str, Any]) -> None:
        self._jobs.setdefault(process_id, asyncio.Queue()).put_nowait(job)

    async def pop_job(self, process_id: str, timeout_s: float) -> dict[str, Any] | None:
        queue = self._jobs.setdefault(process_id, asyncio.Queue())
        try:
            return await asyncio.wait_for(queue.get(), timeout_s)
        except TimeoutError:
            return None

    async def save_room(self, room: RoomRecord) -> None:
        self._set(f"room:{room.room_name}", room)

    async def room(self, room_name: str) -> RoomRecord | None:
        room: RoomRecord | None = self._get(f"room:{room_name}")
        return room

    async def save_session(self, session: dict[str, Any]) -> None:
        self._set(f"session:{session['room_name']}", dict(session))
        self._set(f"live:{session['room_name']}", True)

    async def end_session(self, session: dict[str, Any], retention_s: float) -> None:
        self._set(f"session:{session['room_name']}", dict(session), retention_s)
        self._kv.pop(f"live:{session['room_name']}", None)

    async def session(self, room_name: str) -> dict[str, Any] | None:
        session = self._get(f"session:{room_name}")
        return dict(session) if session is not None else None

    async def live_sessions(self) -> list[dict[str, Any]]:
        rooms = [key.removeprefix("live:") for key in self._keys("live:")]
        sessions = [self._get(f"session:{room}") for room in rooms]
        return sorted((dict(s) for s in sessions if s is not None), key=lambda s: s["started_at"])

    async def append(self, room_name: str, line: TranscriptLine) -> None:
        if self._get(f"transcript:{room_name}") is None:
            self._transcripts[room_name] = []
        self._set(f"transcript:{room_name}", True)
        self._transcripts[room_name].append(line)

    async def lines(self, room_name: str) -> list[TranscriptLine] | None:
        if self._get(f"transcript:{room_name}") is None:
            self._transcripts.pop(room_name, None)
            return None
        return list(self._transcripts.get(room_name, []))

    async def close(self, room_name: str, retention_s: float) -> None:
        self._transcripts.setdefault(room_name, [])
        self._set(f"transcript:{room_name}", True, retention_s)

    async def first_delivery(self, event_id: str, ttl_s: float) -> bool:
        if self._get(f"event:{event_id}") is not None:
            return False
        self._set(f"event:{event_id}", True, ttl_s)
        return True

    async def aclose(self) -> None:
        return None
