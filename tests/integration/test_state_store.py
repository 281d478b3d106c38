"""One contract, two stores: the in-memory store and the Redis store (on a real redis-server) behave alike."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest
from redis.asyncio import Redis

from tests.clock import VirtualClock
from tests.conftest import eventually
from tests.servers import free_port
from voicebot.embedded.redis_server import EmbeddedRedis
from voicebot.errors import StateUnavailable
from voicebot.store.base import (
    EndReason,
    InvalidRecord,
    RoomRecord,
    SessionRecord,
    StartJob,
    StateStore,
    StopJob,
)
from voicebot.store.memory import InMemoryStore
from voicebot.store.redis import RedisStore
from voicebot.store.transcripts import TranscriptLine

pytestmark = pytest.mark.integration

TTL = 0.4
MAX_LINES = 5


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture(params=["memory", "redis"])
async def store(
    request: pytest.FixtureRequest, redis_server: EmbeddedRedis, clock: VirtualClock
) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        yield InMemoryStore(clock=clock, max_transcript_lines=MAX_LINES)
        return
    async with Redis.from_url(redis_server.url) as admin:
        await admin.flushall()
    redis_store = RedisStore(redis_server.url, clock=clock, max_transcript_lines=MAX_LINES)
    yield redis_store
    await redis_store.aclose()


def session(room: str, process: str = "p1") -> SessionRecord:
    return SessionRecord(
        room_name=room,
        agent_id="faq",
        session_id=f"SS_{room}",
        process_id=process,
        state="listening",
        started_at=time.time(),
    )


def ended(record: SessionRecord) -> SessionRecord:
    return replace(record, state="ended", end_reason="stopped", ended_at=record.started_at + 1)


async def test_a_room_goes_to_the_preferred_process_while_it_has_room_then_to_the_freest(
    store: StateStore,
) -> None:
    await store.heartbeat("p1", 1, 5)
    await store.heartbeat("p2", 2, 5)

    first = await store.place("room-1", "p1", 5)
    second = await store.place("room-2", "p1", 5)
    third = await store.place("room-3", "p1", 5)
    full = await store.place("room-4", "p1", 5)

    assert [(p.process_id, p.new) for p in (first, second, third) if p] == [
        ("p1", True),
        ("p2", True),
        ("p2", True),
    ]
    assert full is None


async def test_placing_a_placed_room_again_keeps_its_process_and_costs_nothing(store: StateStore) -> None:
    await store.heartbeat("p1", 1, 5)
    first = await store.place("room-1", "p1", 5)

    again = await store.place("room-1", "p1", 5)

    assert first is not None
    assert again is not None
    assert (again.process_id, again.new) == ("p1", False)


async def test_concurrent_placements_never_exceed_the_cluster_limit(store: StateStore) -> None:
    await store.heartbeat("p1", 2, 5)
    await store.heartbeat("p2", 3, 5)

    placed = await asyncio.gather(*(store.place(f"room-{i}", "p1", 5) for i in range(12)))

    owners = [p.process_id for p in placed if p is not None]
    assert sorted(owners) == ["p1", "p1", "p2", "p2", "p2"]


async def test_a_dead_processs_leases_lapse_and_its_rooms_can_be_adopted(
    store: StateStore, clock: VirtualClock
) -> None:
    await store.heartbeat("dead", 1, TTL)
    await store.heartbeat("alive", 1, 5)
    await store.place("room-1", "dead", TTL)
    clock.advance(TTL - 0.01)
    assert not await store.adopt("room-1", "alive", 5), "a lease holds until it ends"

    clock.advance(0.02)

    assert await store.live_processes() == ["alive"]
    assert await store.owner("room-1") is None
    assert await store.adopt("room-1", "alive", 5)
    assert await store.owner("room-1") == "alive"
    assert not await store.renew("room-1", "dead", 5), "the old owner must learn it lost the room"


async def test_renew_keeps_a_lease_and_release_frees_the_place(
    store: StateStore, clock: VirtualClock
) -> None:
    await store.heartbeat("p1", 1, 5)
    await store.place("room-1", "p1", TTL)
    clock.advance(TTL / 2)
    assert await store.renew("room-1", "p1", TTL)
    clock.advance(TTL / 2 + 0.05)
    assert await store.owner("room-1") == "p1"

    await store.release("room-1", "p1")

    assert await store.owner("room-1") is None
    assert await store.place("room-2", "p1", 5) is not None


async def test_jobs_reach_only_their_process_in_order(store: StateStore) -> None:
    start = StartJob(room_name="a", agent_id="faq", owns_room=True, phone_call=False)
    stop = StopJob(room_name="a", reason="call_not_answered")
    await store.push_job("p2", start)
    await store.push_job("p2", stop)

    assert await store.pop_job("p1", 0.1) is None
    assert await store.pop_job("p2", 1) == start
    assert await store.pop_job("p2", 1) == stop


async def test_a_job_with_a_reason_this_code_does_not_know_is_refused_when_read(store: StateStore) -> None:
    """A stop reason went unchecked from Redis to the session's end_reason: now reading it fails loudly."""
    await store.push_job("p1", StopJob(room_name="a", reason=cast(EndReason, "bored")))

    with pytest.raises(InvalidRecord, match="bored"):
        await store.pop_job("p1", 1)
    assert await store.pop_job("p1", 0.1) is None, "the refused job must not come back"


async def test_sessions_are_listed_while_live_and_readable_after_they_end(store: StateStore) -> None:
    first, second = session("room-1"), session("room-2", "p2")
    await store.save_session(first)
    await store.save_session(second)
    assert await store.live_sessions() == [first, second]

    await store.end_session(ended(first), 60)

    assert await store.live_sessions() == [second]
    assert await store.session("room-1") == ended(first)


async def test_transcripts_keep_order_and_they_and_ended_sessions_expire_after_retention(
    store: StateStore, clock: VirtualClock
) -> None:
    lines = [TranscriptLine("agent", "hello", 1.0), TranscriptLine("user", "hi", 2.0, {"e2e_latency": 0.5})]
    for line in lines:
        await store.append("room-1", line)

    assert await store.lines("room-1") == lines
    assert await store.lines("room-2") is None
    await store.close("room-1", 1)
    await store.end_session(ended(session("room-1")), 1)
    clock.advance(1.3)
    if isinstance(store, RedisStore):
        # Retention is Redis's own key expiry, in real time; only leases and heartbeats follow the clock.
        await asyncio.sleep(1.3)
    assert await store.lines("room-1") is None
    assert await store.session("room-1") is None


async def test_a_transcript_keeps_its_newest_lines_up_to_the_limit(store: StateStore) -> None:
    lines = [TranscriptLine("user", f"line {n}", float(n)) for n in range(MAX_LINES + 3)]
    for line in lines:
        await store.append("room-1", line)

    assert await store.lines("room-1") == lines[-MAX_LINES:]


async def test_a_transcript_line_retried_after_trimming_is_still_written_once(
    redis_server: EmbeddedRedis,
) -> None:
    """The ids of dropped lines go with them, so the id set stays as bounded as the stream."""
    async with Redis.from_url(redis_server.url) as admin:
        await admin.flushall()
        store = RedisStore(redis_server.url, max_transcript_lines=MAX_LINES)
        for n in range(MAX_LINES * 3):
            await store.append("room-1", TranscriptLine("user", f"line {n}", float(n)))
        await store.aclose()

        assert await admin.xlen("voicebot:tx:room-1") == MAX_LINES
        assert await admin.scard("voicebot:txids:room-1") == MAX_LINES


async def keys_without_expiry(admin: Redis) -> list[str]:
    keys = sorted([key.decode() async for key in admin.scan_iter("voicebot:*")])
    return [key for key in keys if await admin.pttl(key) == -1]


async def test_redis_keeps_no_key_without_an_expiry_after_a_session_and_a_dead_process(
    redis_server: EmbeddedRedis, clock: VirtualClock
) -> None:
    """room:<name>, a live transcript, and a dead process's job list, rooms and capacity stayed for ever."""
    async with Redis.from_url(redis_server.url) as admin:
        await admin.flushall()
        store = RedisStore(redis_server.url, clock=clock)
        await store.heartbeat("p1", 2, 5)
        await store.heartbeat("dead", 2, TTL)
        # A whole session on p1: room created, placed, recorded, spoken in, renewed, ended, released.
        await store.place("room-1", "p1", 5)
        await store.save_room(RoomRecord("room-1", "faq", "p1", 1.0))
        await store.save_session(session("room-1"))
        await store.append("room-1", TranscriptLine("agent", "hello", 1.0))
        await store.renew("room-1", "p1", 5)
        assert await keys_without_expiry(admin) == [], "not even while the session lives"
        await store.first_delivery("EV_1", 60)
        await store.end_session(ended(session("room-1")), 60)
        await store.close("room-1", 60)
        await store.release("room-1", "p1")
        # A process that holds a room and has work queued, then stops beating.
        await store.place("room-2", "dead", TTL)
        await store.push_job("dead", StopJob(room_name="room-2"))
        clock.advance(TTL + 0.1)

        await store.heartbeat("p1", 2, 5)

        assert await keys_without_expiry(admin) == []
        keys = [key.decode() async for key in admin.scan_iter("voicebot:*")]
        assert "voicebot:jobs:dead" not in keys
        assert "voicebot:owned:dead" not in keys
        assert await admin.hkeys("voicebot:cap") == [b"p1"]
        assert await admin.ttl("voicebot:room:room-1") <= 60
        await store.aclose()


async def test_rooms_created_and_webhook_events_are_remembered(store: StateStore) -> None:
    await store.save_room(RoomRecord("room-1", "faq", "p1", 1.0))

    assert await store.room("room-1") == RoomRecord("room-1", "faq", "p1", 1.0)
    assert await store.room("room-2") is None
    assert await store.first_delivery("EV_1", 60)
    assert not await store.first_delivery("EV_1", 60)


async def test_redis_writes_during_an_outage_are_kept_and_written_once_when_it_returns(
    tmp_path: Path,
) -> None:
    """Transcript lines and session records survive a Redis restart: buffered, then flushed, never doubled."""
    redis_server = EmbeddedRedis(free_port(), data_dir=tmp_path)
    await redis_server.start()
    store = RedisStore(redis_server.url, timeout_s=0.5)
    await store.append("room-1", TranscriptLine("agent", "before", 1.0))
    await redis_server.stop()

    await store.append("room-1", TranscriptLine("user", "during one", 2.0))
    await store.append("room-1", TranscriptLine("agent", "during two", 3.0))
    await store.save_session(session("room-1"))
    with pytest.raises(StateUnavailable):
        await store.place("room-2", "p1", 5)
    assert store.pending_writes == 3

    await redis_server.start()
    await eventually(lambda: store.pending_writes == 0, 10, "the buffered writes to be flushed")

    lines = await store.lines("room-1")
    assert lines is not None
    assert [line.text for line in lines] == ["before", "during one", "during two"]
    assert [s.room_name for s in await store.live_sessions()] == ["room-1"]
    await store.aclose()
    await redis_server.stop()


async def test_a_pool_holds_at_most_its_limit_until_a_place_is_freed_or_lapses(
    store: StateStore, clock: VirtualClock
) -> None:
    assert await store.take_slot("calls", "room-1", 2, 60)
    assert await store.take_slot("calls", "room-2", 2, 60)
    assert await store.take_slot("calls", "room-1", 2, 60), "taking a place already held is a no-op"
    assert not await store.take_slot("calls", "room-3", 2, 60)
    assert await store.take_slot("other-pool", "room-3", 2, 60)

    await store.free_slot("calls", "room-1")
    assert await store.take_slot("calls", "room-3", 2, 60)
    assert not await store.take_slot("calls", "room-4", 2, 60)

    clock.advance(61)
    assert await store.take_slot("calls", "room-4", 2, 60), "places nobody freed lapse after their ttl"


async def test_a_rate_counts_up_to_its_limit_per_key_and_says_when_the_next_fits(
    store: StateStore, clock: VirtualClock
) -> None:
    assert await store.hit_rate("key-a", 2, 3600) is None
    clock.advance(600)
    assert await store.hit_rate("key-a", 2, 3600) is None

    wait = await store.hit_rate("key-a", 2, 3600)

    assert wait == pytest.approx(3000, abs=0.01)
    assert await store.hit_rate("key-b", 2, 3600) is None, "each key has its own count"
    clock.advance(3001)
    assert await store.hit_rate("key-a", 2, 3600) is None, "the oldest call left the window"
    assert await store.hit_rate("key-a", 2, 3600) is not None, "a refusal is not counted, the second is"
