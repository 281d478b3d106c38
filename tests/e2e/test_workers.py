"""`serve --workers 2`: two processes behind one port share one limit, survive kill -9 of either, and stop
together with their parent."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import eventually
from tests.servers import free_livekit_ports, free_port
from tests.voice_client import VoiceClient
from tests.voicebot_process import VoicebotProcess, launch_voicebot, process_alive, serve_env

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

Start = Callable[..., Awaitable[VoicebotProcess]]


def children_of(pid: int) -> set[int]:
    """The direct children of `pid` now: the workers, livekit-server and redis-server."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


def pid_of(process_id: str) -> int:
    """The pid inside a cluster process id, host-pid-xxxx (the host name may hold dashes)."""
    return int(process_id.rsplit("-", 2)[1])


@pytest.fixture
async def workers() -> AsyncIterator[Start]:
    """Starts `serve --workers 2` with its own livekit-server and redis-server; stops it after the test."""
    started: list[VoicebotProcess] = []

    async def start(**env: str) -> VoicebotProcess:
        own = serve_env(free_livekit_ports()) | {"VOICEBOT_SIP_REDIS_PORT": str(free_port()), **env}
        bot = await launch_voicebot(own, args=("--workers", "2"))
        started.append(bot)
        return bot

    yield start
    await asyncio.gather(*(bot.stop() for bot in started))


async def create_room(bot: VoicebotProcess, agent_id: str = "agent-123") -> tuple[int, Any]:
    return await bot.request("POST", "/api/livekit/create-room", {"agent_id": agent_id})


async def stop_leaves_no_children(bot: VoicebotProcess) -> None:
    children = children_of(bot.process.pid)
    bot.process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(bot.process.wait(), 40)
    assert code == 0
    assert [pid for pid in children if process_alive(pid)] == []


async def test_two_workers_share_one_exact_limit_and_both_run_sessions(workers: Start) -> None:
    # The count alone is under test: the measured admission is off, the machine is busy with eight starts.
    bot = await workers(
        VOICEBOT_SESSIONS_MAX_CONCURRENT="4",
        VOICEBOT_SESSIONS_ADMISSION_MAX_LOOP_LAG_MS="0",
        VOICEBOT_SESSIONS_ADMISSION_MAX_CPU="0",
        VOICEBOT_SESSIONS_ADMISSION_MAX_MODEL_WAIT_MS="0",
    )
    assert len(children_of(bot.process.pid)) == 4, "two workers, livekit-server and redis-server"

    results = await asyncio.gather(*(create_room(bot, "faq") for _ in range(8)))

    assert sorted(status for status, _ in results) == [200] * 4 + [503] * 4
    assert all(body["error"]["code"] == "at_capacity" for status, body in results if status == 503)

    async def four_live() -> bool:
        _, listed = await bot.request("GET", "/api/sessions")
        return len([s for s in listed["sessions"] if s["state"] != "starting"]) == 4

    await eventually(four_live, 30, "four sessions to run")
    _, listed = await bot.request("GET", "/api/sessions")
    per_process = Counter(session["process_id"] for session in listed["sessions"])
    assert sorted(per_process.values()) == [2, 2], "each worker runs its share, two"
    assert {pid_of(p) for p in per_process} <= children_of(bot.process.pid)
    assert listed["capacity"]["limit"] == 2
    await stop_leaves_no_children(bot)


async def test_a_worker_killed_mid_call_is_taken_over_by_the_other_and_restarted(workers: Start) -> None:
    bot = await workers()
    status, room = await create_room(bot)
    assert status == 200
    person = VoiceClient(room["livekit_url"], room["access_token"])
    await person.connect()
    try:
        await person.wait_for_greeting()
        first_agent = person.agents()[0].identity
        _, listed = await bot.request("GET", "/api/sessions")
        (session,) = [s for s in listed["sessions"] if s["room_name"] == room["room_name"]]
        victim = pid_of(session["process_id"])
        assert victim in children_of(bot.process.pid)

        os.kill(victim, signal.SIGKILL)
        await person.wait_for(
            lambda: any(p.identity != first_agent for p in person.agents()), 30, "the other worker's agent"
        )
        _, listed = await bot.request("GET", "/api/sessions")
        runs = {s["room_name"]: s["process_id"] for s in listed["sessions"]}
    finally:
        await person.close()

    assert pid_of(runs[room["room_name"]]) != victim

    def restarted() -> bool:
        return any(e.get("event") == "worker_restarted" for e in bot.log_events())

    await eventually(restarted, 30, "the parent to restart the killed worker")
    assert victim not in children_of(bot.process.pid)
    assert len(children_of(bot.process.pid)) == 4
    await stop_leaves_no_children(bot)
