"""An embedded program that dies is restarted with what depends on it, health shows it, calls work again."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from tests.servers import free_livekit_ports
from tests.voice_client import VoiceClient
from tests.voicebot_process import VoicebotProcess, serve_env, sip_serve_env, start_voicebot, wait_until

pytestmark = pytest.mark.integration


async def health(bot: VoicebotProcess) -> dict[str, Any]:
    _, report = await bot.request("GET", "/api/livekit/health")
    assert isinstance(report, dict)
    return report


async def test_a_killed_livekit_server_is_restarted_and_the_next_call_hears_the_agent() -> None:
    bot = await start_voicebot(**serve_env(free_livekit_ports()))
    person: VoiceClient | None = None
    try:
        before = (await health(bot))["embedded"]["livekit-server"]
        assert before["running"] is True
        assert (before["restarts"], before["last_exit_code"]) == (0, None)

        os.kill(before["pid"], signal.SIGKILL)

        async def degraded() -> bool:
            report = await health(bot)
            return bool(
                report["status"] == "degraded" and not report["embedded"]["livekit-server"]["running"]
            )

        async def recovered() -> bool:
            report = await health(bot)
            return bool(report["status"] == "ok" and report["embedded"]["livekit-server"]["restarts"] == 1)

        await wait_until(degraded, 10, "health to report the killed livekit-server as down and degraded")
        await wait_until(recovered, 30, "health to report livekit-server restarted and ok")
        after = (await health(bot))["embedded"]["livekit-server"]
        assert after["running"] is True
        assert after["pid"] != before["pid"]
        assert after["last_exit_code"] == -signal.SIGKILL

        status, room = await bot.request("POST", "/api/livekit/create-room", {"agent_id": "agent-123"})
        assert status == 200, room
        person = VoiceClient(room["livekit_url"], room["access_token"])
        await person.connect()
        await person.wait_for_greeting()

        events = [e["event"] for e in bot.log_events() if e.get("program") == "livekit-server"]
        assert "embedded_program_exited" in events
        assert "embedded_program_restarted" in events
    finally:
        if person is not None:
            await person.close()
        await bot.stop()


@pytest.mark.sip
async def test_a_killed_redis_server_is_restarted_with_what_runs_on_it_and_sip_provisioned_again() -> None:
    bot = await start_voicebot(**sip_serve_env(rtp_base=28000))
    try:
        before = (await health(bot))["embedded"]
        assert set(before) == {"redis-server", "livekit-server", "livekit-sip"}

        os.kill(before["redis-server"]["pid"], signal.SIGKILL)

        async def recovered() -> bool:
            report = await health(bot)
            restarts = {name: child["restarts"] for name, child in report["embedded"].items()}
            return report["status"] == "ok" and set(restarts.values()) == {1}

        await wait_until(
            recovered, 60, "redis-server, livekit-server and livekit-sip restarted and health ok"
        )
        after = (await health(bot))["embedded"]
        assert after["redis-server"]["last_exit_code"] == -signal.SIGKILL
        assert all(after[name]["pid"] != before[name]["pid"] for name in before)

        async def provisioned_twice() -> bool:
            return [e["event"] for e in bot.log_events()].count("sip_provisioned") == 2

        # The fresh Redis holds no trunks: the second run creates them again.
        await wait_until(provisioned_twice, 10, "SIP to be provisioned again after the restart")
        (_, again) = [e for e in bot.log_events() if e["event"] == "sip_provisioned"]
        assert again["created"], again
    finally:
        await bot.stop()
