"""Shared fixtures: settings pointed at the real livekit-server, the app and a LiveKit client."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from inspect import isawaitable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests.servers import (
    API_KEY,
    API_SECRET,
    free_port,
    livekit_server,
    redis_server,
    shared_state,
    sip_stack,
)
from voicebot.app import create_app
from voicebot.config import Settings, parse_settings
from voicebot.livekit import LiveKitGateway
from voicebot.livekit_server import EmbeddedLiveKitServer

__all__ = ["livekit_server", "redis_server", "shared_state", "sip_stack"]

SettingsFactory = Callable[..., Settings]

ROOT = Path(__file__).resolve().parent.parent
# Tests talk to the agents users get: the ones defined in the shipped config.toml.
AGENTS = tomllib.loads((ROOT / "config.toml").read_text())["agents"]


def make_settings(livekit_url: str, **livekit: Any) -> Settings:
    """Settings for a test: the given LiveKit URL, the test keys and two agents."""
    raw = {
        "livekit": {"url": livekit_url, "api_key": API_KEY, "api_secret": API_SECRET, **livekit},
        "logging": {"format": "json"},
        "agents": AGENTS,
    }
    return parse_settings(raw, {})


@pytest.fixture
def settings(livekit_server: EmbeddedLiveKitServer) -> Settings:
    """Settings that reach the session's real livekit-server."""
    return make_settings(livekit_server.url)


@pytest.fixture
def unreachable_settings() -> Settings:
    """Settings whose LiveKit URL has nothing listening behind it."""
    return make_settings(f"ws://127.0.0.1:{free_port()}", request_timeout_s=2.0)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, settings: Settings) -> TestClient[Any, Any]:
    """The voicebot API, started against the real livekit-server."""
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def livekit(settings: Settings) -> AsyncIterator[LiveKitGateway]:
    """A server-API client for assertions about what exists on the LiveKit server."""
    lk = settings.livekit
    gateway = LiveKitGateway(lk.url, lk.api_key, lk.api_secret)
    yield gateway
    await gateway.close()


def changed(settings: Settings, section: str, **values: Any) -> Settings:
    """The same settings with some keys of one section changed: (settings, "sessions", max_concurrent=2)."""
    return replace(settings, **{section: replace(getattr(settings, section), **values)})


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    within_s: float,
    what: str,
    *,
    state: Callable[[], object] | None = None,
) -> None:
    """Wait until `condition()` holds, for state that announces its changes to nobody.

    Fails with `what` (and `state()`, the last state seen, when given) if it does not hold within `within_s`.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        held = condition()
        if isawaitable(held):
            held = await held
        if held:
            return
        if loop.time() >= deadline:
            seen = f"; last seen: {state()!r}" if state is not None else ""
            pytest.fail(f"not within {within_s:g}s: {what}{seen}")
        await asyncio.sleep(0.05)
