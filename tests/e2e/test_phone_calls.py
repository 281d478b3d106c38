"""Phone calls end to end: sipp <-> livekit-sip <-> livekit-server on Redis <-> voicebot, by webhook."""

from __future__ import annotations

import asyncio
import io
import json
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
from voicebot.api.app_keys import METRICS, SUPERVISOR
from voicebot.app import create_app
from voicebot.config import InboundRoute, OutboundTrunk, RedisSettings, Settings
from voicebot.livekit import LiveKitGateway
from voicebot.sessions.supervisor import SessionSupervisor

pytestmark = [pytest.mark.integration, pytest.mark.sip]

NUMBER = "+15550100"
CALLEE = "+15550123"
ALLOWED = ("+1555",)


# Two API keys, so the per-key call limit can be seen to count each on its own.
KEYS = ("phone-test-key-a-0123456789", "phone-test-key-b-0123456789")


def phone_settings(stack: SipStack, callee_port: int = 0, allowed: tuple[str, ...] = ALLOWED) -> Settings:
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
    trunk = OutboundTrunk("test-pbx", f"127.0.0.1:{callee_port}", (NUMBER,), "udp", allowed_prefixes=allowed)
    trunks = (trunk,) if callee_port else ()
    sip = replace(stack.sip_settings, inbound=(route,), outbound=trunks)
    # Real API keys: the outbound-call limits count per key.
    return replace(base, sip=sip, auth=replace(base.auth, api_keys=KEYS))


def http_client(key: str = KEYS[0]) -> aiohttp.ClientSession:
    """An HTTP client that sends one of the server's API keys."""
    return aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"})


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
    app = create_app(settings)
    # LiveKit sends its webhooks to the port it was started with.
    return await aiohttp_server(app, port=stack.webhook_port)


async def call(
    server: TestServer, to: str = CALLEE, key: str | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST /api/calls for agent-123: the status, the body and the headers."""
    async with (
        http_client(key or KEYS[0]) as http,
        http.post(server.make_url("/api/calls"), json={"agent_id": "agent-123", "to": to}) as response,
    ):
        return response.status, await response.json(), dict(response.headers)


def assert_no_number_or_key_press(log: io.StringIO, *numbers: str) -> None:
    lines = log.getvalue().splitlines()
    assert lines, "nothing was logged"
    for line in lines:
        for number in numbers:
            assert number not in line, f"a full phone number in a log line: {line}"
            assert number.removeprefix("+") not in line, f"a full phone number in a log line: {line}"
        assert "[pressed" not in line, f"a key press in a log line: {line}"
        event = json.loads(line)
        if event.get("event") == "dtmf_received":
            assert "digit" not in event, line


def calls_counted(server: TestServer, direction: str, outcome: str) -> float | None:
    """voicebot_sip_calls_total for one direction and outcome, as /metrics would show it."""
    labels = {"direction": direction, "outcome": outcome}
    return server.app[METRICS].registry.get_sample_value("voicebot_sip_calls_total", labels)


def phone_rooms(supervisor: SessionSupervisor) -> list[str]:
    return [s.room_name for s in supervisor.live() if s.room_name.startswith("voicebot_agent-123_")]


async def transcript(server: TestServer, room_name: str) -> list[dict[str, Any]]:
    async with (
        http_client() as http,
        http.get(server.make_url(f"/api/sessions/{room_name}/transcript")) as response,
    ):
        body: dict[str, Any] = await response.json()
        return list(body["lines"])


async def test_a_call_is_answered_greeted_hears_a_key_press_and_ends_with_bye(
    aiohttp_server: AiohttpServer,
    sip_stack: SipStack,
    livekit: LiveKitGateway,
    rtp: RtpSink,
    tmp_path: Path,
    production_log: io.StringIO,
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
    assert '"event": "dtmf_received"' in production_log.getvalue()
    assert_no_number_or_key_press(production_log, NUMBER)
    assert calls_counted(server, "inbound", "answered") == 1
    registry = server.app[METRICS].registry
    assert registry.get_sample_value("voicebot_dtmf_keys_total", {"agent": "agent-123"}) == 1
    events = [json.loads(line) for line in production_log.getvalue().splitlines()]
    (summary,) = [e for e in events if e["event"] == "session_summary"]
    assert (summary["session"], summary["phone_call"]) == (session.info.session_id, True)
    assert summary["dtmf_keys"] == 1


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
    aiohttp_server: AiohttpServer,
    sip_stack: SipStack,
    livekit: LiveKitGateway,
    rtp: RtpSink,
    tmp_path: Path,
    production_log: io.StringIO,
) -> None:
    callee_port = free_port()
    server = await serve(aiohttp_server, sip_stack, phone_settings(sip_stack, callee_port))
    supervisor = server.app[SUPERVISOR]
    callee = await start_sipp(tmp_path, callee_scenario(tmp_path, rtp.port), port=callee_port)

    async with (
        http_client() as http,
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
    assert '"event": "call_placed"' in production_log.getvalue()
    assert_no_number_or_key_press(production_log, CALLEE)
    assert calls_counted(server, "outbound", "answered") == 1


async def test_a_busy_callee_gets_a_clear_error_and_leaves_no_room_or_session(
    aiohttp_server: AiohttpServer,
    sip_stack: SipStack,
    livekit: LiveKitGateway,
    rtp: RtpSink,
    tmp_path: Path,
    production_log: io.StringIO,
) -> None:
    callee_port = free_port()
    server = await serve(aiohttp_server, sip_stack, phone_settings(sip_stack, callee_port))
    callee = await start_sipp(tmp_path, callee_scenario(tmp_path, rtp.port, busy=True), port=callee_port)
    rooms_before = await livekit.room_names()

    async with (
        http_client() as http,
        http.post(server.make_url("/api/calls"), json={"agent_id": "agent-123", "to": CALLEE}) as response,
    ):
        body = await response.json()

    assert response.status == 502, body
    assert body["error"]["code"] == "callee_busy"
    assert "486" in body["error"]["message"]
    assert await livekit.room_names() - rooms_before == set(), "no new room"
    assert server.app[SUPERVISOR].live() == []
    assert (await finished(tmp_path, callee)).returncode == 0
    # The caller is told the number they sent; the log line about the failure is not.
    assert CALLEE in body["error"]["message"]
    assert '"event": "request_failed"' in production_log.getvalue()
    assert_no_number_or_key_press(production_log, CALLEE)
    assert calls_counted(server, "outbound", "busy") == 1
    assert calls_counted(server, "outbound", "answered") == 0


async def test_an_unknown_trunk_is_a_404_that_dials_nothing(
    aiohttp_server: AiohttpServer, sip_stack: SipStack, livekit: LiveKitGateway
) -> None:
    server = await serve(aiohttp_server, sip_stack, phone_settings(sip_stack, free_port()))
    rooms_before = await livekit.room_names()

    async with (
        http_client() as http,
        http.post(
            server.make_url("/api/calls"), json={"agent_id": "agent-123", "to": CALLEE, "trunk": "nowhere"}
        ) as response,
    ):
        body = await response.json()

    assert response.status == 404
    assert body["error"]["code"] == "unknown_trunk"
    assert "test-pbx" in body["error"]["message"]
    assert await livekit.room_names() - rooms_before == set(), "no new room"
    assert server.app[SUPERVISOR].live() == []


async def test_health_reports_sip_and_redis(aiohttp_server: AiohttpServer, sip_stack: SipStack) -> None:
    settings = replace(phone_settings(sip_stack), redis=RedisSettings(url=sip_stack.redis.url))
    server = await serve(aiohttp_server, sip_stack, settings)

    async with http_client() as http, http.get(server.make_url("/api/livekit/health")) as response:
        report = await response.json()

    assert response.status == 200
    assert report["status"] == "ok"
    assert report["sip"]["reachable"] is True
    assert report["redis"]["reachable"] is True


@pytest.mark.parametrize(
    ("to", "allowed"),
    [
        pytest.param("+445550123", ALLOWED, id="outside-the-prefixes"),
        pytest.param("15550123", ALLOWED, id="not-e164"),
        pytest.param("alice", ALLOWED, id="sip-user-part"),
        pytest.param(CALLEE, (), id="no-prefixes-configured"),
    ],
)
async def test_a_destination_outside_allowed_prefixes_is_a_403_that_dials_nothing(
    aiohttp_server: AiohttpServer,
    sip_stack: SipStack,
    livekit: LiveKitGateway,
    to: str,
    allowed: tuple[str, ...],
) -> None:
    server = await serve(aiohttp_server, sip_stack, phone_settings(sip_stack, free_port(), allowed))
    rooms_before = await livekit.room_names()

    status, body, _ = await call(server, to)

    assert status == 403, body
    assert body["error"]["code"] == "destination_not_allowed"
    assert await livekit.room_names() - rooms_before == set(), "no new room"
    assert server.app[SUPERVISOR].live() == []


async def test_over_max_outbound_concurrent_a_call_is_a_429_until_one_hangs_up(
    aiohttp_server: AiohttpServer, sip_stack: SipStack, livekit: LiveKitGateway, rtp: RtpSink, tmp_path: Path
) -> None:
    callee_port = free_port()
    settings = phone_settings(sip_stack, callee_port)
    settings = replace(settings, sip=replace(settings.sip, max_outbound_concurrent=1))
    server = await serve(aiohttp_server, sip_stack, settings)
    supervisor = server.app[SUPERVISOR]
    callee = await start_sipp(tmp_path, callee_scenario(tmp_path, rtp.port), port=callee_port)
    status, answered, _ = await call(server)
    assert status == 201, answered
    rooms_before = await livekit.room_names()

    status, body, headers = await call(server)

    assert status == 429, body
    assert body["error"]["code"] == "too_many_calls"
    assert int(headers["Retry-After"]) > 0
    assert await livekit.room_names() - rooms_before == set(), "no new room"
    session = supervisor.session(answered["room_name"])
    assert session is not None
    # Hung up once the agent is in and has greeted: a room deleted while the agent still connects is
    # noticed by nobody (the session would last until max_duration_s).
    await eventually(lambda: session.info.state == "listening", 30, "the greeting to end")
    await livekit.delete_room(answered["room_name"])
    assert (await finished(tmp_path, callee)).returncode == 0
    await eventually(lambda: supervisor.session(answered["room_name"]) is None, 15, "the call to end")
    busy = await start_sipp(tmp_path, callee_scenario(tmp_path, rtp.port, busy=True), port=callee_port)
    status, body, _ = await call(server)
    assert (status, body["error"]["code"]) == (502, "callee_busy"), "the place was not given back"
    assert (await finished(tmp_path, busy)).returncode == 0


async def test_over_outbound_per_hour_an_api_key_gets_a_429_and_another_key_does_not(
    aiohttp_server: AiohttpServer, sip_stack: SipStack, livekit: LiveKitGateway, rtp: RtpSink, tmp_path: Path
) -> None:
    callee_port = free_port()
    settings = phone_settings(sip_stack, callee_port)
    settings = replace(settings, sip=replace(settings.sip, outbound_per_hour=1))
    server = await serve(aiohttp_server, sip_stack, settings)
    busy = callee_scenario(tmp_path, rtp.port, busy=True)
    callee = await start_sipp(tmp_path, busy, port=callee_port)
    status, body, _ = await call(server, key=KEYS[0])
    assert status == 502, body
    assert (await finished(tmp_path, callee)).returncode == 0
    rooms_before = await livekit.room_names()

    status, body, headers = await call(server, key=KEYS[0])

    assert status == 429, body
    assert body["error"]["code"] == "rate_limited"
    assert 3500 < int(headers["Retry-After"]) <= 3600
    assert await livekit.room_names() - rooms_before == set(), "no new room"
    callee = await start_sipp(tmp_path, busy, port=callee_port)
    status, body, _ = await call(server, key=KEYS[1])
    assert (status, body["error"]["code"]) == (502, "callee_busy")
    assert (await finished(tmp_path, callee)).returncode == 0
