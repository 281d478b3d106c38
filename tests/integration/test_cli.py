"""The command line: `token`, and `serve` with its own embedded livekit-server."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt
import pytest
from livekit import api, rtc
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError

from tests.servers import API_KEY, API_SECRET, free_livekit_ports, free_port, free_sip_port
from tests.sipp import RtpSink, finished, start_sipp, uac_pcap_scenario
from tests.voice_client import VoiceClient
from tests.voicebot_process import ROOT, cli_env, serve_env, start_voicebot
from voicebot.embedded.livekit_server import LiveKitServerPorts

pytestmark = pytest.mark.integration


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voicebot",
        *args,
        cwd=ROOT,
        env=env or cli_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_token_command_prints_a_join_token_for_the_room() -> None:
    env = cli_env(LIVEKIT_API_KEY=API_KEY, LIVEKIT_API_SECRET=API_SECRET)

    code, out, _ = await run_cli("token", "--room", "lobby", "--identity", "alice", env=env)

    assert code == 0
    claims = api.TokenVerifier(API_KEY, API_SECRET).verify(out.strip())
    assert claims.identity == "alice"
    assert claims.video is not None
    assert claims.video.room == "lobby"
    assert claims.video.room_join
    assert not claims.video.room_admin
    assert claims.video.can_publish_sources == ["microphone"]


async def test_token_command_never_signs_a_token_longer_than_token_ttl_s() -> None:
    env = cli_env(LIVEKIT_API_KEY=API_KEY, LIVEKIT_API_SECRET=API_SECRET, VOICEBOT_LIVEKIT_TOKEN_TTL_S="600")
    before = int(time.time())

    code, long, _ = await run_cli("token", "--room", "lobby", "--identity", "a", "--ttl", "86400", env=env)
    _, short, _ = await run_cli("token", "--room", "lobby", "--identity", "a", "--ttl", "60", env=env)

    assert code == 0
    long_exp = jwt.decode(long.strip(), options={"verify_signature": False})["exp"]
    short_exp = jwt.decode(short.strip(), options={"verify_signature": False})["exp"]
    assert before + 600 <= long_exp <= int(time.time()) + 600
    assert short_exp <= int(time.time()) + 60


async def test_a_bad_config_stops_startup_with_one_line_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text((ROOT / "config.toml").read_text().replace("port = 8001", 'port = "eighty"'))

    code, out, err = await run_cli("serve", "--config", str(config))

    assert code == 2
    assert out == ""
    (line,) = err.strip().splitlines()
    assert "server.port" in line
    assert "must be an integer" in line


async def test_a_bad_environment_override_names_the_variable() -> None:
    code, _, err = await run_cli("serve", env=cli_env(VOICEBOT_SERVER_PORT="http"))

    assert code == 2
    assert "VOICEBOT_SERVER_PORT" in err


@pytest.fixture
async def served() -> AsyncIterator[tuple[asyncio.subprocess.Process, int, LiveKitServerPorts]]:
    """`python -m voicebot serve` on free ports, with no LiveKit URL: it runs its own livekit-server."""
    lk_ports = free_livekit_ports()
    bot = await start_voicebot(**serve_env(lk_ports))
    process, port = bot.process, bot.port
    yield process, port, lk_ports
    if process.returncode is None:
        process.kill()
        await process.wait()


async def port_is_open(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
async def test_serve_runs_its_own_livekit_and_stops_it_on_exit(
    served: tuple[asyncio.subprocess.Process, int, LiveKitServerPorts], stop_signal: signal.Signals
) -> None:
    process, port, lk_ports = served
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{port}/api/livekit/create-room",
            data='{"agent_id":"agent-123"}',
            headers={"Content-Type": "application/json"},
        ) as response:
            assert response.status == 200
            body = await response.json()
        async with session.get(f"http://127.0.0.1:{port}/api/livekit/health") as response:
            health = await response.json()
    assert body["livekit_url"] == f"ws://127.0.0.1:{lk_ports.http}"
    assert health["livekit"]["embedded"] is True
    room = rtc.Room()
    await room.connect(body["livekit_url"], body["access_token"])
    assert room.name == body["room_name"]
    await room.disconnect()

    process.send_signal(stop_signal)

    assert await asyncio.wait_for(process.wait(), 30) == 0
    assert not await port_is_open(lk_ports.http), "the embedded livekit-server outlived voicebot"
    assert not await port_is_open(port)


async def test_sigterm_lets_live_sessions_leave_before_livekit_stops(
    served: tuple[asyncio.subprocess.Process, int, LiveKitServerPorts],
) -> None:
    process, port, _ = served
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{port}/api/livekit/create-room", json={"agent_id": "agent-123"}
        ) as response,
    ):
        room = await response.json()
    person = VoiceClient(room["livekit_url"], room["access_token"])
    order: list[str] = []
    person.room.on("participant_disconnected", lambda p: order.append(f"left:{p.identity.split('-')[0]}"))
    person.room.on("disconnected", lambda *_: order.append("room_closed"))
    await person.connect()
    await person.wait_for_greeting()

    process.send_signal(signal.SIGTERM)

    assert await asyncio.wait_for(process.wait(), 30) == 0
    await person.wait_for(lambda: "room_closed" in order, 10, "the room to close")
    assert order == ["left:agent", "room_closed"], "the agent should leave before LiveKit shuts down"
    await person.close()


@pytest.mark.sip
async def test_serve_with_sip_on_runs_redis_and_livekit_sip_and_takes_a_phone_call(tmp_path: Path) -> None:
    lk_ports = free_livekit_ports()
    sip_port, health_port, redis_port = free_sip_port(), free_port(), free_port()
    rtp_start = 24000 + (os.getpid() % 100) * 50
    env = serve_env(lk_ports) | {
        "VOICEBOT_SIP_ENABLED": "true",
        "VOICEBOT_SIP_PORT": str(sip_port),
        "VOICEBOT_SIP_HEALTH_PORT": str(health_port),
        "VOICEBOT_SIP_REDIS_PORT": str(redis_port),
        "VOICEBOT_SIP_RTP_PORT_START": str(rtp_start),
        "VOICEBOT_SIP_RTP_PORT_END": str(rtp_start + 49),
    }
    bot = await start_voicebot(**env)
    process, port = bot.process, bot.port
    sink = RtpSink()
    await sink.open()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/api/livekit/health") as response,
        ):
            health = await response.json()
        assert health["sip"]["reachable"] is True, health["sip"]
        assert health["redis"]["reachable"] is True
        # voicebot, livekit-server and livekit-sip have its password; a stranger on loopback does not.
        async with Redis(port=redis_port, protocol=2) as stranger:
            with pytest.raises(AuthenticationError, match="Authentication required"):  # NOAUTH
                await stranger.get("anything")
        redis_pid = health["embedded"]["redis-server"]["pid"]
        argv = await asyncio.to_thread(Path(f"/proc/{redis_pid}/cmdline").read_bytes)
        assert b"requirepass" not in argv, "the password must not be visible to `ps`"

        # The shipped config routes +15550100 from 127.0.0.1 to Reception.
        sipp = await start_sipp(
            tmp_path, uac_pcap_scenario(tmp_path, sink.port), "-s", "+15550100", f"127.0.0.1:{sip_port}"
        )
        run = await finished(tmp_path, sipp)
        assert run.returncode == 0, f"sipp: {run.errors or run.output[-2000:]}"
        assert sink.loud_seconds() > 1.0

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        for child_port in (lk_ports.http, health_port, redis_port):
            assert not await port_is_open(child_port), f"a child on port {child_port} outlived voicebot"
    finally:
        sink.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
