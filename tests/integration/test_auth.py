"""API keys: who may call which endpoint, what health shows without a key, and the start-up refusals."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from livekit import api
from pytest_aiohttp import AiohttpClient

from tests.conftest import changed
from tests.integration.test_cli import run_cli
from tests.integration.test_webhooks import caller_joined, signature
from tests.servers import free_livekit_ports
from tests.voicebot_process import cli_env, serve_env, start_voicebot
from voicebot.api.auth import API_KEY_ID, key_id
from voicebot.api.paths import OPS_HISTORY_PATH
from voicebot.app import create_app
from voicebot.config import Settings

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]
KEY = "test-key-4f1d9a7c2b"
OTHER_KEY = "test-key-second-one"
JSON = {"Content-Type": "application/json"}

# Every /api endpoint but the webhook and health, each with a body it would accept; and the metrics.
ENDPOINTS: list[tuple[str, str, dict[str, str] | None]] = [
    ("GET", "/metrics", None),
    ("POST", "/api/livekit/create-room", {"agent_id": "faq"}),
    ("POST", "/api/livekit/job-notification", {"agent_id": "faq", "room_name": "no-such-room"}),
    ("GET", "/api/sessions", None),
    ("DELETE", "/api/sessions/no-such-room", None),
    ("GET", "/api/sessions/no-such-room/transcript", None),
    ("GET", "/api/agents", None),
    ("GET", OPS_HISTORY_PATH, None),
    ("POST", "/api/calls", {"agent_id": "faq", "to": "+15550100"}),
    ("GET", "/api/no-such-endpoint", None),
]
ENDPOINT_IDS = [f"{method} {path}" for method, path, _ in ENDPOINTS]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def call(client: Client, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return await client.request(method, path, json=body, headers=headers)


@pytest.fixture
async def keyed(aiohttp_client: AiohttpClient, settings: Settings) -> Client:
    """voicebot with two API keys."""
    return await aiohttp_client(create_app(changed(settings, "auth", api_keys=(KEY, OTHER_KEY))))


@pytest.fixture
async def public(aiohttp_client: AiohttpClient, settings: Settings) -> Client:
    """voicebot with a key, open to anonymous create-room at two a minute per client."""
    opened = changed(settings, "auth", api_keys=(KEY,), public_create_room=True, create_room_per_minute=2)
    return await aiohttp_client(create_app(opened))


async def expect_unauthorized(response: Any) -> None:
    assert response.status == 401, await response.text()
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (await response.json())["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=ENDPOINT_IDS)
@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong-key"), {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY}],
    ids=["no-key", "wrong-key", "basic-scheme", "no-scheme"],
)
async def test_every_api_endpoint_refuses_a_missing_or_wrong_key(
    keyed: Client, method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    await expect_unauthorized(await call(keyed, method, path, body, headers))


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS, ids=ENDPOINT_IDS)
async def test_with_a_key_every_endpoint_answers_as_it_would_without_keys(
    keyed: Client, method: str, path: str, body: Any
) -> None:
    response = await call(keyed, method, path, body, bearer(OTHER_KEY))

    assert response.status != 401, await response.text()
    assert response.status in (200, 404, 409), await response.text()


async def test_a_key_opens_create_room(keyed: Client, settings: Settings) -> None:
    response = await keyed.post("/api/livekit/create-room", json={"agent_id": "faq"}, headers=bearer(KEY))

    assert response.status == 200
    body = await response.json()
    assert api.TokenVerifier(settings.livekit.api_key, settings.livekit.api_secret).verify(
        body["access_token"]
    )


async def test_handlers_see_which_key_called_by_a_fingerprint_not_the_key(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    opened = changed(settings, "auth", api_keys=(KEY, OTHER_KEY), public_create_room=True)
    app = create_app(opened)

    async def whoami(request: web.Request) -> web.Response:
        return web.json_response({"api_key_id": request.get(API_KEY_ID, "missing")})

    # A route of the test's own, on the public path, to read what the middleware left on the request.
    app.router.add_get("/api/agents/whoami", whoami)
    client = await aiohttp_client(app)

    seen = {}
    for name, headers in (("key", bearer(KEY)), ("other", bearer(OTHER_KEY))):
        response = await client.get("/api/agents/whoami", headers=headers)
        seen[name] = (await response.json())["api_key_id"]
    created = await client.post("/api/livekit/create-room", json={"agent_id": "nobody"})

    assert seen == {"key": key_id(KEY), "other": key_id(OTHER_KEY)}
    assert all(len(value) == 12 and KEY not in value for value in seen.values())
    assert created.status == 404


async def test_the_webhook_is_checked_by_its_signature_alone(keyed: Client) -> None:
    event = caller_joined("voicebot_faq_00000000", kind="STANDARD")

    signed = await keyed.post(
        "/api/livekit/webhook",
        data=event,
        headers={"Content-Type": "application/webhook+json", "Authorization": signature(event)},
    )
    unsigned = await keyed.post(
        "/api/livekit/webhook", data=event, headers={"Content-Type": "application/webhook+json"}
    )

    assert signed.status == 200, await signed.text()
    assert unsigned.status == 401
    assert (await unsigned.json())["error"]["code"] == "unsigned_webhook"


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("headers", [{}, bearer("wrong-key")], ids=["no-key", "wrong-key"])
async def test_health_without_a_valid_key_shows_only_its_status(
    keyed: Client, method: str, headers: dict[str, str]
) -> None:
    health = await keyed.request(method, "/api/livekit/health", headers=headers)
    live = await keyed.get("/healthz", headers=headers)
    ready = await keyed.get("/readyz", headers=headers)

    assert (health.status, await health.json()) == (200, {"status": "ok"})
    assert (live.status, await live.json()) == (200, {"status": "alive"})
    assert (ready.status, await ready.json()) == (200, {"status": "ready"})


async def test_health_with_a_key_shows_the_detail(keyed: Client, settings: Settings) -> None:
    response = await keyed.get("/api/livekit/health", headers=bearer(KEY))

    report = await response.json()
    assert report["process"]["pid"] > 0
    assert report["livekit"]["url"] == settings.livekit.url


async def test_readiness_without_a_key_hides_why_livekit_is_unreachable(
    aiohttp_client: AiohttpClient, unreachable_settings: Settings
) -> None:
    client = await aiohttp_client(create_app(changed(unreachable_settings, "auth", api_keys=(KEY,))))

    anonymous = await client.get("/readyz")
    with_key = await client.get("/readyz", headers=bearer(KEY))
    health = await client.get("/api/livekit/health")

    assert (anonymous.status, await anonymous.json()) == (503, {"status": "not_ready"})
    assert with_key.status == 503
    assert "unreachable" in (await with_key.json())["error"]["message"]
    assert (health.status, await health.json()) == (503, {"status": "unavailable"})


async def test_the_pages_stay_open_with_keys(keyed: Client) -> None:
    for path in ("/", "/static/app.js", "/ops", "/static/ops.js", "/static/api-key.js"):
        response = await keyed.get(path)
        assert response.status == 200, path
        await response.read()


async def test_public_create_room_opens_create_room_and_agents_only(public: Client) -> None:
    room = await public.post("/api/livekit/create-room", json={"agent_id": "faq"})
    agents = await public.get("/api/agents")

    assert room.status == 200, await room.text()
    assert agents.status == 200
    for method, path, body in ENDPOINTS:
        if path not in ("/api/livekit/create-room", "/api/agents"):
            await expect_unauthorized(await call(public, method, path, body, {}))
    # A wrong key is still wrong, even where no key is needed.
    await expect_unauthorized(await public.get("/api/agents", headers=bearer("wrong-key")))


async def test_anonymous_create_room_is_rate_limited_per_client(public: Client) -> None:
    # An unknown agent creates no room but counts against the limit all the same.
    statuses = []
    for _ in range(3):
        response = await public.post("/api/livekit/create-room", json={"agent_id": "nobody"})
        statuses.append(response.status)
    limited = response

    assert statuses == [404, 404, 429]
    assert (await limited.json())["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    with_key = await public.post("/api/livekit/create-room", json={"agent_id": "nobody"}, headers=bearer(KEY))
    assert with_key.status == 404


@pytest.mark.parametrize(
    ("trusted_proxies", "separate"),
    [(("127.0.0.1",), True), (("127.0.0.0/8", "::1"), True), (("10.0.0.0/8",), False), ((), False)],
    ids=["peer-trusted", "peer-in-trusted-cidr", "peer-not-trusted", "no-proxies"],
)
async def test_x_forwarded_for_names_the_client_only_from_a_trusted_proxy(
    aiohttp_client: AiohttpClient, settings: Settings, trusted_proxies: tuple[str, ...], separate: bool
) -> None:
    opened = changed(settings, "auth", api_keys=(KEY,), public_create_room=True, create_room_per_minute=1)
    client = await aiohttp_client(create_app(changed(opened, "server", trusted_proxies=trusted_proxies)))

    async def create_from(address: str) -> int:
        headers = {"X-Forwarded-For": f"198.51.100.7, {address}"}
        response = await client.post("/api/livekit/create-room", json={"agent_id": "nobody"}, headers=headers)
        return response.status

    first = await create_from("203.0.113.1")
    again = await create_from("203.0.113.1")
    other = await create_from("203.0.113.2")

    assert (first, again) == (404, 429)
    assert other == (404 if separate else 429)


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["serve", "--host", "0.0.0.0"], {}),
        (["serve"], {"VOICEBOT_SERVER_HOST": "0.0.0.0"}),
        (["serve", "--host", "192.0.2.10"], {}),
    ],
    ids=["host-flag", "host-env", "lan-address"],
)
async def test_serving_beyond_loopback_without_a_key_is_refused(args: list[str], env: dict[str, str]) -> None:
    code, out, err = await run_cli(*args, env=cli_env(**env))

    assert code == 2
    assert out == ""
    (line,) = err.strip().splitlines()
    assert "VOICEBOT_AUTH_API_KEYS" in line
    assert "python -m voicebot keys" in line


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["serve"], {"LIVEKIT_URL": "ws://livekit.example.com:7880"}),
        (["serve", "--host", "0.0.0.0"], {"VOICEBOT_AUTH_API_KEYS": KEY}),
    ],
    ids=["remote-livekit", "public-http"],
)
async def test_the_shipped_livekit_secret_off_loopback_is_refused(
    args: list[str], env: dict[str, str]
) -> None:
    code, _, err = await run_cli(*args, env=cli_env(**env))

    assert code == 2
    (line,) = err.strip().splitlines()
    assert "livekit.api_secret" in line
    assert "LIVEKIT_API_SECRET" in line


async def test_keys_prints_an_env_file_whose_keys_work() -> None:
    code, out, _ = await run_cli("keys")

    assert code == 0
    lines = dict(line.split("=", 1) for line in out.strip().splitlines())
    assert list(lines) == [
        "VOICEBOT_AUTH_API_KEYS",
        "LIVEKIT_API_KEY",
        "LIVEKIT_API_SECRET",
        "REDIS_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
    ]
    assert len(lines["LIVEKIT_API_SECRET"]) >= 32
    # compose.yaml writes it into a redis:// URL.
    assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", lines["REDIS_PASSWORD"])
    assert all(value and not any(c in value for c in " ,'\"") for value in lines.values())
    _, again, _ = await run_cli("keys")
    assert set(again.splitlines()).isdisjoint(out.splitlines())

    bot = await start_voicebot(**serve_env(free_livekit_ports()), **lines)
    try:
        async with aiohttp.ClientSession(base_url=bot.base) as http:
            async with http.get("/api/agents") as anonymous:
                assert anonymous.status == 401
            headers = bearer(lines["VOICEBOT_AUTH_API_KEYS"])
            async with http.post(
                "/api/livekit/create-room", json={"agent_id": "faq"}, headers=headers
            ) as created:
                assert created.status == 200, await created.text()
                room = await created.json()
    finally:
        await bot.stop()
    claims = api.TokenVerifier(lines["LIVEKIT_API_KEY"], lines["LIVEKIT_API_SECRET"]).verify(
        room["access_token"]
    )
    assert claims.video is not None
    assert claims.video.room == room["room_name"]
