"""The shared state of a single process, kept in its memory."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from voicebot.store.base import (
    DEFAULT_MAX_TRANSCRIPT_LINES,
    Clock,
    Job,
    Placement,
    RoomRecord,
    SessionRecord,
    StateStore,
    job_from_json,
)
from voicebot.store.transcripts import TranscriptLine


@dataclass
class _Expiring:
    value: Any
    expires_at: float | None = None

    def alive(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass
class InMemoryStore(StateStore):
    """The state of a single process, in its memory; the same contract as the Redis store."""

    clock: Clock = time.monotonic
    """What leases, heartbeats and retention are judged by; only this process reads them, so monotonic."""
    max_transcript_lines: int = DEFAULT_MAX_TRANSCRIPT_LINES
    """A transcript keeps its newest lines up to this many; older ones are dropped."""
    _kv: dict[str, _Expiring] = field(default_factory=dict)
    _capacity: dict[str, int] = field(default_factory=dict)
    # Jobs wait as JSON, as in Redis, so a job that could not cross between processes fails here too.
    _jobs: dict[str, asyncio.Queue[dict[str, Any]]] = field(default_factory=dict)
    _transcripts: dict[str, list[TranscriptLine]] = field(default_factory=dict)
    _writes: int = 0
    _slots: dict[str, dict[str, float]] = field(default_factory=dict)
    """Places held in each pool: member -> when the place lapses if nobody frees it."""
    """Times of the events counted under each rate key, oldest first."""

    def _get(self, key: str) -> Any:
        entry = self._kv.get(key)
        if entry is None:
            return None
        if not entry.alive(self.clock()):
            del self._kv[key]
            return None
        return entry.value

    def _set(self, key: str, value: Any, ttl_s: float | None = None) -> None:
        self._kv[key] = _Expiring(value, self.clock() + ttl_s if ttl_s is not None else None)
        self._writes += 1
        if self._writes % 512 == 0:
            # Expired keys nobody reads again (old events, ended sessions) must not pile up for months.
            now = self.clock()
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

    async def push_job(self, process_id: str, job: Job) -> None:
        self._jobs.setdefault(process_id, asyncio.Queue()).put_nowait(job.to_json())

    async def pop_job(self, process_id: str, timeout_s: float) -> Job | None:
        queue = self._jobs.setdefault(process_id, asyncio.Queue())
        try:
            return job_from_json(await asyncio.wait_for(queue.get(), timeout_s))
        except TimeoutError:
            return None

    async def save_room(self, room: RoomRecord) -> None:
        self._set(f"room:{room.room_name}", room)

    async def room(self, room_name: str) -> RoomRecord | None:
        room: RoomRecord | None = self._get(f"room:{room_name}")
        return room

    async def save_session(self, session: SessionRecord) -> None:
        self._set(f"session:{session.room_name}", session)
        self._set(f"live:{session.room_name}", True)

    async def end_session(self, session: SessionRecord, retention_s: float) -> None:
        self._set(f"session:{session.room_name}", session, retention_s)
        self._kv.pop(f"live:{session.room_name}", None)

    async def session(self, room_name: str) -> SessionRecord | None:
        session: SessionRecord | None = self._get(f"session:{room_name}")
        return session

    async def live_sessions(self) -> list[SessionRecord]:
        rooms = [key.removeprefix("live:") for key in self._keys("live:")]
        sessions: list[SessionRecord | None] = [self._get(f"session:{room}") for room in rooms]
        return sorted((s for s in sessions if s is not None), key=lambda s: s.started_at)

    async def append(self, room_name: str, line: TranscriptLine) -> None:
        if self._get(f"transcript:{room_name}") is None:
            self._transcripts[room_name] = []
        self._set(f"transcript:{room_name}", True)
        lines = self._transcripts[room_name]
        lines.append(line)
        del lines[: -self.max_transcript_lines]

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

    async def take_slot(self, pool: str, member: str, limit: int, ttl_s: float) -> bool:
        now = self.clock()
        held = {m: until for m, until in self._slots.get(pool, {}).items() if until > now}
        self._slots[pool] = held
        if member not in held and len(held) >= limit:
            return False
        held[member] = now + ttl_s
        return True

    async def free_slot(self, pool: str, member: str) -> None:
        self._slots.get(pool, {}).pop(member, None)

    async def hit_rate(self, key: str, limit: int, window_s: float) -> float | None:
        now = self.clock()
        hits: list[float] = self._get(f"hits:{key}") or []
        recent = [at for at in hits if at > now - window_s]
        if len(recent) >= limit:
            return recent[0] + window_s - now if recent else window_s
        # Kept with an expiry, so the keys of callers who never come back are swept like any other.
        self._set(f"hits:{key}", [*recent, now], window_s)
        return None

    async def aclose(self) -> None:
        return None
