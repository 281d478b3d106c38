"""A process whose event loop runs late, whose machine's cores are busy, or whose offline models' jobs queue,
refuses new sessions with 503 at_capacity, and admits again after."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests.conftest import changed, eventually
from tests.integration.test_session_limits import ScriptedPipelines
from tests.integration.test_shutdown_under_load import busy_processes
from voicebot.api.app_keys import SUPERVISOR
from voicebot.app import create_app
from voicebot.config import Settings
from voicebot.livekit import LiveKitGateway
from voicebot.providers.pools import MeasuredPool

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]


class LoopBurner:
    """Blocks the running loop for `block_s` in a callback, over and over, until stopped: what a session
    doing CPU work on the loop, or too many sessions, would do to everyone else."""

    def __init__(self, block_s: float = 0.2, every_s: float = 0.02) -> None:
        self._block_s = block_s
        self._every_s = every_s
        self._handle: asyncio.TimerHandle | None = None
        self.burns = 0

    def start(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(self._every_s, self._burn)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _burn(self) -> None:
        time.sleep(self._block_s)  # a plain callback, not a coroutine: it blocks the loop on purpose
        self.burns += 1
        self._handle = asyncio.get_running_loop().call_later(self._every_s, self._burn)


async def capacity(client: Client) -> dict[str, Any]:
    response = await client.get("/api/livekit/health")
    report: dict[str, Any] = await response.json()
    return dict(report["capacity"])


async def refused_for(client: Client, reason: str, what: str) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Once the capacity report refuses for `reason`, a create-room: its status and body, and the report."""

    async def refusing() -> bool:
        return bool((await capacity(client))["refusing_because"] == reason)

    await eventually(refusing, 20, what)
    refused = await client.post("/api/livekit/create-room", json={"agent_id": "agent-123"})
    return refused.status, await refused.json(), await capacity(client)


async def assert_admits_again(client: Client, what: str) -> None:
    """Admission recovers, and a create-room then starts its agent."""

    async def admitting() -> bool:
        return (await capacity(client))["admitting"] is True

    await eventually(admitting, 20, what)
    created = await client.post("/api/livekit/create-room", json={"agent_id": "agent-123"})
    assert created.status == 200, await created.text()
    room = (await created.json())["room_name"]
    assert client.app[SUPERVISOR].session(room) is not None
    await client.delete(f"/api/sessions/{room}")


async def test_a_slow_loop_refuses_create_room_with_at_capacity_and_admits_again_once_it_recovers(
    aiohttp_client: AiohttpClient, settings: Settings, livekit: LiveKitGateway
) -> None:
    quick = changed(settings, "sessions", admission_window_s=2.0, admission_max_loop_lag_ms=50.0)
    client = await aiohttp_client(create_app(quick, pipelines=ScriptedPipelines()))
    supervisor = client.app[SUPERVISOR]
    rooms_before = set(await livekit.room_names())
    burner = LoopBurner()
    burner.start()
    try:

        async def refusing() -> bool:
            return (await capacity(client))["admitting"] is False

        await eventually(refusing, 20, "the burnt loop to stop admitting")
        refused = await client.post("/api/livekit/create-room", json={"agent_id": "agent-123"})
        refused_body = await refused.json()
        listed = await client.get("/api/sessions")
        listed_body = await listed.json()
    finally:
        burner.stop()

    assert burner.burns > 0
    assert refused.status == 503
    assert refused_body["error"]["code"] == "at_capacity"
    assert refused.headers["Retry-After"] == str(quick.sessions.retry_after_s)
    assert set(await livekit.room_names()) - rooms_before == set(), "a refused create-room made a room"
    assert supervisor.live() == []
    assert listed_body["capacity"]["admitting"] is False
    assert listed_body["capacity"]["refusing_because"] == "loop_lag"
    assert listed_body["capacity"]["loop_lag_ms"] > 50.0
    assert listed_body["capacity"]["refused_overloaded"] == 1

    await assert_admits_again(client, "admission to recover once the loop is free")


async def test_offline_models_queueing_for_a_thread_refuse_create_room_and_admit_again_once_they_run(
    aiohttp_client: AiohttpClient, settings: Settings, livekit: LiveKitGateway
) -> None:
    """The loop can be idle while every call's replies wait for a model thread: that refuses too."""
    quick = changed(settings, "sessions", admission_window_s=2.0, admission_max_model_wait_ms=200.0)
    client = await aiohttp_client(create_app(quick, pipelines=ScriptedPipelines()))
    rooms_before = set(await livekit.room_names())
    # A pool like Piper's and Moonshine's, recording into the same process-wide waits admission reads: its
    # one thread is busy, so the next inference queues behind it.
    pool = MeasuredPool(1, "test-model")
    release = threading.Event()
    try:
        busy = pool.submit(release.wait, 30)
        queued = pool.submit(lambda: "inferred")
        status, body, report = await refused_for(client, "model_wait", "the queued inference to refuse")
    finally:
        release.set()
        pool.shutdown(wait=False)

    assert (status, body["error"]["code"]) == (503, "at_capacity")
    assert set(await livekit.room_names()) - rooms_before == set(), "a refused create-room made a room"
    assert client.app[SUPERVISOR].live() == []
    assert report["model_wait_ms"] > 200.0
    assert await asyncio.wrap_future(busy) is True
    assert await asyncio.wrap_future(queued) == "inferred"
    await assert_admits_again(client, "admission to recover once the models' jobs run")


async def test_a_machine_kept_busy_by_other_programs_refuses_create_room_and_admits_again_once_free(
    aiohttp_client: AiohttpClient, settings: Settings, livekit: LiveKitGateway
) -> None:
    """voicebot's loop may be idle while the cores are taken: every call's audio work would run late."""
    quick = changed(settings, "sessions", admission_window_s=2.0, admission_max_machine_cpu=0.8)
    client = await aiohttp_client(create_app(quick, pipelines=ScriptedPipelines()))
    rooms_before = set(await livekit.room_names())
    spinners = await busy_processes(os.cpu_count() or 1)
    try:
        status, body, report = await refused_for(client, "machine_cpu", "the busy cores to refuse")
    finally:
        for spinner in spinners:
            spinner.kill()
        await asyncio.gather(*(spinner.wait() for spinner in spinners))

    assert (status, body["error"]["code"]) == (503, "at_capacity")
    assert set(await livekit.room_names()) - rooms_before == set(), "a refused create-room made a room"
    assert report["machine_cpu"] > 0.8
    await assert_admits_again(client, "admission to recover once the cores are free")
