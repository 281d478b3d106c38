"""An offline greeting is synthesised once per process, at startup; every call hears it whole from memory."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.audio import greeting_agent
from tests.integration.test_first_word import assert_heard_whole
from tests.voice_client import VoiceClient
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


async def call(client: Client) -> str:
    """One call: create-room, a client that hears the greeting whole; returns the session id."""
    response = await client.post("/api/livekit/create-room", json={"agent_id": "agent-123"})
    assert response.status == 200, await response.text()
    room = await response.json()
    person = VoiceClient(room["livekit_url"], room["access_token"])
    await person.connect()
    try:
        await assert_heard_whole(person)
    finally:
        await person.close()
    supervisor: SessionSupervisor = client.app[SUPERVISOR]
    session = supervisor.session(room["room_name"])
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
    assert supervisor.greetings.cached("agent-123", greeting), "synthesised before the first call"

    first = await call(client)
    second = await call(client)

    assert usage.tts_characters[first] == 0, "the first call's greeting should come from the cache"
    assert usage.tts_characters[second] == 0, "the second call's greeting should come from the cache"
