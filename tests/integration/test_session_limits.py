"""Sessions that end by themselves: nobody joined a create-room in time, or the session ran too long."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests.conftest import changed, eventually
from tests.fakes import ScriptedSTT, ToneTTS, ToneVAD
from tests.voice_client import VoiceClient
from voicebot.agents.pipeline import Pipeline
from voicebot.api.app_keys import SUPERVISOR
from voicebot.app import create_app
from voicebot.config import AgentDefinition, Settings
from voicebot.livekit import LiveKitGateway
from voicebot.providers.rules_llm import RulesLLM

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]


@dataclass
class ScriptedPipelines:
    """Scripted STT, VAD and a tone TTS that remembers what it was asked to say, per session."""

    voices: list[ToneTTS] = field(default_factory=list)

    async def build(self, agent: AgentDefinition) -> Pipeline:
        voice = ToneTTS(audio_s=1.0)
        self.voices.append(voice)
        # A real client's "silence" reaches the agent as codec noise, which a tone detector would take
        # for speech that interrupts the greeting: this one never hears any.
        deaf = ToneVAD(min_speech_s=3600)
        return Pipeline(stt=ScriptedSTT([]), llm=RulesLLM(agent), tts=voice, vad=deaf)

    def spoken(self) -> list[str]:
        """Everything any session's TTS was asked to synthesise."""
        return [text for voice in self.voices for text in voice.spoken]


async def create_room(client: Client) -> dict[str, str]:
    response = await client.post("/api/livekit/create-room", json={"agent_id": "agent-123"})
    assert response.status == 200, await response.text()
    body: dict[str, str] = await response.json()
    return body


async def test_a_room_nobody_joins_ends_unheard_and_frees_its_place(
    aiohttp_client: AiohttpClient, settings: Settings, livekit: LiveKitGateway
) -> None:
    """Regression: twenty create-rooms nobody joined held every place for empty_timeout_s (five minutes),
    since agents do not count as participants; and each agent greeted an empty room."""
    pipelines = ScriptedPipelines()
    limited = changed(settings, "sessions", max_concurrent=1, unjoined_timeout_s=1.0)
    client = await aiohttp_client(create_app(limited, pipelines=pipelines))
    supervisor = client.app[SUPERVISOR]
    room = (await create_room(client))["room_name"]
    refused = await client.post("/api/livekit/create-room", json={"agent_id": "agent-123"})
    assert refused.status == 503

    await eventually(lambda: supervisor.session(room) is None, 15, "the unjoined room to be given up")

    ended = await supervisor.state.session(room)
    assert ended is not None
    assert ended.end_reason == "nobody_joined"
    assert pipelines.spoken() == [], "the greeting was synthesised for nobody"
    assert not await livekit.room_exists(room)
    again = await create_room(client)
    assert supervisor.session(again["room_name"]) is not None, "the place was not free again"
    await client.delete(f"/api/sessions/{again['room_name']}")


async def test_a_person_who_joins_late_but_in_time_hears_the_greeting(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    pipelines = ScriptedPipelines()
    client = await aiohttp_client(
        create_app(changed(settings, "sessions", unjoined_timeout_s=30.0), pipelines=pipelines)
    )
    supervisor = client.app[SUPERVISOR]
    access = await create_room(client)
    session = supervisor.session(access["room_name"])
    assert session is not None
    await eventually(lambda: session.info.state == "listening", 15, "the agent to join and listen")
    assert pipelines.spoken() == [], "the agent greeted before anyone was there"

    person = VoiceClient(access["livekit_url"], access["access_token"])
    await person.connect()
    try:
        await person.wait_for_greeting()
        assert " ".join(pipelines.spoken()) == session.agent.greeting
        assert person.finals(agent=True) == [session.agent.greeting]
        assert supervisor.session(access["room_name"]) is session
    finally:
        await person.close()
    await eventually(lambda: supervisor.session(access["room_name"]) is None, 15, "the session to end")


async def test_a_session_ends_after_max_duration_and_closes_its_room(
    aiohttp_client: AiohttpClient, settings: Settings, livekit: LiveKitGateway
) -> None:
    pipelines = ScriptedPipelines()
    client = await aiohttp_client(
        create_app(changed(settings, "sessions", max_duration_s=3.0), pipelines=pipelines)
    )
    supervisor = client.app[SUPERVISOR]
    access = await create_room(client)
    person = VoiceClient(access["livekit_url"], access["access_token"])
    await person.connect()
    try:
        await eventually(
            lambda: supervisor.session(access["room_name"]) is None, 15, "max_duration to end the session"
        )
        ended = await supervisor.state.session(access["room_name"])
        assert ended is not None
        assert ended.end_reason == "max_duration"
        assert ended.ended_at is not None
        assert 2.5 < ended.ended_at - ended.started_at < 10
        assert not await livekit.room_exists(access["room_name"]), "the person was left in the room"
    finally:
        await person.close()
