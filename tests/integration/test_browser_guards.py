"""What a page of another site can make a browser send: bodies that are not JSON, a foreign Origin or Host."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests.conftest import changed
from voicebot.app import create_app
from voicebot.config import Settings
from voicebot.livekit import LiveKitGateway

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]
KEY = "guards-test-key-0b7e"
JSON_ENDPOINTS = [
    ("/api/livekit/create-room", {"agent_id": "faq"}),
    ("/api/livekit/job-notification", {"agent_id": "faq", "room_name": "no-such-room"}),
    ("/api/calls", {"agent_id": "faq", "to": "+15550100"}),
]
JSON_IDS = [path for path, _ in JSON_ENDPOINTS]


def as_text(body: dict[str, str]) -> str:
    return str(body).replace("'", '"')


@pytest.mark.parametrize(("path", "body"), JSON_ENDPOINTS, ids=JSON_IDS)
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data"],
)
async def test_a_json_endpoint_refuses_a_body_of_another_media_type(
    client: Client, livekit: LiveKitGateway, path: str, body: dict[str, str], content_type: str
) -> None:
    rooms_before = await livekit.room_names()

    response = await client.post(path, data=as_text(body), headers={"Content-Type": content_type})

    assert response.status == 415, await response.text()
    assert (await response.json())["error"]["code"] == "unsupported_media_type"
    assert await livekit.room_names() - rooms_before == set(), "no new room"


@pytest.mark.parametrize(("path", "body"), JSON_ENDPOINTS, ids=JSON_IDS)
async def test_a_form_or_an_undeclared_body_is_refused_too(
    client: Client, path: str, body: dict[str, str]
) -> None:
    form = FormData(body)
    as_form = await client.post(path, data=form)
    undeclared = await client.post(path, data=as_text(body).encode())  # application/octet-stream

    assert (as_form.status, undeclared.status) == (415, 415)


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
async def test_json_with_or_without_parameters_is_accepted(client: Client, content_type: str) -> None:
    response = await client.post(
        "/api/livekit/create-room", data='{"agent_id": "nobody"}', headers={"Content-Type": content_type}
    )

    assert response.status == 404
    assert (await response.json())["error"]["code"] == "unknown_agent"


async def test_with_keys_the_key_is_checked_before_the_media_type(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(changed(settings, "auth", api_keys=(KEY,))))

    response = await client.post(
        "/api/livekit/create-room", data="{}", headers={"Content-Type": "text/plain"}
    )

    assert response.status == 401


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "http://127.0.0.1:1", "https://127.0.0.1", "null", "http://localhost"]
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/livekit/create-room"), ("GET", "/api/agents"), ("GET", "/api/sessions")],
)
async def test_a_request_from_another_origin_is_refused(
    client: Client, livekit: LiveKitGateway, origin: str, method: str, path: str
) -> None:
    rooms_before = await livekit.room_names()

    response = await client.request(method, path, json={"agent_id": "faq"}, headers={"Origin": origin})

    assert response.status == 403, await response.text()
    assert (await response.json())["error"]["code"] == "forbidden_origin"
    assert await livekit.room_names() - rooms_before == set(), "no new room"


async def test_a_request_from_the_servers_own_origin_is_served(client: Client) -> None:
    own = f"http://127.0.0.1:{client.port}"

    response = await client.post(
        "/api/livekit/create-room", json={"agent_id": "faq"}, headers={"Origin": own}
    )

    assert response.status == 200, await response.text()


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://APP.example.com:443", True),
        ("http://app.example.com", False),
        ("https://app.example.com:8443", False),
        ("https://bot.example.com", True),
    ],
)
async def test_allowed_origins_and_the_public_url_are_served(
    aiohttp_client: AiohttpClient, settings: Settings, origin: str, allowed: bool
) -> None:
    server = changed(
        settings,
        "server",
        allowed_origins=("https://app.example.com",),
        public_url="https://bot.example.com",
    )
    client = await aiohttp_client(create_app(server))

    response = await client.get("/api/agents", headers={"Origin": origin})

    assert response.status == (200 if allowed else 403)


@pytest.mark.parametrize("path", ["/api/agents", "/", "/static/app.js", "/healthz", "/api/livekit/health"])
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8001", "127.0.0.1.nip.io", "[::2]:80"])
async def test_a_foreign_host_is_misdirected(client: Client, path: str, host: str) -> None:
    response = await client.get(path, headers={"Host": host})

    assert response.status == 421, await response.text()
    assert (await response.json())["error"]["code"] == "misdirected_request"


@pytest.mark.parametrize("host", ["localhost", "localhost:9999", "127.0.0.1", "LOCALHOST:1", "[::1]:8001"])
async def test_loopback_names_are_allowed_hosts_whatever_the_port(client: Client, host: str) -> None:
    response = await client.get("/api/agents", headers={"Host": host})

    assert response.status == 200


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("bot.internal", True),
        ("bot.internal:8001", True),
        ("bot.example.com", True),
        ("other.internal", False),
    ],
)
async def test_allowed_hosts_and_the_public_urls_host_are_allowed(
    aiohttp_client: AiohttpClient, settings: Settings, host: str, allowed: bool
) -> None:
    server = changed(
        settings, "server", allowed_hosts=("bot.internal",), public_url="https://bot.example.com"
    )
    client = await aiohttp_client(create_app(server))

    response = await client.get("/api/agents", headers={"Host": host})

    assert response.status == (200 if allowed else 421)


async def test_the_host_is_checked_first_then_the_origin_then_the_key(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(changed(settings, "auth", api_keys=(KEY,))))
    foreign = {"Host": "evil.example", "Origin": "http://evil.example", "Content-Type": "text/plain"}

    host_first = await client.post("/api/livekit/create-room", data="{}", headers=foreign)
    origin_next = await client.post(
        "/api/livekit/create-room", data="{}", headers={**foreign, "Host": "localhost"}
    )

    assert host_first.status == 421
    assert origin_next.status == 403
