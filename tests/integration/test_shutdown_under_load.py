"""`serve` stops on SIGTERM or SIGINT within its drain timeout, even with the machine and its loop busy."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import tomllib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from livekit.agents import utils

from tests.conftest import eventually
from tests.integration.test_cli import port_is_open
from tests.servers import free_livekit_ports
from tests.voicebot_process import ROOT, VoicebotProcess, serve_env, start_voicebot
from voicebot.livekit import LiveKitGateway
from voicebot.shutdown import exit_code_forced

pytestmark = pytest.mark.integration

DRAIN_S = 2.0
SESSIONS = 6
# The promise: drain_timeout_s plus the stop's margin (voicebot.__main__: HTTP 2 s + 6 s), plus slack for
# a test machine that the test itself saturates.
STOP_WITHIN_S = DRAIN_S + 8.0 + 4.0
WAKEUP_FD_WARNING = "wakeup fd"


async def busy_processes(count: int) -> list[asyncio.subprocess.Process]:
    """Programs that spin on a core each until killed."""
    return [
        await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass") for _ in range(count)
    ]


async def flood(base: str) -> None:
    """Keep voicebot's loop busy with requests until cancelled, as many sessions' traffic would."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

        async def one() -> None:
            while True:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{base}/api/sessions") as response:
                        await response.read()

        async with asyncio.TaskGroup() as group:
            for _ in range(20):
                group.create_task(one())


@pytest.fixture
async def loaded_voicebot() -> AsyncIterator[tuple[VoicebotProcess, int]]:
    """A `serve` with its own livekit-server and SESSIONS agents in their rooms; and the LiveKit port."""
    lk_ports = free_livekit_ports()
    bot = await start_voicebot(
        **serve_env(lk_ports), VOICEBOT_SESSIONS_DRAIN_TIMEOUT_S=str(DRAIN_S), VOICEBOT_LOGGING_LEVEL="debug"
    )
    livekit = tomllib.loads((ROOT / "config.toml").read_text())["livekit"]
    gateway = LiveKitGateway(f"ws://127.0.0.1:{lk_ports.http}", livekit["api_key"], livekit["api_secret"])
    try:
        rooms = []
        for _ in range(SESSIONS):
            status, body = await bot.request("POST", "/api/livekit/create-room", {"agent_id": "agent-123"})
            assert status == 200, body
            rooms.append(body["room_name"])

        async def agents_joined() -> bool:
            for room in rooms:
                identities = await gateway.participant_identities(room)
                if not any(i.startswith("agent-") for i in identities):
                    return False
            return True

        await eventually(agents_joined, 30, f"an agent in each of {SESSIONS} rooms")
        yield bot, lk_ports.http
    finally:
        await gateway.close()
        if bot.process.returncode is None:
            bot.kill()
            await bot.process.wait()
        await bot.stop()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
async def test_a_stop_signal_lands_and_ends_serve_in_time_on_a_saturated_machine(
    loaded_voicebot: tuple[VoicebotProcess, int], stop_signal: signal.Signals
) -> None:
    """Regression: with 30 sessions on 2 cores, `serve` did not exit within 30 s of SIGTERM and printed
    'Exception ignored when trying to write to the signal wakeup fd: BlockingIOError'."""
    bot, livekit_port = loaded_voicebot
    hogs = await busy_processes(2)
    flooding = asyncio.create_task(flood(bot.base))
    try:
        # Time, not an event: the load is the point, and it has to build up before the signal.
        await asyncio.sleep(1)
        bot.process.send_signal(stop_signal)
        sent_at = time.monotonic()
        try:
            code = await asyncio.wait_for(bot.process.wait(), STOP_WITHIN_S)
        except TimeoutError:
            pytest.fail(f"serve still ran {STOP_WITHIN_S:g}s after {stop_signal.name}")
        took_s = time.monotonic() - sent_at
    finally:
        await utils.aio.cancel_and_wait(flooding)
        for hog in hogs:
            hog.kill()
        await asyncio.gather(*(hog.wait() for hog in hogs))

    log_text = await asyncio.to_thread(bot.log_path.read_text, errors="replace")
    assert code in (0, exit_code_forced(stop_signal)), f"exit {code} after {took_s:.1f}s:\n{log_text[-3000:]}"
    assert WAKEUP_FD_WARNING not in log_text
    assert '"event": "stop_requested"' in log_text or code != 0, "the signal never reached the loop"
    assert not await port_is_open(livekit_port), "the embedded livekit-server outlived voicebot"
