"""The greeting reaches the client whole, whether the agent or the client is in the room first (issue 12)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.audio import (
    WHOLE_WITHIN_S,
    greeting_agent,
    hear_greeting,
    synthesised_greeting,
)
from tests.voice_client import VoiceClient
from voicebot.livekit import LiveKitGateway

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]
GREETING_WITHIN_S = 20.0


async def assert_heard_whole(person: VoiceClient) -> None:
    """The greeting arrived as text and as audio, with nothing cut from either end of its audio.

    An audible span as long as the synthesised greeting's means its first word was not spoken into a
    track nobody had subscribed to yet (that start would be lost) and nothing was cut from its end.
    """
    agent = greeting_agent()
    heard = await hear_greeting(person, GREETING_WITHIN_S)
    spoken = await synthesised_greeting(agent)

    def text_so_far() -> str:
        return " ".join(" ".join(person.finals(agent=True)).split())

    # Regression: a listen-first client read the greeting without its first words, because RoomIO names the
    # agent as its transcription's speaker only once it has seen a participant. It may arrive as two
    # segments (RoomIO starts a new one when it does see the participant), never with words missing.
    await person.wait_for(
        lambda: len(text_so_far()) >= len(agent.greeting), GREETING_WITHIN_S, "the greeting's text"
    )
    assert text_so_far().startswith(agent.greeting)
    # A receiver short of CPU plays late and its jitter buffer then shortens the audio to catch up (a clean
    # clone's run under load heard 130 ms less): what it removed or inserted widens the bound by as much.
    stretch = await person.playout_stretch()
    shorter_s = spoken.voiced_s - heard.voiced_s
    assert -WHOLE_WITHIN_S - stretch.inserted_s <= shorter_s <= WHOLE_WITHIN_S + stretch.removed_s, (
        f"heard {heard.voiced_s:.2f} s of the greeting, espeak-ng speaks {spoken.voiced_s:.2f} s; the jitter "
        f"buffer removed {stretch.removed_s * 1000:.0f} ms and inserted {stretch.inserted_s * 1000:.0f} ms"
    )


@pytest.mark.parametrize(
    ("delay_s", "microphone"),
    [(0.0, True), (0.5, True), (1.0, True), (2.0, False), (5.0, False)],
    ids=["at-once", "half-a-second-later", "1s-later", "listen-first-2s-later", "listen-first-5s-later"],
)
async def test_a_client_joining_after_create_room_hears_the_whole_greeting(
    client: Client, delay_s: float, microphone: bool
) -> None:
    """Regression (issue 12): a client that joined after the agent and published nothing got the greeting
    only once livekit-server's periodic participant update announced it, seconds later; a greeting spoken
    before anyone subscribed to the agent's track would lose its start."""
    response = await client.post("/api/livekit/create-room", json={"agent_id": "agent-123"})
    assert response.status == 200, await response.text()
    room = await response.json()
    # The delay is the scenario: the agent is in the room, alone, while the client takes its time.
    await asyncio.sleep(delay_s)
    person = VoiceClient(room["livekit_url"], room["access_token"], microphone=microphone)
    await person.connect()
    try:
        await assert_heard_whole(person)
    finally:
        await person.close()


@pytest.mark.parametrize("microphone", [True, False], ids=["publishes", "listen-first"])
async def test_a_client_already_in_the_room_when_the_agent_is_sent_hears_the_whole_greeting(
    client: Client, livekit: LiveKitGateway, microphone: bool
) -> None:
    await livekit.create_room("first-word-present", empty_timeout_s=60, departure_timeout_s=5)
    _, token = livekit.user_token("first-word-present", ttl_s=600)
    person = VoiceClient(livekit.url, token, microphone=microphone)
    await person.connect()
    try:
        body = {"agent_id": "agent-123", "room_name": "first-word-present"}
        response = await client.post("/api/livekit/job-notification", json=body)
        assert response.status == 202, await response.text()
        await assert_heard_whole(person)
    finally:
        await person.close()
        await client.delete("/api/sessions/first-word-present")
        await livekit.delete_room("first-word-present")
