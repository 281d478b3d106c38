"""The shared state in Redis (redis.asyncio), for several voicebot processes; writes survive an outage.

Keys, all under `voicebot:`: proc (zset of heartbeat deadlines), cap (hash of capacities), hold:<room>,
owned:<process> (set of rooms), live (set of rooms with a live session), session:<room> (JSON),
room:<room> (JSON), tx:<room> (a stream, one entry per line) with txids:<room> (line ids already written),
jobs:<process> (list), event:<id>, slots:<pool> (zset of members by the time their place lapses),
rate:<key> (zset of counted events by time).

Every key expires, so nothing is left behind by a process that dies or a cluster that is shut down:
- a process's own keys (owned:, jobs:, and its entries in proc and cap) live a safety net past its last
  heartbeat, which renews them; the first heartbeat or placement after its lease lapses deletes them;
- proc, cap and live expire a safety net after the last heartbeat of any process;
- a live session's session:, room:, tx: and txids: keys live a safety net past its lease's last renewal;
  once it ends they are kept for sessions.transcript_retention_s, then expire;
- hold:, event:, slots: and rate: carry their own expiry.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

import structlog
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from voicebot.errors import StateUnavailable
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

P = "voicebot:"
T = TypeVar("T")

log = structlog.get_logger(__name__)

# Leases are judged by the callers' clock (the injected `clock`, ms passed as ARGV `now`), as heartbeats
# already were: a lease is a hash {owner, until} that counts only while `until` > now. So a process's
# tests can move time on instead of waiting, and every judgement of a lease uses the same clock as the
# heartbeats it is weighed against (processes must keep their clocks in sync, e.g. NTP, as before). The
# key's own expiry is only a safety net, generously later than `until`, so the keys of processes that
# are gone still go away. The key is hold:<room> rather than the old lease:<room> (a plain string with a
# server-side TTL), so a leftover key of the old shape is never read as a hash.
_SAFETY_NET_MS = 60_000

_HELD = f"""
local function owner_of(room, now)
  local lease = redis.call('HMGET', 'voicebot:hold:' .. room, 'owner', 'until')
  if lease[1] and tonumber(lease[2]) > tonumber(now) then return lease[1] end
  return false
end
-- Rooms a process holds, counting only leases that are current and its own; stale ones are dropped.
local function held(process, now)
  local count = 0
  for _, room in ipairs(redis.call('SMEMBERS', 'voicebot:owned:' .. process)) do
    if owner_of(room, now) == process then
      count = count + 1
    else
      redis.call('SREM', 'voicebot:owned:' .. process, room)
    end
  end
  return count
end
local function free(process, now)
  return tonumber(redis.call('HGET', 'voicebot:cap', process) or '0') - held(process, now)
end
local function lease(room, process, now, ttl)
  local key = 'voicebot:hold:' .. room
  local keep = tonumber(ttl) + {_SAFETY_NET_MS}
  redis.call('HSET', key, 'owner', process, 'until', tonumber(now) + tonumber(ttl))
  redis.call('PEXPIRE', key, keep)
  redis.call('SADD', 'voicebot:owned:' .. process, room)
  redis.call('PEXPIRE', 'voicebot:owned:' .. process, keep)
  -- A live session's records last as long as its lease is renewed; an ended one's retention is not cut.
  if redis.call('SISMEMBER', 'voicebot:live', room) == 1 then
    for _, kind in ipairs({{'session:', 'room:', 'tx:', 'txids:'}}) do
      local record = 'voicebot:' .. kind .. room
      if redis.call('PTTL', record) < keep then redis.call('PEXPIRE', record, keep) end
    end
  end
end
-- Forget processes whose heartbeat lapsed: their place in proc and cap, their rooms and their jobs.
local function reap(now)
  for _, dead in ipairs(redis.call('ZRANGEBYSCORE', 'voicebot:proc', '-inf', now)) do
    redis.call('HDEL', 'voicebot:cap', dead)
    redis.call('DEL', 'voicebot:owned:' .. dead, 'voicebot:jobs:' .. dead)
  end
  redis.call('ZREMRANGEBYSCORE', 'voicebot:proc', '-inf', now)
end
"""

# KEYS: none (single Redis); ARGV: room, preferred process, now ms, lease ms.
_PLACE = (
    _HELD
    + """
local owner = owner_of(ARGV[1], ARGV[3])
if owner then return {owner, 0} end
reap(ARGV[3])
local best, most = false, 0
if redis.call('ZSCORE', 'voicebot:proc', ARGV[2]) and free(ARGV[2], ARGV[3]) > 0 then
  best = ARGV[2]
else
  for _, process in ipairs(redis.call('ZRANGE', 'voicebot:proc', 0, -1)) do
    local room_left = free(process, ARGV[3])
    if room_left > most then best, most = process, room_left end
  end
end
if not best then return {false, 0} end
lease(ARGV[1], best, ARGV[3], ARGV[4])
return {best, 1}
"""
)

# ARGV: room, process, now ms, lease ms.
_ADOPT = (
    _HELD
    + """
if owner_of(ARGV[1], ARGV[3]) or free(ARGV[2], ARGV[3]) <= 0 then return 0 end
lease(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 1
"""
)

# ARGV: room, process, now ms, lease ms.
_RENEW = (
    _HELD
    + """
local owner = owner_of(ARGV[1], ARGV[3])
if owner and owner ~= ARGV[2] then return 0 end
lease(ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 1
"""
)

# ARGV: room, now ms.
_OWNER = _HELD + "return owner_of(ARGV[1], ARGV[2])"

# ARGV: process, capacity, its deadline ms, now ms, how long its keys outlive the deadline (ms).
_HEARTBEAT = (
    _HELD
    + """
reap(ARGV[4])
redis.call('ZADD', 'voicebot:proc', ARGV[3], ARGV[1])
redis.call('HSET', 'voicebot:cap', ARGV[1], ARGV[2])
local keep = tonumber(ARGV[3]) - tonumber(ARGV[4]) + tonumber(ARGV[5])
for _, key in ipairs({'voicebot:proc', 'voicebot:cap', 'voicebot:live',
                      'voicebot:owned:' .. ARGV[1], 'voicebot:jobs:' .. ARGV[1]}) do
  redis.call('PEXPIRE', key, keep)
end
return 1
"""
)

# ARGV: room, process. A lapsed lease of the process's own is removed too.
_RELEASE = """
if redis.call('HGET', 'voicebot:hold:' .. ARGV[1], 'owner') == ARGV[2] then
  redis.call('DEL', 'voicebot:hold:' .. ARGV[1])
end
redis.call('SREM', 'voicebot:owned:' .. ARGV[2], ARGV[1])
return 1
"""

# A line is written once: its id is remembered beside the stream, so a retry after a lost reply is a no-op.
# At most ARGV[4] lines are kept: the oldest go, with their ids. The keys live at least ARGV[5] ms (their
# lease's renewals extend that while the session lives; a retention set when it ended is kept).
# ARGV: room, line id, line JSON, most lines, keep ms.
_APPEND = """
local tx, ids = 'voicebot:tx:' .. ARGV[1], 'voicebot:txids:' .. ARGV[1]
if redis.call('SADD', ids, ARGV[2]) == 0 then return 0 end
local over = redis.call('XLEN', tx) - tonumber(ARGV[4]) + 1
if over > 0 then
  for _, entry in ipairs(redis.call('XRANGE', tx, '-', '+', 'COUNT', over)) do
    redis.call('SREM', ids, entry[2][2])
  end
end
redis.call('XADD', tx, 'MAXLEN', ARGV[4], '*', 'id', ARGV[2], 'line', ARGV[3])
for _, key in ipairs({tx, ids}) do
  if redis.call('PTTL', key) < tonumber(ARGV[5]) then redis.call('PEXPIRE', key, ARGV[5]) end
end
return 1
"""


# ARGV: member, limit, now ms, ttl ms. KEYS[1]: the pool's zset.
_TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
"""

# ARGV: event id, limit, now ms, window ms. KEYS[1]: the key's zset. Returns -1 when counted, else the ms
# until the oldest event counted leaves the window.
_HIT_RATE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[4]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if oldest[2] then return tonumber(oldest[2]) + tonumber(ARGV[4]) - tonumber(ARGV[3]) end
  return tonumber(ARGV[4])
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
return -1
"""


# The writes an outage may hold back, told apart by their `kind`: a transcript line, a live session, an
# ended one, and a closed transcript.
@dataclass(frozen=True, kw_only=True)
class _AppendLine:
    kind: Literal["line"] = field(default="line", init=False)
    room_name: str
    line_id: str
    """Chosen once, so a retry after a lost reply is recognised and not written twice."""
    line: TranscriptLine


@dataclass(frozen=True, kw_only=True)
class _SaveSession:
    kind: Literal["session"] = field(default="session", init=False)
    session: SessionRecord


@dataclass(frozen=True, kw_only=True)
class _EndSession:
    kind: Literal["ended"] = field(default="ended", init=False)
    session: SessionRecord
    retention_s: float


@dataclass(frozen=True, kw_only=True)
class _CloseTranscript:
    kind: Literal["close"] = field(default="close", init=False)
    room_name: str
    retention_s: float


_Write = _AppendLine | _SaveSession | _EndSession | _CloseTranscript


class RedisStore(StateStore):
    """State shared by every process on one Redis; what cannot be written during an outage is kept in
    order and written when Redis answers again."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 2.0,
        clock: Clock = time.time,
        max_transcript_lines: int = DEFAULT_MAX_TRANSCRIPT_LINES,
    ) -> None:
        self.url = url
        self._max_lines = max_transcript_lines
        # Wall-clock time: deadlines written by one process are read by others.
        self._clock = clock
        self._redis = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        # Jobs wait on BLPOP; a connection of their own keeps them from holding up everything else.
        self._jobs_redis = Redis.from_url(url, socket_timeout=None, socket_connect_timeout=timeout_s)
        self._place = self._redis.register_script(_PLACE)
        self._adopt = self._redis.register_script(_ADOPT)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self._owner = self._redis.register_script(_OWNER)
        self._heartbeat = self._redis.register_script(_HEARTBEAT)
        self._append = self._redis.register_script(_APPEND)
        self._take_slot = self._redis.register_script(_TAKE_SLOT)
        self._hit_rate = self._redis.register_script(_HIT_RATE)
        # Writes that failed, oldest first. Flushed in order before any new write.
        self._outbox: deque[_Write] = deque()
        self._reachable = True
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    async def _call(self, action: Callable[[], Awaitable[T]], *, idempotent: bool = True) -> T:
        try:
            try:
                result = await action()
            except RedisConnectionError:
                # After Redis restarts, pooled connections fail once each; a fresh one may well work.
                if not idempotent:
                    raise
                result = await action()
        except (RedisError, OSError) as exc:
            self._reachable = False
            raise StateUnavailable(f"Redis at {self._safe_url()} did not answer: {exc}") from exc
        self._reachable = True
        return result

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _safe_url(self) -> str:
        # Never log a password that may sit in the URL.
        return self.url.split("@")[-1]

    async def ping(self) -> None:
        await self._call(self._redis.ping)
        await self._flush()

    async def heartbeat(self, process_id: str, capacity: int, ttl_s: float) -> None:
        now_ms = self._now_ms()
        args: list[str | int] = [process_id, capacity, now_ms + int(ttl_s * 1000), now_ms, _SAFETY_NET_MS]
        await self._call(lambda: self._heartbeat(args=args))
        await self._flush()

    async def live_processes(self) -> list[str]:
        now_ms = self._now_ms()
        members = await self._call(lambda: self._redis.zrangebyscore(f"{P}proc", now_ms, "+inf"))
        return sorted(_text(m) for m in members)

    async def place(self, room_name: str, prefer: str, ttl_s: float) -> Placement | None:
        now_ms = self._now_ms()
        args: list[str | int] = [room_name, prefer, now_ms, int(ttl_s * 1000)]
        # Not retried: a second try after a lost reply would see the room as already placed.
        owner, new = await self._call(lambda: self._place(args=args), idempotent=False)
        if not owner:
            return None
        return Placement(_text(owner), new=bool(new))

    async def adopt(self, room_name: str, process_id: str, ttl_s: float) -> bool:
        args: list[str | int] = [room_name, process_id, self._now_ms(), int(ttl_s * 1000)]
        return bool(await self._call(lambda: self._adopt(args=args), idempotent=False))

    async def renew(self, room_name: str, process_id: str, ttl_s: float) -> bool:
        args: list[str | int] = [room_name, process_id, self._now_ms(), int(ttl_s * 1000)]
        return bool(await self._call(lambda: self._renew(args=args)))

    async def release(self, room_name: str, process_id: str) -> None:
        await self._call(lambda: self._release(args=[room_name, process_id]))

    async def owner(self, room_name: str) -> str | None:
        args: list[str | int] = [room_name, self._now_ms()]
        owner = await self._call(lambda: self._owner(args=args))
        return _text(owner) if owner else None

    async def push_job(self, process_id: str, job: Job) -> None:
        payload = json.dumps(job.to_json())

        async def push() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(f"{P}jobs:{process_id}", payload)
                # The process's heartbeats keep its queue; a dead one's goes with its other keys.
                pipe.pexpire(f"{P}jobs:{process_id}", _SAFETY_NET_MS, nx=True)
                await pipe.execute()

        await self._call(push, idempotent=False)

    async def pop_job(self, process_id: str, timeout_s: float) -> Job | None:
        async def pop() -> Any:
            return await self._jobs_redis.blpop([f"{P}jobs:{process_id}"], timeout=timeout_s)

        popped = await self._call(pop, idempotent=False)
        return job_from_json(json.loads(popped[1])) if popped else None

    async def save_room(self, room: RoomRecord) -> None:
        # Kept while its session lives (lease renewals extend it), then as long as the transcript.
        record = json.dumps(asdict(room))
        await self._call(lambda: self._redis.set(f"{P}room:{room.room_name}", record, px=_SAFETY_NET_MS))

    async def room(self, room_name: str) -> RoomRecord | None:
        raw = await self._call(lambda: self._redis.get(f"{P}room:{room_name}"))
        return RoomRecord(**json.loads(raw)) if raw else None

    async def save_session(self, session: SessionRecord) -> None:
        await self._write(_SaveSession(session=session))

    async def end_session(self, session: SessionRecord, retention_s: float) -> None:
        await self._write(_EndSession(session=session, retention_s=retention_s))

    async def session(self, room_name: str) -> SessionRecord | None:
        raw = await self._call(lambda: self._redis.get(f"{P}session:{room_name}"))
        return SessionRecord.from_json(json.loads(raw)) if raw else None

    async def live_sessions(self) -> list[SessionRecord]:
        async def read() -> list[Any]:
            rooms = sorted(_text(r) for r in await self._redis.smembers(f"{P}live"))
            if not rooms:
                return []
            return list(await self._redis.mget([f"{P}session:{room}" for room in rooms]))

        sessions = [SessionRecord.from_json(json.loads(raw)) for raw in await self._call(read) if raw]
        return sorted(sessions, key=lambda s: s.started_at)

    async def append(self, room_name: str, line: TranscriptLine) -> None:
        await self._write(_AppendLine(room_name=room_name, line_id=uuid.uuid4().hex, line=line))

    async def lines(self, room_name: str) -> list[TranscriptLine] | None:
        async def read() -> tuple[int, list[Any]]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.exists(f"{P}tx:{room_name}", f"{P}txids:{room_name}")
                pipe.xrange(f"{P}tx:{room_name}")
                exists, entries = await pipe.execute()
                return int(exists), list(entries)

        exists, entries = await self._call(read)
        if not exists:
            return None
        return [TranscriptLine(**json.loads(fields[b"line"])) for _, fields in entries]

    async def close(self, room_name: str, retention_s: float) -> None:
        await self._write(_CloseTranscript(room_name=room_name, retention_s=retention_s))

    async def first_delivery(self, event_id: str, ttl_s: float) -> bool:
        return bool(
            await self._call(lambda: self._redis.set(f"{P}event:{event_id}", 1, nx=True, ex=int(ttl_s)))
        )

    async def take_slot(self, pool: str, member: str, limit: int, ttl_s: float) -> bool:
        args: list[str | int] = [member, limit, self._now_ms(), int(ttl_s * 1000)]
        # A retry after a lost reply finds the member holding its place already: safe to repeat.
        return bool(await self._call(lambda: self._take_slot(keys=[f"{P}slots:{pool}"], args=args)))

    async def free_slot(self, pool: str, member: str) -> None:
        await self._call(lambda: self._redis.zrem(f"{P}slots:{pool}", member))

    async def hit_rate(self, key: str, limit: int, window_s: float) -> float | None:
        args: list[str | int] = [uuid.uuid4().hex, limit, self._now_ms(), int(window_s * 1000)]
        # Not retried: a second try after a lost reply would count the event twice.
        wait_ms = await self._call(
            lambda: self._hit_rate(keys=[f"{P}rate:{key}"], args=args), idempotent=False
        )
        return None if int(wait_ms) < 0 else int(wait_ms) / 1000

    async def aclose(self) -> None:
        try:
            await self._flush()
        except StateUnavailable:
            log.warning("state_not_flushed", pending=len(self._outbox))
        if self._flusher is not None:
            self._flusher.cancel()
        await self._redis.aclose()
        await self._jobs_redis.aclose()

    @property
    def reachable(self) -> bool:
        """Whether Redis answered the last request (the cluster's heartbeat asks every redis.heartbeat_s)."""
        return self._reachable

    @property
    def pending_writes(self) -> int:
        """Writes waiting for Redis to come back."""
        return len(self._outbox)

    async def _write(self, write: _Write) -> None:
        """Write now if Redis answers and nothing older waits; otherwise queue it, in order, for later."""
        self._outbox.append(write)
        try:
            await self._flush()
        except StateUnavailable:
            self._ensure_flusher()

    async def _flush(self) -> None:
        async with self._lock:
            while self._outbox:
                write = self._outbox[0]
                await self._call(partial(self._apply, write))
                self._outbox.popleft()

    def _ensure_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_until_done(), name="redis-outbox")

    async def _flush_until_done(self) -> None:
        log.warning("state_buffered", pending=len(self._outbox))
        while self._outbox:
            await asyncio.sleep(0.25)
            try:
                await self._flush()
            except StateUnavailable:
                continue
        log.info("state_flushed")

    async def _apply(self, write: _Write) -> None:
        if write.kind == "line":
            line_json = json.dumps(asdict(write.line))
            args: list[str | int] = [
                write.room_name,
                write.line_id,
                line_json,
                self._max_lines,
                _SAFETY_NET_MS,
            ]
            await self._append(args=args)
        elif write.kind == "session":
            room_name = write.session.room_name
            async with self._redis.pipeline(transaction=True) as pipe:
                # Lease renewals keep extending it while the session lives.
                pipe.set(f"{P}session:{room_name}", json.dumps(write.session.to_json()), px=_SAFETY_NET_MS)
                pipe.sadd(f"{P}live", room_name)
                # At least a safety net from now (heartbeats extend it): GT lengthens a shorter one, NX
                # gives one to a key without (GT counts no expiry as infinite).
                pipe.pexpire(f"{P}live", _SAFETY_NET_MS, gt=True)
                pipe.pexpire(f"{P}live", _SAFETY_NET_MS, nx=True)
                await pipe.execute()
        elif write.kind == "ended":
            room_name = write.session.room_name
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(
                    f"{P}session:{room_name}", json.dumps(write.session.to_json()), ex=int(write.retention_s)
                )
                pipe.srem(f"{P}live", room_name)
                pipe.expire(f"{P}room:{room_name}", int(write.retention_s))
                await pipe.execute()
        else:
            room_name, retention_s = write.room_name, int(write.retention_s)
            async with self._redis.pipeline(transaction=True) as pipe:
                # A transcript with no lines yet still answers (empty) until it expires.
                pipe.sadd(f"{P}txids:{room_name}", "")
                pipe.expire(f"{P}tx:{room_name}", retention_s)
                pipe.expire(f"{P}txids:{room_name}", retention_s)
                await pipe.execute()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
