"""The LiveKit SDK's signalling socket: opened with Nagle on, and an agent voicebot runs turns it off."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from livekit import api, rtc

from tests.conftest import eventually
from voicebot.livekit import LiveKitGateway
from voicebot.sessions.nagle import nodelay_by_descriptor, server_port, turn_off_nagle

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]


async def test_the_sdk_opens_its_signalling_socket_with_nagle_on(livekit: LiveKitGateway) -> None:
    """Regression: the Rust SDK connects its signalling WebSocket without TCP_NODELAY, so the agent's AddTrack
    right after joining waited for livekit-server's delayed ACK of the last ICE candidate (35-45 ms, per the
    server's log), and every greeting started that much later. turn_off_nagle is what undoes it."""
    port = server_port(livekit.url)
    await livekit.create_room("nagle_sdk", empty_timeout_s=30, departure_timeout_s=5)
    _, token = livekit.user_token("nagle_sdk", ttl_s=60)
    before = set(nodelay_by_descriptor(port))
    room = rtc.Room()
    await room.connect(livekit.url, token)
    try:
        opened = {fd: on for fd, on in nodelay_by_descriptor(port).items() if fd not in before}
        assert opened, "connecting should have opened a TCP socket to livekit-server"
        assert set(opened.values()) == {False}, f"the SDK's socket(s) should start with Nagle on: {opened}"
        assert turn_off_nagle(port) >= len(opened)
        assert {nodelay_by_descriptor(port)[fd] for fd in opened} == {True}
    finally:
        await room.disconnect()
        await livekit.delete_room("nagle_sdk")


async def test_an_agent_that_joined_signals_without_nagle(client: Client, livekit: LiveKitGateway) -> None:
    """Every socket a session's join opened to livekit-server has TCP_NODELAY once its voice is published."""
    port = server_port(livekit.url)
    before = set(nodelay_by_descriptor(port))
    response = await client.post("/api/livekit/create-room", json={"agent_id": "agent-123"})
    assert response.status == 200, await response.text()
    room_name = (await response.json())["room_name"]

    async def voice_published() -> bool:
        for participant in await livekit.participants(room_name):
            if participant.kind == api.ParticipantInfo.Kind.AGENT:
                return any(track.type == api.TrackType.AUDIO for track in participant.tracks)
        return False

    await eventually(voice_published, 10, "the agent to publish its voice")
    opened = {fd: on for fd, on in nodelay_by_descriptor(port).items() if fd not in before}
    assert opened, "the agent's join should have opened a TCP socket to livekit-server"
    assert set(opened.values()) == {True}, f"the agent's signalling should have Nagle off: {opened}"
