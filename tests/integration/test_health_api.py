"""Health, liveness and readiness with LiveKit up and down."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from voicebot.app import create_app
from voicebot.config import Settings

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_health_reports_process_and_reachable_livekit(
    client: Client, settings: Settings, method: str
) -> None:
    response = await client.request(method, "/api/livekit/health")

    assert response.status == 200
    report = await response.json()
    assert report["status"] == "ok"
    assert report["process"]["pid"] > 0
    assert report["process"]["uptime_s"] >= 0
    assert report["livekit"]["reachable"] is True
    assert report["livekit"]["url"] == settings.livekit.url
    assert 0 < report["livekit"]["rtt_ms"] < 10_000
    assert report["redis"] == {"configured": False}
    assert report["sip"] == {"enabled": False}
    assert report["cluster"]["state"] == "memory"
    assert set(report["process"]["event_loop"]) == {"last_ms", "max_ms", "p99_ms", "samples", "blocked_count"}
    assert report["sessions"]["live"] == 0
    assert report["sessions"]["limit"] == settings.sessions.max_concurrent
    capacity = report["capacity"]
    assert capacity["process_id"] == report["cluster"]["process_id"]
    assert (capacity["limit"], capacity["live"]) == (settings.sessions.max_concurrent, 0)
    sessions = settings.sessions
    assert (capacity["max_loop_lag_ms"], capacity["max_cpu"], capacity["max_model_wait_ms"]) == (
        sessions.admission_max_loop_lag_ms,
        sessions.admission_max_cpu,
        sessions.admission_max_model_wait_ms,
    )
    assert capacity["loop_lag_ms"] >= 0
    assert capacity["loop_cpu"] >= 0
    assert capacity["model_wait_ms"] >= 0
    assert isinstance(capacity["admitting"], bool)


async def test_health_is_503_when_livekit_is_unreachable(
    aiohttp_client: AiohttpClient, unreachable_settings: Settings
) -> None:
    client = await aiohttp_client(create_app(unreachable_settings))

    response = await client.get("/api/livekit/health")

    assert response.status == 503
    report = await response.json()
    assert report["status"] == "unavailable"
    assert report["livekit"]["reachable"] is False
    assert report["livekit"]["rtt_ms"] is None
    assert "cannot connect" in report["livekit"]["error"]


async def test_liveness_and_readiness_with_livekit_up(client: Client) -> None:
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200


async def test_process_is_alive_but_not_ready_without_livekit(
    aiohttp_client: AiohttpClient, unreachable_settings: Settings
) -> None:
    client = await aiohttp_client(create_app(unreachable_settings))

    assert (await client.get("/healthz")).status == 200
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "not_ready"
