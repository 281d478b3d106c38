"""Every bad request gets a JSON error with the right status, and leaves nothing behind on LiveKit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import payload
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests.conftest import changed
from voicebot.app import create_app
from voicebot.config import Settings
from voicebot.livekit import LiveKitGateway

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]
CREATE_ROOM = "/api/livekit/create-room"
JSON = {"Content-Type": "application/json"}


async def expect_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert the one error shape: status, JSON content type, a code and a message for people."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json"
    assert "Traceback" not in text
    body: dict[str, Any] = await response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert len(body["error"]["message"]) > 10
    return body


@pytest.mark.parametrize(
    ("raw_body", "status", "code"),
    [
        pytest.param(b"{not json", 400, "invalid_json", id="malformed-json"),
        pytest.param(b"", 400, "invalid_json", id="empty-body"),
        pytest.param(b'["agent-123"]', 400, "invalid_json", id="array-not-object"),
        pytest.param(b"\xff\xfe{}", 400, "invalid_json", id="not-utf8"),
        pytest.param(b"{}", 400, "missing_field", id="missing-agent-id"),
        pytest.param(b'{"agent": "agent-123"}', 400, "missing_field", id="misspelt-field"),
        pytest.param(b'{"agent_id": 123}', 400, "invalid_field", id="agent-id-not-a-string"),
        pytest.param(b'{"agent_id": ""}', 400, "invalid_field", id="agent-id-empty"),
        pytest.param(b'{"agent_id": "../etc/passwd"}', 400, "invalid_field", id="agent-id-path"),
        pytest.param(b'{"agent_id": "agent 123"}', 400, "invalid_field", id="agent-id-space"),
        pytest.param(b'{"agent_id": "' + b"a" * 65 + b'"}', 400, "invalid_field", id="agent-id-65-chars"),
        pytest.param(b'{"agent_id": "nobody"}', 404, "unknown_agent", id="unknown-agent"),
    ],
)
async def test_bad_create_room_requests_get_json_errors_and_create_no_room(
    client: Client, livekit: LiveKitGateway, raw_body: bytes, status: int, code: str
) -> None:
    rooms_before = await livekit.room_names()

    response = await client.post(CREATE_ROOM, data=raw_body, headers={"Content-Type": "application/json"})

    await expect_error(response, status, code)
    assert await livekit.room_names() - rooms_before == set(), "no new room"


async def test_unknown_agent_message_names_the_agent(client: Client) -> None:
    response = await client.post(CREATE_ROOM, json={"agent_id": "nobody"})

    body = await expect_error(response, 404, "unknown_agent")
    assert "nobody" in body["error"]["message"]


@pytest.fixture
async def small_limit_client(aiohttp_client: AiohttpClient, settings: Settings) -> Client:
    return await aiohttp_client(create_app(changed(settings, "server", max_body_bytes=1024)))


async def test_a_body_over_the_limit_gets_413(small_limit_client: Client) -> None:
    big = b'{"agent_id": "agent-123", "padding": "' + b"x" * 2048 + b'"}'

    response = await small_limit_client.post(CREATE_ROOM, data=big, headers=JSON)

    await expect_error(response, 413, "body_too_large")


async def test_a_chunked_body_over_the_limit_gets_413(small_limit_client: Client) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"agent_id": "agent-123", "padding": "'
        for _ in range(4):
            yield b"x" * 1024
        yield b'"}'

    response = await small_limit_client.post(
        CREATE_ROOM, data=payload.AsyncIterablePayload(chunks()), headers=JSON
    )

    await expect_error(response, 413, "body_too_large")


async def test_wrong_method_gets_405_with_allow_header(client: Client) -> None:
    response = await client.get(CREATE_ROOM)

    await expect_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


async def test_unknown_endpoint_gets_json_404(client: Client) -> None:
    response = await client.get("/api/nothing-here")

    await expect_error(response, 404, "not_found")


async def test_livekit_unreachable_gets_503_with_the_configured_retry_after(
    aiohttp_client: AiohttpClient, unreachable_settings: Settings
) -> None:
    """Regression: Retry-After was a hard-coded 5 whatever sessions.retry_after_s said."""
    settings = changed(unreachable_settings, "sessions", retry_after_s=17)
    client = await aiohttp_client(create_app(settings))

    response = await client.post(CREATE_ROOM, json={"agent_id": "agent-123"})

    body = await expect_error(response, 503, "livekit_unavailable")
    assert "cannot connect" in body["error"]["message"]
    assert response.headers["Retry-After"] == "17"
