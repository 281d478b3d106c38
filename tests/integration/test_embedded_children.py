"""The embedded programs follow voicebot: they die with it, and a Ctrl-C reaches only voicebot."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tests.servers import free_livekit_ports
from tests.voicebot_process import (
    launch_voicebot,
    process_alive,
    serve_env,
    sip_serve_env,
    start_voicebot,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.mark.sip
async def test_no_embedded_program_outlives_a_voicebot_killed_with_sigkill() -> None:
    """Regression: a voicebot killed with -9 left livekit-server, livekit-sip and redis-server running."""
    bot = await start_voicebot(**sip_serve_env(rtp_base=26000))
    try:
        _, health = await bot.request("GET", "/api/livekit/health")
        pids = {name: child["pid"] for name, child in health["embedded"].items()}
        assert set(pids) == {"redis-server", "livekit-server", "livekit-sip"}
        assert all(process_alive(pid) for pid in pids.values()), pids

        bot.kill()
        await bot.process.wait()

        async def all_gone() -> bool:
            return not any(process_alive(pid) for pid in pids.values())

        await wait_until(all_gone, 10, f"the embedded programs {pids} to die with voicebot")
    finally:
        await bot.stop()


async def test_ctrl_c_to_the_terminals_group_closes_rooms_before_livekit_stops() -> None:
    """Regression: Ctrl-C reached livekit-server too, which began to stop before voicebot closed the rooms."""
    bot = await launch_voicebot(serve_env(free_livekit_ports()), new_session=True)
    try:
        status, room = await bot.request("POST", "/api/livekit/create-room", {"agent_id": "agent-123"})
        assert status == 200, room

        # What a terminal does on Ctrl-C: SIGINT to every process of its foreground group.
        os.killpg(bot.process.pid, signal.SIGINT)

        assert await asyncio.wait_for(bot.process.wait(), 30) == 0
        events = bot.log_events()
        names = [e["event"] for e in events]
        assert "rooms_not_closed" not in names, [e for e in events if e["event"] == "rooms_not_closed"]
        (closed,) = (i for i, e in enumerate(events) if e["event"] == "rooms_closed")
        (stopped,) = (
            i
            for i, e in enumerate(events)
            if e["event"] == "process_stopped" and e["program"] == "livekit-server"
        )
        assert events[closed]["rooms"] == 1
        assert closed < stopped, "rooms should close before livekit-server stops"
        assert events[stopped]["returncode"] == 0
    finally:
        await bot.stop()
