"""POST /api/livekit/webhook: only LiveKit's signed events count, and each starts at most one agent."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from google.protobuf.json_format import MessageToJson
from livekit import api

from tests.servers import API_KEY, API_SECRET
from voicebot.api.app_keys import SUPERVISOR
from voicebot.livekit import LiveKitGateway
from voicebot.sip.provisioning import AGENT_ATTRIBUTE

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]
PATH = "/api/livekit/webhook"


def caller_joined(room_name: str, *, kind: str = "SIP") -> bytes:
    """The body LiveKit sends when a phone caller (or another kind of participant) joins a room."""
    event = api.WebhookEvent(
        event="participant_joined",
        id=f"EV_{secrets.token_hex(6)}",
        room=api.Room(name=room_name),
        participant=api.ParticipantInfo(
            identity="sip_+15550123",
            kind=kind,
            attributes={AGENT_ATTRIBUTE: "agent-123"},
        ),
    )
    return MessageToJson(event).encode()


def signature(body: bytes, secret: str = API_SECRET) -> str:
    """The Authorization header LiveKit puts on a webhook: a JWT carrying the body's SHA-256."""
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return api.AccessToken(API_KEY, secret).with_sha256(digest).to_jwt()


async def post(client: Client, body: bytes, authorization: str | None) -> Any:
    headers = {"Content-Type": "application/webhook+json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return await client.post(PATH, data=body, headers=headers)


@pytest.fixture
async def phone_room(livekit: LiveKitGateway) -> str:
    name = f"voicebot_agent-123_+15550123_{secrets.token_hex(4)}"
    await livekit.create_room(name, empty_timeout_s=30, departure_timeout_s=5)
    return name


async def test_a_signed_phone_caller_event_starts_the_rooms_agent_once(
    client: Client, phone_room: str
) -> None:
    body = caller_joined(phone_room)

    first = await post(client, body, signature(body))
    retried = await post(client, body, signature(body))

    assert first.status == 200
    assert (await first.json())["outcome"] == "agent_started"
    assert (await retried.json())["outcome"] == "duplicate"
    live = client.app[SUPERVISOR].live()
    assert [(s.room_name, s.agent_id) for s in live] == [(phone_room, "agent-123")]


async def test_a_second_event_for_a_room_with_its_agent_starts_nothing(
    client: Client, phone_room: str
) -> None:
    for _ in range(2):
        body = caller_joined(phone_room)  # a new event id each time
        await post(client, body, signature(body))

    assert len(client.app[SUPERVISOR].live()) == 1


@pytest.mark.parametrize(
    ("case", "expected_code"),
    [("forged", "invalid_signature"), ("tampered", "invalid_signature"), ("unsigned", "unsigned_webhook")],
)
async def test_forged_tampered_or_unsigned_webhooks_get_401_and_start_nothing(
    client: Client, phone_room: str, case: str, expected_code: str
) -> None:
    body = caller_joined(phone_room)
    if case == "forged":
        response = await post(client, body, signature(body, secret="not-the-server-secret-0123456789ab"))
    elif case == "tampered":
        # Signed for one room, then pointed at another: the hash in the token no longer matches.
        response = await post(client, body.replace(b"+15550123", b"+15550999"), signature(body))
    else:
        response = await post(client, body, None)

    assert response.status == 401
    assert (await response.json())["error"]["code"] == expected_code
    assert client.app[SUPERVISOR].live() == []


async def test_people_joining_from_a_browser_are_not_phone_calls(client: Client, phone_room: str) -> None:
    body = caller_joined(phone_room, kind="STANDARD")

    response = await post(client, body, signature(body))

    assert (await response.json())["outcome"] == "ignored"
    assert client.app[SUPERVISOR].live() == []
