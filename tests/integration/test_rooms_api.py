"""POST /api/livekit/create-room against a real livekit-server."""

from __future__ import annotations

import re
import time
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestClient
from livekit import api, rtc
from livekit.protocol import rtc as signal

from voicebot.config import Settings
from voicebot.livekit import LiveKitGateway, join_grants, sign_token

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]


async def create_room(client: Client, agent_id: str = "agent-123") -> dict[str, str]:
    response = await client.post("/api/livekit/create-room", json={"agent_id": agent_id})
    assert response.status == 200, await response.text()
    body: dict[str, str] = await response.json()
    return body


async def test_create_room_creates_the_room_on_the_livekit_server(
    client: Client, livekit: LiveKitGateway, settings: Settings
) -> None:
    body = await create_room(client)

    assert await livekit.room_exists(body["room_name"])
    async with aiohttp.ClientSession() as session:
        lkapi = api.LiveKitAPI(
            settings.livekit.url, settings.livekit.api_key, settings.livekit.api_secret, session=session
        )
        listed = await lkapi.room.list_rooms(api.ListRoomsRequest(names=[body["room_name"]]))
    (room,) = listed.rooms
    assert room.empty_timeout == settings.livekit.empty_timeout_s
    assert room.departure_timeout == settings.livekit.departure_timeout_s


async def test_room_names_carry_the_agent_id_and_a_fresh_suffix(client: Client) -> None:
    first = await create_room(client)
    second = await create_room(client, "faq")

    assert re.fullmatch(r"voicebot_agent-123_[0-9a-f]{8}", first["room_name"])
    assert re.fullmatch(r"voicebot_faq_[0-9a-f]{8}", second["room_name"])
    assert first["access_token"] != second["access_token"]


async def test_response_names_the_livekit_url_clients_connect_to(client: Client, settings: Settings) -> None:
    body = await create_room(client)

    assert set(body) == {"room_name", "access_token", "livekit_url"}
    assert body["livekit_url"] == settings.livekit.url


async def test_token_verifies_with_the_configured_key_and_grants_only_that_room(
    client: Client, settings: Settings
) -> None:
    body = await create_room(client)

    claims = api.TokenVerifier(settings.livekit.api_key, settings.livekit.api_secret).verify(
        body["access_token"]
    )
    assert claims.identity.startswith("user-")
    assert claims.video is not None
    assert claims.video.room == body["room_name"]
    assert claims.video.room_join
    assert not claims.video.room_admin
    assert not claims.video.room_create
    assert not claims.video.room_list
    assert not claims.video.room_record


async def test_token_publishes_only_a_microphone_and_expires_within_the_configured_ttl(
    client: Client, settings: Settings
) -> None:
    before = int(time.time())
    body = await create_room(client)

    decoded = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert decoded["video"]["canPublishSources"] == ["microphone"]
    assert before < decoded["exp"] <= int(time.time()) + settings.livekit.token_ttl_s


async def test_a_valid_token_for_a_room_nobody_created_cannot_join(
    livekit: LiveKitGateway, settings: Settings
) -> None:
    """A token once conjured up a room of its own: the embedded LiveKit created any room a token named."""
    lk = settings.livekit
    token = sign_token(lk.api_key, lk.api_secret, "user-stray", join_grants("never-created"), ttl_s=60)

    room = rtc.Room()
    with pytest.raises(rtc.ConnectError):
        await room.connect(lk.url, token)
    await room.disconnect()
    assert not await livekit.room_exists("never-created")


async def test_token_is_rejected_under_another_secret(client: Client, settings: Settings) -> None:
    body = await create_room(client)

    verifier = api.TokenVerifier(settings.livekit.api_key, "another-secret-that-is-long-enough-0000")
    with pytest.raises(jwt.InvalidSignatureError):
        verifier.verify(body["access_token"])


async def test_a_real_client_joins_the_room_with_the_token(client: Client, livekit: LiveKitGateway) -> None:
    body = await create_room(client)
    claims = api.TokenVerifier().verify(body["access_token"], verify_signature=False)

    room = rtc.Room()
    await room.connect(body["livekit_url"], body["access_token"])
    try:
        assert room.name == body["room_name"]
        assert room.local_participant.identity == claims.identity
        assert room.connection_state == rtc.ConnectionState.CONN_CONNECTED
        identities = await livekit.participant_identities(body["room_name"])
        assert claims.identity in identities
    finally:
        await room.disconnect()


async def test_the_token_cannot_reach_another_room(client: Client, livekit: LiveKitGateway) -> None:
    mine = await create_room(client)
    other = await create_room(client)

    room = rtc.Room()
    await room.connect(mine["livekit_url"], mine["access_token"])
    try:
        # Joining always lands in the token's own room, never the other one ...
        assert room.name == mine["room_name"]
        people_in_other = [
            i for i in await livekit.participant_identities(other["room_name"]) if not i.startswith("agent-")
        ]
        assert people_in_other == []
        # ... and the token carries no grant to act on any room through the server API.
        async with aiohttp.ClientSession() as session:
            as_user = api.LiveKitAPI(mine["livekit_url"], token=mine["access_token"], session=session)
            for request in (
                as_user.room.list_participants(api.ListParticipantsRequest(room=other["room_name"])),
                as_user.room.create_room(api.CreateRoomRequest(name="voicebot_intruder_room")),
                as_user.room.delete_room(api.DeleteRoomRequest(room=other["room_name"])),
            ):
                with pytest.raises(api.TwirpError) as refused:
                    await request
                assert refused.value.status in (401, 403)
        assert await livekit.room_exists(other["room_name"])
    finally:
        await room.disconnect()


async def test_clients_are_handed_no_ice_server_off_this_machine(client: Client) -> None:
    """Regression guard: livekit-server falls back to Google's public STUN servers unless told otherwise."""
    body = await create_room(client)

    url = f"{body['livekit_url']}/rtc?access_token={body['access_token']}&protocol=15&auto_subscribe=1"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        message = await ws.receive_bytes(timeout=10)
    join = signal.SignalResponse.FromString(message).join

    urls = [url for server in join.ice_servers for url in server.urls]
    assert urls, "the server should name a STUN server (its own), not leave clients to pick one"
    assert all(re.fullmatch(r"(stun|turn):127\.0\.0\.1:\d+(\?.*)?", u) for u in urls), urls
