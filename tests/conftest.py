"""Shared fixtures: settings pointed at the real livekit-server, the app and a LiveKit client."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from inspect import isawaitable
from pathlib import Path
from typing import Any

import psutil
import pytest
import structlog
from aiohttp.test_utils import TestClient
from livekit.agents import utils
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
from voicebot.embedded.livekit_server import EmbeddedLiveKitServer
from voicebot.livekit import LiveKitGateway
from voicebot.logs import configure_logging

__all__ = ["livekit_server", "redis_server", "shared_state", "sip_stack"]

SettingsFactory = Callable[..., Settings]

# How long a test's own tasks and child processes get to finish after it returns, before they count as leaked.
LEAK_GRACE_S = 5.0

ROOT = Path(__file__).resolve().parent.parent
# Tests talk to the agents users get: the ones defined in the shipped config.toml.
AGENTS = tomllib.loads((ROOT / "config.toml").read_text())["agents"]


def make_settings(livekit_url: str, **livekit: Any) -> Settings:
    """Settings for a test: the given LiveKit URL, the test keys and two agents."""
    raw = {
        "livekit": {"url": livekit_url, "api_key": API_KEY, "api_secret": API_SECRET, **livekit},
        "logging": {"format": "json"},
        # Measured admission off: the test process's loop also runs the tests' own clients, so its load says
        # nothing about voicebot's (tests/integration/test_admission.py turns it on).
        "sessions": {
            "admission_max_loop_lag_ms": 0,
            "admission_max_cpu": 0,
            "admission_max_model_wait_ms": 0,
            "admission_max_machine_cpu": 0,
        },
        # The in-process suites hear with pocketsphinx and speak with espeak-ng: exact transcripts of the
        # rules' phrases and a greeting as long as every synthesis of it. The default pipeline (Moonshine and
        # Piper) is what voicebot processes started by the tests run, and what tests/integration/
        # test_offline_voices.py talks to.
        "models": {"stt": "pocketsphinx", "tts": "espeak"},
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


def _running_children() -> dict[int, psutil.Process]:
    """This process's live descendants (zombies are reaped by their owners), by pid."""
    children = {}
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                children[child.pid] = child
        except psutil.NoSuchProcess:
            continue
    return children


def _started_by_us(child: psutil.Process, older: set[int]) -> bool:
    """Whether a child came from this process or a new child of it, not from one that was already there
    (chromium, started once per run, starts helper processes of its own whenever it likes)."""
    try:
        return not any(parent.pid in older for parent in child.parents())
    except psutil.NoSuchProcess:
        return False


def _describe(child: psutil.Process) -> str:
    try:
        return " ".join(child.cmdline()[:3]) or child.name()
    except psutil.NoSuchProcess:
        return "(gone)"


@pytest.fixture(autouse=True)
async def no_leaked_tasks_or_processes() -> AsyncIterator[None]:
    """Fails a test that leaves asyncio tasks or child processes running after its fixtures are gone.

    Session- and module-scoped fixtures are set up before this one and torn down after it, so what
    they own (the real servers, the browser) is never counted.
    """
    tasks_before = asyncio.all_tasks()
    children_before = set(_running_children())
    yield
    this_task = asyncio.current_task()

    def leaked_tasks() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() - tasks_before if t is not this_task and not t.done()]

    def leaked_children() -> dict[int, psutil.Process]:
        return {
            pid: child
            for pid, child in _running_children().items()
            if pid not in children_before and _started_by_us(child, children_before)
        }

    deadline = asyncio.get_running_loop().time() + LEAK_GRACE_S
    # Nothing announces a task's or a child's end to a bystander, so the state itself is polled.
    while (leaked_tasks() or leaked_children()) and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    tasks, children = leaked_tasks(), leaked_children()
    for task in tasks:
        task.cancel()
    for child in children.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    assert not tasks, f"the test left {len(tasks)} task(s) running: {[t.get_coro() for t in tasks]}"
    left = {pid: _describe(child) for pid, child in children.items()}
    assert not children, f"the test left child processes running: {left}"


@pytest.fixture
def production_log() -> Iterator[io.StringIO]:
    """voicebot's log lines at info, rendered as in production (JSON), whatever logged them; restored after.

    Regression: a test that configured production logging and restored only the root handlers left
    structlog configured (and its loggers cached), so later tests' `capture_logs()` saw nothing.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    saved = structlog.get_config()
    stream = io.StringIO()
    configure_logging("info", "json", stream, cache_loggers=False)
    yield stream
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


async def loop_ticks_while(work: Awaitable[object]) -> int:
    """How many times the event loop went round while `work` ran: CPU work done on the loop would let it go
    round about once, work done off it many times."""
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    try:
        await work
    finally:
        await utils.aio.cancel_and_wait(ticker)
    return ticks
