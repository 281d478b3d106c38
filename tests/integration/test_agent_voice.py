"""The agent's voice is in the room before anyone arrives; the greeting waits for a listener, not a batch."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from livekit import api, rtc

from tests.conftest import eventually
from voicebot.livekit import LiveKitGateway

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]


async def agent_in(livekit: LiveKitGateway, room_name: str) -> api.ParticipantInfo | None:
    """The agent participant of the room as the server sees it, if it has joined."""
    for participant in await livekit.participants(room_name):
        if participant.kind == api.ParticipantInfo.Kind.AGENT:
            return participant
    return None


async def create_room(client: Client) -> dict[str, str]:
    response = await client.post("/api/livekit/create-room", json={"agent_id": "agent-123"})
    assert response.status == 200, await response.text()
    room: dict[str, str] = await response.json()
    return room


async def test_the_agents_audio_track_is_published_before_anyone_joins(
    client: Client, livekit: LiveKitGateway
) -> None:
    """Regression: RoomIO published the agent's track only once it saw a participant, and livekit-server
    announces a newcomer who has published nothing only in its periodic (~3 s) participant-update batch, so a
    client that connected and listened first waited seconds for the greeting."""
    room = await create_room(client)

    async def published() -> bool:
        agent = await agent_in(livekit, room["room_name"])
        return agent is not None and any(track.type == api.TrackType.AUDIO for track in agent.tracks)

    await eventually(published, 10, "the agent to publish its audio track with nobody else in the room")


async def test_a_listen_first_client_subscribes_to_the_agent_on_connect_and_hears_the_greeting(
    client: Client, livekit: LiveKitGateway
) -> None:
    """A client that publishes nothing finds the agent's track in the room's state when it connects."""
    room = await create_room(client)

    async def agent_speaks() -> bool:
        agent = await agent_in(livekit, room["room_name"])
        return agent is not None and bool(agent.tracks)

    await eventually(agent_speaks, 10, "the agent to publish its track")
    listener = rtc.Room()
    heard = asyncio.Event()

    def on_track(track: rtc.Track, _pub: rtc.RemoteTrackPublication, _p: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            heard.set()

    listener.on("track_subscribed", on_track)
    await listener.connect(room["livekit_url"], room["access_token"])
    try:
        # Known from the join response itself, before any participant update could have been sent.
        agents = [
            p
            for p in listener.remote_participants.values()
            if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        ]
        assert agents, "the agent should be in the room the client joined"
        assert any(pub.kind == rtc.TrackKind.KIND_AUDIO for pub in agents[0].track_publications.values())
        await asyncio.wait_for(heard.wait(), 10)
    finally:
        await listener.disconnect()


async def test_create_room_answers_once_the_agents_voice_is_in_the_room(
    client: Client, livekit: LiveKitGateway
) -> None:
    """Regression: create-room answered before the agent had published its voice, so a client that joined
    at once saw the track appear just after its own first negotiation, and livekit-server holds a second
    negotiation of the same connection back by 150 ms (`negotiationFrequency`, pkg/rtc/transport.go): the
    greeting started ~150 ms late. The track must already be on the server when the answer arrives."""
    for _ in range(3):
        room = await create_room(client)
        agent = await agent_in(livekit, room["room_name"])
        assert agent is not None, "the agent should have joined before create-room answered"
        assert any(track.type == api.TrackType.AUDIO for track in agent.tracks), (
            "the agent's voice should be published before create-room answered"
        )
