"""A whole conversation with the offline pipeline, through a real livekit-server and a real client."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from livekit import rtc
from pytest_aiohttp import AiohttpClient

from tests.voice_client import VoiceClient, espeak, rms
from voicebot.api.app_keys import SUPERVISOR
from voicebot.app import create_app
from voicebot.config import Settings
from voicebot.livekit import LiveKitGateway
from voicebot.providers.sphinx_stt import SphinxSTT
from voicebot.sessions import speaking_rate

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]
QUESTION = "what are your opening hours"
SESSION_EVENTS_TOPIC = "lk.agent.session"  # livekit-agents' remote_session.TOPIC_SESSION_MESSAGES


@pytest.fixture
async def call(client: Client) -> AsyncIterator[tuple[VoiceClient, dict[str, str]]]:
    """A person who asked for a room with agent-123 and joined it."""
    response = await client.post("/api/livekit/create-room", json={"agent_id": "agent-123"})
    assert response.status == 200, await response.text()
    room = await response.json()
    person = VoiceClient(room["livekit_url"], room["access_token"])
    await person.connect()
    yield person, room
    await person.close()


@pytest.fixture
def flux_windows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sample counts of the windows the captions' speaking-rate estimate ran voicebot's flux on."""
    windows: list[int] = []
    one_call = speaking_rate.spectral_flux

    def counted(audio: speaking_rate.Samples, sample_rate: int) -> float:
        windows.append(len(audio))
        return one_call(audio, sample_rate)

    monkeypatch.setattr(speaking_rate, "spectral_flux", counted)
    return windows


async def recognise(samples: np.ndarray, sample_rate: int, phrases: list[str]) -> str:
    """What the offline recogniser hears in `samples`, listening for `phrases`."""
    frame = rtc.AudioFrame(samples.tobytes(), sample_rate, 1, len(samples))
    event = await SphinxSTT(phrases=phrases).recognize(frame)
    return event.alternatives[0].text if event.alternatives else ""


async def test_agent_greets_hears_a_rule_phrase_and_speaks_the_rules_reply(
    client: Client, call: tuple[VoiceClient, dict[str, str]], settings: Settings
) -> None:
    person, room = call
    agent = settings.agent("agent-123")
    assert agent is not None
    reply = agent.rules[0].reply
    # livekit-agents' session host would stream every state, transcript and usage event here as bytes.
    session_events: list[str] = []
    person.room.register_byte_stream_handler(
        SESSION_EVENTS_TOPIC, lambda _reader, identity: session_events.append(identity)
    )

    await person.wait_for(lambda: bool(person.agents()), 15, "the agent to join")
    await person.wait_for(lambda: person.loud_seconds(person.agent_audio_since(0)) > 1.0, 20, "the greeting")
    await person.wait_for(lambda: bool(person.finals(agent=True)), 20, "the greeting's transcription")
    assert person.finals(agent=True)[0] == agent.greeting
    await person.wait_until_listening(20, "the agent to listen")

    speech, rate = await espeak(QUESTION)
    spoken_at = await person.say(speech, rate)

    await person.wait_for(lambda: reply in person.finals(agent=True), 30, "the rule's reply as text")
    assert QUESTION in [text.lower() for text in person.finals(agent=False)]
    await person.wait_until_listening(30, "the reply to finish")
    answer = person.agent_audio_since(spoken_at)
    assert person.loud_seconds(answer) > 2.0, "the reply should be seconds of speech"
    assert rms(answer) > 200
    assert "thinking" in person.agent_states
    assert "speaking" in person.agent_states
    other_replies = [rule.reply for rule in agent.rules[1:]]
    heard = await recognise(answer, person.agent_sample_rate, [reply, *other_replies])
    assert {"nine", "five", "monday", "friday"} <= set(heard.split()), heard
    transcript = await (await client.get(f"/api/sessions/{room['room_name']}/transcript")).json()
    lines = [(line["speaker"], line["text"]) for line in transcript["lines"]]
    assert lines == [("agent", agent.greeting), ("user", QUESTION), ("agent", reply)]
    said, answered = transcript["lines"][1]["metrics"], transcript["lines"][2]["metrics"]
    assert {"end_of_turn_delay", "transcription_delay"} <= set(said)
    assert {"llm_node_ttft", "tts_node_ttfb", "e2e_latency"} <= set(answered)
    assert 0 < answered["e2e_latency"] < 10
    assert session_events == [], "the agent sent session events nobody asked for"


async def test_the_session_ends_when_the_person_leaves_and_its_transcript_stays(
    client: Client, call: tuple[VoiceClient, dict[str, str]]
) -> None:
    person, room = call
    await person.wait_for(lambda: bool(person.finals(agent=True)), 30, "the greeting's transcription")
    supervisor = client.app[SUPERVISOR]
    session = supervisor.session(room["room_name"])
    assert session is not None
    task = next(t for t in asyncio.all_tasks() if t.get_name() == f"session:{room['room_name']}")

    await person.room.disconnect()
    await asyncio.wait_for(asyncio.shield(task), 20)

    assert supervisor.session(room["room_name"]) is None
    assert session.info.end_reason == "participants_left"
    listed = await (await client.get("/api/sessions")).json()
    assert room["room_name"] not in [s["room_name"] for s in listed["sessions"]]
    response = await client.get(f"/api/sessions/{room['room_name']}/transcript")
    assert response.status == 200
    body = await response.json()
    assert body["live"] is False
    assert body["session"]["end_reason"] == "participants_left"
    assert body["lines"][0]["speaker"] == "agent"
    assert body["lines"][0]["text"].startswith("Hello")
    assert body["lines"][0]["at"] <= time.time()


async def test_sessions_are_listed_with_their_state_and_can_be_stopped(
    client: Client, call: tuple[VoiceClient, dict[str, str]]
) -> None:
    """Regression: the session was recorded only after the agent had joined and built its pipeline, so a
    person who already saw the agent could find no session listed."""
    person, room = call
    await person.wait_for(lambda: bool(person.agents()), 15, "the agent to join")

    listed = await (await client.get("/api/sessions")).json()
    (mine,) = [s for s in listed["sessions"] if s["room_name"] == room["room_name"]]
    assert mine["agent_id"] == "agent-123"
    assert mine["state"] in {"starting", "initializing", "listening", "thinking", "speaking", "idle"}
    assert re.fullmatch(r"agent-agent-123-[0-9a-f]{6}", mine["identity"])

    response = await client.delete(f"/api/sessions/{room['room_name']}")

    assert response.status == 200
    assert (await response.json())["end_reason"] == "stopped"
    await person.wait_for(lambda: not person.agents(), 15, "the agent to leave the room")
    assert (await client.delete(f"/api/sessions/{room['room_name']}")).status == 404


async def test_an_end_of_call_rule_says_goodbye_and_closes_the_room(
    client: Client, call: tuple[VoiceClient, dict[str, str]], livekit: LiveKitGateway
) -> None:
    person, room = call
    await person.wait_for_greeting()
    left = asyncio.Event()
    person.room.on("disconnected", lambda *_: left.set())

    speech, rate = await espeak("thank you goodbye")
    await person.say(speech, rate)

    await person.wait_for(left.is_set, 30, "the room to close")
    assert "Thank you for calling. Goodbye." in person.finals(agent=True)
    ended = await client.app[SUPERVISOR].state.session(room["room_name"])
    assert ended is not None
    assert ended.end_reason == "call_ended"
    assert not await livekit.room_exists(room["room_name"])


def with_text_input(settings: Settings, enabled: bool) -> Settings:
    agents = tuple(replace(a, text_input=enabled) if a.id == "agent-123" else a for a in settings.agents)
    return replace(settings, agents=agents)


@pytest.mark.parametrize("text_input", [False, True], ids=["text-off", "text-on"])
async def test_typed_text_reaches_the_agent_only_when_its_config_enables_text_input(
    aiohttp_client: AiohttpClient, settings: Settings, text_input: bool
) -> None:
    """Text on lk.chat went straight to the LLM of every agent: livekit-agents reads it unless told not to."""
    client = await aiohttp_client(create_app(with_text_input(settings, text_input)))
    response = await client.post("/api/livekit/create-room", json={"agent_id": "agent-123"})
    room = await response.json()
    person = VoiceClient(room["livekit_url"], room["access_token"])
    await person.connect()
    try:
        await person.wait_for_greeting()
        await person.wait_until_listening(20, "the agent to listen")
        agent = settings.agent("agent-123")
        assert agent is not None
        hours, address = agent.rules[0].reply, agent.rules[2].reply

        await person.type_text(QUESTION)
        if text_input:
            await person.wait_for(lambda: hours in person.finals(agent=True), 30, "the reply to the text")
            return
        # Then a spoken question: its reply is the proof the agent got there, and the typed one came first.
        await person.wait_until_listening(20, "the agent to listen")
        speech, rate = await espeak("where are you")
        await person.say(speech, rate)
        await person.wait_for(lambda: address in person.finals(agent=True), 30, "the reply to the speech")
        assert hours not in person.finals(agent=True)
        transcript = await (await client.get(f"/api/sessions/{room['room_name']}/transcript")).json()
        assert QUESTION not in [line["text"] for line in transcript["lines"]]
    finally:
        await person.close()


async def test_the_greetings_captions_are_paced_with_the_one_call_flux(
    flux_windows: list[int], call: tuple[VoiceClient, dict[str, str]], settings: Settings
) -> None:
    person, _room = call
    agent = settings.agent("agent-123")
    assert agent is not None
    await person.wait_for(lambda: bool(person.finals(agent=True)), 20, "the greeting's transcription")
    assert person.finals(agent=True)[0] == agent.greeting
    # One 1 s window every 100 ms of the agent's 24 kHz voice while it speaks (2.5 s of greeting here).
    assert len(flux_windows) >= 5
    assert set(flux_windows) <= {24000, *range(12000, 24000)}
