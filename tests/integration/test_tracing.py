"""Traces of real conversations: create-room, the session and livekit-agents' spans in one trace, sent over
OTLP/HTTP to a real receiver."""

from __future__ import annotations

import os
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests.conftest import changed, eventually
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.voice_client import VoiceClient, espeak
from voicebot import __version__
from voicebot.api.app_keys import SUPERVISOR
from voicebot.api.paths import CREATE_ROOM_PATH
from voicebot.app import create_app
from voicebot.config import Settings
from voicebot.monitoring.tracing import JOIN_SPAN, SESSION_SPAN

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]
QUESTION = "what are your opening hours"
CREATE_ROOM_SPAN = f"POST {CREATE_ROOM_PATH}"
SPAN_KIND_SERVER = 2
# The transcript rounds livekit-agents' latencies to 4 decimals (sessions/session.py).
ROUNDING = 0.5e-4 + 1e-9


def traced(settings: Settings, receiver: OtlpReceiver, *, personal_data: bool = False) -> Settings:
    return changed(
        settings,
        "telemetry",
        traces_endpoint=f"{receiver.endpoint}/v1/traces",
        include_personal_data=personal_data,
    )


async def create_room(client: Client) -> tuple[VoiceClient, dict[str, str]]:
    response = await client.post(CREATE_ROOM_PATH, json={"agent_id": "agent-123"})
    assert response.status == 200, await response.text()
    room = await response.json()
    person = VoiceClient(room["livekit_url"], room["access_token"])
    await person.connect()
    return person, room


async def leave(client: Client, person: VoiceClient, room_name: str) -> None:
    """The person leaves; then the app stops, which exports every span left and shuts the exporter down."""
    await person.close()
    supervisor = client.app[SUPERVISOR]
    await eventually(lambda: supervisor.session(room_name) is None, 20, "the session to end")


def session_trace(receiver: OtlpReceiver, room_name: str) -> tuple[ReceivedSpan, list[ReceivedSpan]]:
    """The room's session span, and every span of its trace."""
    (session,) = [s for s in receiver.named(SESSION_SPAN) if s.attributes.get("voicebot.room") == room_name]
    return session, [s for s in receiver.spans if s.trace_id == session.trace_id]


def text_in(span: ReceivedSpan) -> str:
    """Everything a span says, attribute and event values alike, lower-cased."""
    values = [*span.attributes.values(), *(v for e in span.events for v in e.attributes.values())]
    return " ".join(str(value) for value in values).lower()


async def test_a_conversation_is_one_trace_with_the_session_its_turns_and_their_latencies(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    agent = settings.agent("agent-123")
    assert agent is not None
    reply = agent.rules[0].reply
    async with otlp_receiver() as receiver:
        client = await aiohttp_client(create_app(traced(settings, receiver)))
        person, room = await create_room(client)
        try:
            await person.wait_for_greeting()
            await person.wait_until_listening(20, "the agent to listen")
            speech, rate = await espeak(QUESTION)
            await person.say(speech, rate)
            await person.wait_for(lambda: reply in person.finals(agent=True), 30, "the rule's reply")
            await person.wait_until_listening(30, "the reply to finish")
        finally:
            await leave(client, person, room["room_name"])
        transcript = await (await client.get(f"/api/sessions/{room['room_name']}/transcript")).json()
        await client.close()

    assert not receiver.refused
    session, spans = session_trace(receiver, room["room_name"])
    tree = receiver.tree(session.trace_id)
    assert session.attributes["voicebot.agent_id"] == "agent-123"
    assert session.attributes["voicebot.session_id"] == transcript["session"]["session_id"]
    assert session.attributes["voicebot.channel"] == "web"
    assert session.attributes["voicebot.end_reason"] == "participants_left"
    assert [e.name for e in session.events][:2] == ["agent_joined", "first_word"]
    assert session.resource["service.name"] == "voicebot"
    assert session.resource["service.version"] == __version__
    assert session.resource["process.pid"] == os.getpid()

    # create-room's request is the root; the session, then livekit-agents' session, hang under it.
    (request,) = [s for s in spans if s.name == CREATE_ROOM_SPAN]
    assert request.parent_span_id == ""
    assert request.kind == SPAN_KIND_SERVER
    assert request.attributes["voicebot.room"] == room["room_name"]
    assert session.parent_span_id == request.span_id, tree
    (join,) = [s for s in spans if s.name == JOIN_SPAN]
    assert join.parent_span_id == session.span_id, tree
    assert request.start_ns < session.start_ns <= join.start_ns < join.end_ns
    (agent_session,) = [s for s in spans if s.name == "agent_session"]
    assert agent_session.parent_span_id == session.span_id, tree
    assert join.end_ns <= agent_session.start_ns

    def under_session(name: str) -> list[ReceivedSpan]:
        found = sorted((s for s in spans if s.name == name), key=lambda s: s.start_ns)
        assert found, f"no {name} span in the trace:\n{tree}"
        for span in found:
            assert session in receiver.ancestors(span), f"{name} is not under the session:\n{tree}"
        return found

    # The greeting, the caller's turn, the reply, in that order.
    user_turns = under_session("user_turn")
    greeting, answer = under_session("agent_turn")
    assert greeting.start_ns < user_turns[0].start_ns < answer.start_ns
    assert session.start_ns < greeting.start_ns
    assert answer.end_ns <= session.end_ns
    for name in ("llm_request", "stt_request"):
        under_session(name)
    # Nothing is synthesised in the session: the greeting and the rule's reply are fixed lines, synthesised
    # at startup and played from memory (agents/spoken_lines.py).
    assert not [s for s in spans if s.name == "tts_request"], tree
    assert user_turns[0].attributes["gen_ai.request.model"] == "pocketsphinx/grammar"

    # The trace's latencies are the transcript's.
    said, answered = transcript["lines"][1]["metrics"], transcript["lines"][2]["metrics"]
    assert answer.attributes["lk.e2e_latency"] == pytest.approx(answered["e2e_latency"], abs=ROUNDING)
    assert answer.attributes["lk.end_of_turn_delay"] == pytest.approx(said["end_of_turn_delay"], abs=ROUNDING)
    (llm_node,) = [s for s in spans if s.name == "llm_node" and answer in receiver.ancestors(s)]
    assert llm_node.attributes["lk.response.ttft"] == pytest.approx(answered["llm_node_ttft"], abs=ROUNDING)
    tts_nodes = [s for s in spans if s.name == "tts_node" and answer in receiver.ancestors(s)]
    ttfb = answered["tts_node_ttfb"]
    assert tts_nodes[0].attributes["lk.response.ttfb"] == pytest.approx(ttfb, abs=ROUNDING)

    # Personal data stays out unless [telemetry] include_personal_data says otherwise.
    for span in spans:
        said_text = text_in(span)
        for private in (QUESTION, reply.lower(), agent.greeting.lower(), room["access_token"].lower()):
            assert private not in said_text, f"{span.name} carries {private!r}"
        assert not [key for key in span.attributes if "pii" in key.split(".")], span.name


async def test_the_transcript_reaches_the_trace_only_with_personal_data_allowed(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    agent = settings.agent("agent-123")
    assert agent is not None
    async with otlp_receiver() as receiver:
        client = await aiohttp_client(create_app(traced(settings, receiver, personal_data=True)))
        person, room = await create_room(client)
        try:
            await person.wait_for_greeting()
            await person.wait_until_listening(20, "the agent to listen")
        finally:
            await leave(client, person, room["room_name"])
        await client.close()

    _, spans = session_trace(receiver, room["room_name"])
    (greeting,) = [s for s in spans if s.name == "agent_turn"]
    assert greeting.attributes["lk.pii.response.text"] == agent.greeting
