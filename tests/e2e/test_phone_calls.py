"""Phone calls end to end: sipp <-> livekit-sip <-> livekit-server on Redis <-> voicebot, by webhook."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from livekit import api
from pytest_aiohttp import AiohttpServer

from tests.conftest import eventually, make_settings
from tests.servers import SipStack, free_port
from tests.sipp import RtpSink, callee_scenario, finished, hang_up_scenario, start_sipp, uac_pcap_scenario
from voicebot.api.app_keys import SUPERVISOR
from voicebot.app import create_app
from voicebot.config import InboundRoute, OutboundTrunk, RedisSettings, Settings
from voicebot.livekit import LiveKitGateway
from voicebot.sessions.supervisor import SessionSupervisor

pytestmark = [pytest.mark.integration, pytest.mark.sip]

NUMBER = "+15550100"
CALLEE = "+15550123"


def phone_settings(stack: SipStack, callee_port: int = 0) -> Settings:
    """Settings whose [sip] routes NUMBER to Reception and dials out through a sipp callee."""
    base = make_settings(stack.livekit.url)
    # sipp's pcap says something no rule knows, and a grammar-bound recogniser maps it to the nearest
    # phrase; that must not be "goodbye", or the agent would hang up before the test presses its keys.
    reception = base.agent("agent-123")
    assert reception is not None
    rules = tuple(replace(rule, phrases=()) if rule.end_call else rule for rule in reception.rules)
    agents = tuple(replace(a, rules=rules) if a is reception else a for a in base.agents)
    base = replace(base, agents=agents)
    route = InboundRoute("reception", "agent-123", numbers=(NUMBER,), allowed_addresses=("127.0.0.1/32",))
    trunks = (OutboundTrunk("test-pbx", f"127.0.0.1:{callee_port}", (NUMBER,), "udp"),) if callee_port else ()
    return replace(base, sip=replace(stack.sip_settings, inbound=(route,), outbound=trunks))


@pytest.fixture
async def livekit(sip_stack: SipStack) -> AsyncIterator[LiveKitGateway]:
    gateway = LiveKitGateway(sip_stack.livekit.url, "voicebot-test", "voicebot-test-secret-0123456789abcdef")
    yield gateway
    await gateway.close()


@pytest.fixture
async def rtp() -> AsyncIterator[RtpSink]:
    sink = RtpSink()
    await sink.open()
    yield sink
    sink.close()


async def serve(aiohttp_server: AiohttpServer, stack: SipStack, settings: Settings) -> TestServer:
    # LiveKit sends its webhooks to the port it was started with.
    return await aiohttp_server(create_app(settings), port=stack.webhook_port)


def phone_rooms(supervisor: SessionSupervisor) -> list[str]:
    return [s.room_name for s in supervisor.live() if s.room_name.startswith("voicebot_agent-123_")]


async def transcript(server: TestServer, room_name: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.make_url(f"/api/sessions/{room_name}/transcript")) as response,
    ):
        body: dict[str, Any] = await response.json()
        return list(body["lines"])


async def test_a_call_is_answered_greeted_hears_a_key_press_and_ends_with_bye(
    aiohttp_server: AiohttpServer, sip_stack: SipStack, livekit: LiveKitGateway, rtp: RtpSink, tmp_path: Path
) -> None:
    server = await serve(aiohttp_server, sip_stack, phone_settings(sip_stack))
    supervisor = server.app[SUPERVISOR]
    scenario = uac_pcap_scenario(tmp_path, rtp.port)

    sipp = await start_sipp(tmp_path, scenario, "-s", NUMBER, sip_stack.sip.address)

    await eventually(lambda: bool(phone_rooms(supervisor)), 30, "the webhook to start the agent")
    (room_name,) = phone_rooms(supervisor)
    participants = await livekit.participants(room_name)
    kinds = {p.identity: p.kind for p in participants}
    assert api.ParticipantInfo.Kind.SIP in kinds.values(), f"no phone caller among {kinds}"
    session = supervisor.session(room_name)
    assert session is not None
    run = await finished(tmp_path, sipp)

    assert run.returncode == 0, f"sipp: {run.errors or run.output[-2000:]}"
    await eventually(lambda: supervisor.session(room_name) is None, 15, "BYE to end the session")
    ended = await supervisor.state.session(room_name)
    assert ended is not None
    assert ended.end_reason == "participants_left"
    lines = await transcript(server, room_name)
    print(f"\nphone: {len(rtp.packets)} RTP packets, {rtp.loud_seconds():.2f} s loud; lines {lines}")
    assert lines[0]["speaker"] == "agent"
    assert lines[0]["text"] == session.agent.greeting, "the greeting comes first, before the caller speaks"
    said = [(line["speaker"], line["text"]) for line in lines]
    opening_hours = session.agent.rules[0]
    assert "1" in opening_hours.digits
    pressed = said.index(("user", "[pressed 1]"))
    assert ("agent", opening_hours.reply) in said[pressed:], "pressing 1 gets the opening hours, in full"
    assert len(rtp.packets) > 200, "the agent's audio never reached the caller"
    assert rtp.loud_seconds() > 1.0, "the caller got RTP, but only silence"
    assert f"session:{room_name}" not in {task.get_name() for task in asyncio.all_tasks()}


async def test_an_end_of_call_key_says_goodbye_and_hangs_up_the_caller(
    aiohttp_server: AiohttpServer, sip_stack: SipStack, rtp: RtpSink, tmp_path: Path
) -> None:
    server = await serve(aiohttp_server, sip_stack, phone_settings(sip_stack))
    supervisor = server.app[SUPERVISOR]
    scenario = hang_up_scenario(tmp_path, rtp.port, "dtmf_2833_9.pcap")

    sipp = await start_sipp(tmp_path, scenario, "-s", NUMBER, sip_stack.sip.address)
    await eventually(lambda: bool(phone_rooms(supervisor)), 30, "the webhook to start the agent")
    (room_name,) = phone_rooms(supervisor)
    run = await finished(tmp_path, sipp)

    # sipp succeeds only if the BYE came from our side, after the key press.
    assert run.returncode == 0, f"sipp: {run.errors or run.output[-2000:]}"
    await eventually(lambda: supervisor.session(room_name) is None, 15, "the session to end")
    ended = await supervisor.state.session(room_name)
    assert ended is not None
    assert ended.end_reason == "call_ended"
    lines = await transcript(server, room_name)
    assert [line["text"] for line in lines][-2:] == ["[pressed 9]", "Thank you for calling. Goodbye."]


async def test_an_outbound_call_is_dialled_answered_and_hears_the_greeting(
    aiohttp_server: AiohttpServer, sip_stack: SipStack, livekit: LiveKitGateway, rtp: RtpSink, tmp_path: Path
) -> None:
    callee_port = free_port()
    server = await serve(aiohttp_server, sip_stack, phone_settings(sip_stack, callee_port))
    supervisor = server.app[SUPERVISOR]
    callee = await start_sipp(tmp_path, callee_scenario(tmp_path, rtp.port), port=callee_port)

    async with (
        aiohttp.ClientSession() as http,
        http.post(server.make_url("/api/calls"), json={"agent_id": "agent-123", "to": CALLEE}) as response,
    ):
        call = await response.json()
        assert response.status == 201, call
    room_name = call["room_name"]
    assert room_name.startswith("voicebot_agent-123_")
    assert call["call_id"]
    assert call["participant_identity"] == f"sip_{CALLEE}"
    session = supervisor.session(room_name)
    assert session is not None
    await eventually(lambda: rtp.loud_seconds() > 1.5, 20, "the greeting to reach the callee")
    await eventually(lambda: session.info.state == "listening", 20, "the greeting to end")
    greeting = session.agent.greeting

    await livekit.delete_room(room_name)
    run = await finished(tmp_path, callee)

    assert run.returncode == 0, f"sipp: {run.errors or run.output[-2000:]}"
    await eventually(lambda: supervisor.session(room_name) is None, 15, "the session to end")
    lines = await transcript(server, room_name)
    assert lines[0] == {**lines[0], "speaker": "agent", "text": greeting}


async def test_a_busy_callee_gets_a_clear_error_and_leaves_no_room_or_session(
    aiohttp_server: AiohttpServer, sip_stack: SipStack, livekit: LiveKitGateway, rtp: RtpSink, tmp_path: Path
) -> None:
    callee_port = free_port()
    server = await serve(aiohttp_server, sip_stack, phone_settings(sip_stack, callee_port))
    callee = await start_sipp(tmp_path, callee_scenario(tmp_path, rtp.port, busy=True), port=callee_port)
    rooms_before = await livekit.room_names()

    async with (
        aiohttp.ClientSession() as http,
        http.post(server.make_url("/api/calls"), json={"agent_id": "agent-123", "to": CALLEE}) as response,
    ):
        body = await response.json()

    assert response.status == 502, body
    assert body["error"]["code"] == "callee_busy"
    assert "486" in body["error"]["message"]
    assert await livekit.room_names() == rooms_before
    assert server.app[SUPERVISOR].live() == []
    assert (await finished(tmp_path, callee)).returncode == 0


async def test_an_unknown_trunk_is_a_404_that_dials_nothing(
    aiohttp_server: AiohttpServer, sip_stack: SipStack, livekit: LiveKitGateway
) -> None:
    server = await serve(aiohttp_server, sip_stack, phone_settings(sip_stack, free_port()))
    rooms_before = await livekit.room_names()

    async with (
        aiohttp.ClientSession() as http,
        http.post(
            server.make_url("/api/calls"), json={"agent_id": "agent-123", "to": CALLEE, "trunk": "nowhere"}
        ) as response,
    ):
        body = await response.json()

    assert response.status == 404
    assert body["error"]["code"] == "unknown_trunk"
    assert "test-pbx" in body["error"]["message"]
    assert await livekit.room_names() == rooms_before
    assert server.app[SUPERVISOR].live() == []


async def test_health_reports_sip_and_redis(aiohttp_server: AiohttpServer, sip_stack: SipStack) -> None:
    settings = replace(phone_settings(sip_stack), redis=RedisSettings(url=sip_stack.redis.url))
    server = await serve(aiohttp_server, sip_stack, settings)

    async with aiohttp.ClientSession() as http, http.get(server.make_url("/api/livekit/health")) as response:
        report = await response.json()

    assert response.status == 200
    assert report["status"] == "ok"
    assert report["sip"]["reachable"] is True
    assert report["redis"]["reachable"] is True
