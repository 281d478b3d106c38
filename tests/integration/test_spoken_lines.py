"""An offline voice's fixed lines (greeting, rules' replies) are synthesised once per process, at startup;
every call hears them whole from memory."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from tests.audio import QUIET_AFTER_S, WHOLE_WITHIN_S, greeting_agent, voiced_duration
from tests.fakes import ToneTTS
from tests.integration.test_conversation import QUESTION
from tests.integration.test_first_word import assert_heard_whole
from tests.voice_client import VoiceClient, espeak
from voicebot.api.app_keys import SUPERVISOR
from voicebot.monitoring.events import (
    ProviderError,
    ProviderUsage,
    SessionEnd,
    SessionLabels,
    SessionObserver,
    TurnTiming,
)
from voicebot.sessions.supervisor import SessionSupervisor

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]


class UsageBySession(SessionObserver):
    """Records what each session's providers used; the other events it hears and ignores."""

    def __init__(self) -> None:
        self.tts_characters: defaultdict[str, int] = defaultdict(int)

    def usage(self, session: SessionLabels, usage: ProviderUsage) -> None:
        if usage.kind == "tts":
            self.tts_characters[session.session_id] += usage.characters

    # The events it ignores: an observer that lacked them would be logged as failing on each.
    def session_started(self, session: SessionLabels) -> None:
        return None

    def agent_joined(self, session: SessionLabels, seconds: float) -> None:
        return None

    def first_word(self, session: SessionLabels, seconds: float) -> None:
        return None

    def turn_measured(self, session: SessionLabels, timing: TurnTiming) -> None:
        return None

    def provider_failed(self, session: SessionLabels, error: ProviderError) -> None:
        return None

    def dtmf_received(self, session: SessionLabels) -> None:
        return None

    def session_ended(self, session: SessionLabels, end: SessionEnd) -> None:
        return None


async def joined(client: Client) -> tuple[str, VoiceClient]:
    """create-room for Reception and a client connected to it: the room's name and the client."""
    response = await client.post("/api/livekit/create-room", json={"agent_id": "agent-123"})
    assert response.status == 200, await response.text()
    room = await response.json()
    person = VoiceClient(room["livekit_url"], room["access_token"])
    await person.connect()
    return room["room_name"], person


async def call(client: Client) -> str:
    """One call: create-room, a client that hears the greeting whole; returns the session id."""
    room_name, person = await joined(client)
    try:
        await assert_heard_whole(person)
    finally:
        await person.close()
    supervisor: SessionSupervisor = client.app[SUPERVISOR]
    session = supervisor.session(room_name)
    assert session is not None
    return session.info.session_id


async def test_every_call_greets_from_the_greeting_synthesised_at_startup_and_is_heard_whole(
    client: Client,
) -> None:
    """The first call after a start, too: an offline voice's greeting is synthesised before it arrives."""
    supervisor: SessionSupervisor = client.app[SUPERVISOR]
    usage = UsageBySession()
    supervisor.observers.add(usage)
    greeting = greeting_agent().greeting
    assert supervisor.lines.cached("agent-123", greeting), "synthesised before the first call"

    first = await call(client)
    second = await call(client)

    assert usage.tts_characters[first] == 0, "the first call's greeting should come from the cache"
    assert usage.tts_characters[second] == 0, "the second call's greeting should come from the cache"


async def test_a_rule_s_reply_is_played_whole_from_the_lines_synthesised_at_startup(client: Client) -> None:
    """A reply from the rules engine is a fixed line: no session synthesises it, and it is heard whole."""
    supervisor: SessionSupervisor = client.app[SUPERVISOR]
    usage = UsageBySession()
    supervisor.observers.add(usage)
    reply = greeting_agent().rules[0].reply
    assert supervisor.lines.cached("agent-123", reply), "synthesised before the first call"
    kept = [frame async for frame in supervisor.lines.audio("agent-123", reply, ToneTTS())]
    spoken_s = voiced_duration(
        np.concatenate([np.frombuffer(frame.data, dtype=np.int16) for frame in kept]), kept[0].sample_rate
    )

    room_name, person = await joined(client)
    try:
        await person.wait_for_greeting()
        await person.wait_until_listening(20, "the agent to listen")
        speech, rate = await espeak(QUESTION)
        asked = await person.say(speech, rate)
        await person.wait_for(lambda: reply in person.finals(agent=True), 30, "the rule's reply")
        await person.wait_until_listening(30, "the reply to finish")
        await asyncio.sleep(QUIET_AFTER_S)
        heard_s = voiced_duration(person.agent_audio_since(asked), person.agent_sample_rate)
        stretch = await person.playout_stretch()
    finally:
        await person.close()
    session = supervisor.session(room_name)
    assert session is not None

    assert usage.tts_characters[session.info.session_id] == 0, "the reply should come from memory"
    shorter_s = spoken_s - heard_s
    assert -WHOLE_WITHIN_S - stretch.inserted_s <= shorter_s <= WHOLE_WITHIN_S + stretch.removed_s, (
        f"heard {heard_s:.2f} s of the reply, its line holds {spoken_s:.2f} s"
    )
