"""Several voicebot processes on one Redis and a multi-node LiveKit: shared state, one limit, failover."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import eventually
from tests.servers import API_KEY, API_SECRET, SharedState
from tests.voice_client import STATE_ATTRIBUTE, VoiceClient, espeak
from tests.voicebot_process import VoicebotProcess, start_voicebot
from voicebot.store.redis import RedisStore

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

Start = Callable[..., Awaitable[list[VoicebotProcess]]]


@pytest.fixture
async def voicebots(shared_state: SharedState) -> AsyncIterator[Start]:
    """Starts voicebot processes on the shared Redis and LiveKit; stops them after the test."""
    started: list[VoicebotProcess] = []

    async def start(count: int, max_concurrent: int = 5) -> list[VoicebotProcess]:
        env = {
            "LIVEKIT_URL": shared_state.livekit.url,
            "LIVEKIT_API_KEY": API_KEY,
            "LIVEKIT_API_SECRET": API_SECRET,
            "VOICEBOT_REDIS_URL": shared_state.redis.url,
            "VOICEBOT_SESSIONS_MAX_CONCURRENT": str(max_concurrent),
        }
        processes = list(await asyncio.gather(*(start_voicebot(**env) for _ in range(count))))
        started.extend(processes)
        return processes

    yield start
    await asyncio.gather(*(p.stop() for p in started))


async def create_room(process: VoicebotProcess, agent_id: str = "agent-123") -> tuple[int, Any]:
    return await process.request("POST", "/api/livekit/create-room", {"agent_id": agent_id})


async def transcript(process: VoicebotProcess, room_name: str) -> list[tuple[str, str, float]]:
    status, body = await process.request("GET", f"/api/sessions/{room_name}/transcript")
    assert status == 200, body
    return [(line["speaker"], line["text"], line["at"]) for line in body["lines"]]


async def test_a_room_made_by_one_process_is_listed_and_transcribed_by_another(voicebots: Start) -> None:
    a, b = await voicebots(2)
    status, room = await create_room(a)
    assert status == 200
    person = VoiceClient(room["livekit_url"], room["access_token"])
    await person.connect()
    try:
        await person.wait_for_greeting()

        _, listed = await b.request("GET", "/api/sessions")
        (session,) = [s for s in listed["sessions"] if s["room_name"] == room["room_name"]]
        _, from_a = await a.request("GET", "/api/sessions")
        assert session["agent_id"] == "agent-123"
        assert session["process_id"] in {s["process_id"] for s in from_a["sessions"]}
        lines_b = await transcript(b, room["room_name"])
        assert lines_b == await transcript(a, room["room_name"])
        assert lines_b[0][:2] == ("agent", "Hello, you are through to reception. How can I help?")
    finally:
        await person.close()


async def test_ten_concurrent_create_rooms_over_three_processes_respect_the_cluster_limit(
    voicebots: Start,
) -> None:
    processes = await voicebots(3, max_concurrent=2)

    results = await asyncio.gather(*(create_room(processes[i % 3], "faq") for i in range(10)))

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 6 + [503] * 4
    assert all(body["error"]["code"] == "at_capacity" for status, body in results if status == 503)

    async def six_live() -> bool:
        _, listed = await processes[0].request("GET", "/api/sessions")
        return len(listed["sessions"]) == 6

    await eventually(six_live, 30, "six sessions to run")
    _, listed = await processes[1].request("GET", "/api/sessions")
    per_process: dict[str, int] = {}
    for session in listed["sessions"]:
        per_process[session["process_id"]] = per_process.get(session["process_id"], 0) + 1
    assert sorted(per_process.values()) == [2, 2, 2]


async def test_when_the_owner_is_killed_another_process_takes_over_with_the_transcript(
    voicebots: Start,
) -> None:
    a, b = await voicebots(2)
    status, room = await create_room(a)
    assert status == 200
    room_name = room["room_name"]
    person = VoiceClient(room["livekit_url"], room["access_token"])
    await person.connect()
    try:
        await person.wait_for_greeting()
        question, rate = await espeak("what are your opening hours")
        await person.say(question, rate)
        await person.wait_for(lambda: any("nine" in t for t in person.finals(agent=True)), 30, "the reply")
        await person.wait_until_listening(20, "the reply to end")
        before = await transcript(b, room_name)
        first_agent = person.agents()[0].identity

        killed_at = time.monotonic()
        a.kill()
        await person.wait_for(
            lambda: any(p.identity != first_agent for p in person.agents()), 30, "another process's agent"
        )
        takeover_s = time.monotonic() - killed_at
        print(f"\ncluster: an agent was back in the room {takeover_s:.2f} s after kill -9")
        # The microphone's one "subscribed" event came for the first agent; the new one listens once its
        # own state says so. Words said before that reach nobody, as they would on a real call.
        await person.wait_for(
            lambda: any(
                p.identity != first_agent and p.attributes.get(STATE_ATTRIBUTE) == "listening"
                for p in person.agents()
            ),
            30,
            "the new agent to listen",
        )

        message, rate = await espeak("where are you")
        await person.say(message, rate)
        await person.wait_for(
            lambda: any("High Street" in t for t in person.finals(agent=True)), 30, "a reply"
        )
        await person.wait_until_listening(20, "the reply to end")
    finally:
        await person.close()

    after = await transcript(b, room_name)
    assert after[: len(before)] == before, "the lines from before the crash are kept, in order"
    assert len(set(after)) == len(after), "no line is written twice"
    texts = [text for _, text, _ in after]
    assert texts.count("Hello, you are through to reception. How can I help?") == 1, "no second greeting"
    # The new agent heard the caller and answered. pocketsphinx's phrase grammar may end the phrase a word
    # early under load (a clean clone's run wrote "where are"); the rule answers it all the same.
    assert texts[-1] == "We are at twelve High Street, on the second floor."
    assert texts[-2] in ("where are you", "where are"), texts
    assert [at for _, _, at in after] == sorted(at for _, _, at in after)


async def test_a_redis_restart_mid_conversation_loses_and_doubles_nothing(
    voicebots: Start, shared_state: SharedState
) -> None:
    (bot,) = await voicebots(1)
    status, room = await create_room(bot)
    assert status == 200
    person = VoiceClient(room["livekit_url"], room["access_token"])
    await person.connect()
    try:
        await person.wait_for_greeting()

        await shared_state.redis.stop()
        _, health = await bot.request("GET", "/api/livekit/health")
        ready, _ = await bot.request("GET", "/readyz")
        refused, body = await create_room(bot)
        question, rate = await espeak("what are your opening hours")
        await person.say(question, rate)
        await person.wait_for(lambda: any("nine" in t for t in person.finals(agent=True)), 30, "the reply")
        await person.wait_until_listening(20, "the reply to end")
        await shared_state.redis.start()

        async def healthy() -> bool:
            _, report = await bot.request("GET", "/api/livekit/health")
            return bool(report["redis"].get("reachable"))

        await eventually(healthy, 20, "health to come back")
    finally:
        await person.close()

    assert health["redis"]["reachable"] is False
    assert health["status"] == "degraded"
    assert health["cluster"]["state"] == "redis"
    assert ready == 503
    assert refused == 503
    assert body["error"]["code"] == "state_unavailable"

    async def transcript_complete() -> bool:
        return len(await transcript(bot, room["room_name"])) >= 3

    await eventually(transcript_complete, 20, "the buffered lines to arrive")
    texts = [text for _, text, _ in await transcript(bot, room["room_name"])]
    assert texts[:3] == [
        "Hello, you are through to reception. How can I help?",
        "what are your opening hours",
        "We are open from nine in the morning until five in the evening, Monday to Friday.",
    ]
    assert len(texts) == len(set(texts))


async def test_a_room_sent_to_a_process_that_dies_before_starting_it_is_taken_over(
    voicebots: Start, shared_state: SharedState
) -> None:
    (a,) = await voicebots(1, max_concurrent=1)
    status, _ = await create_room(a)
    assert status == 200
    # A process that announces room for five sessions and dies before it reads its job queue.
    ghost = RedisStore(shared_state.redis.url)
    await ghost.heartbeat("ghost", 5, 1.5)
    status, room = await create_room(a)
    await ghost.aclose()
    assert status == 200
    _, listed = await a.request("GET", "/api/sessions")
    (sent,) = [s for s in listed["sessions"] if s["room_name"] == room["room_name"]]
    assert (sent["process_id"], sent["state"]) == ("ghost", "starting")
    person = VoiceClient(room["livekit_url"], room["access_token"])
    await person.connect()
    try:
        (c,) = await voicebots(1, max_concurrent=2)

        await person.wait_for(lambda: bool(person.agents()), 30, "a live process to take the room over")
        await person.wait_for_greeting()
    finally:
        await person.close()
    _, listed = await c.request("GET", "/api/sessions")
    runs = {s["room_name"]: s["process_id"] for s in listed["sessions"]}
    _, c_health = await c.request("GET", "/api/livekit/health")
    assert runs.get(room["room_name"]) == c_health["cluster"]["process_id"]
