"""The one fixture module that starts and stops the real servers the tests run against."""

from __future__ import annotations

import os
import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import pytest

from voicebot.api.paths import WEBHOOK_PATH
from voicebot.config import SipSettings
from voicebot.embedded.livekit_server import EmbeddedLiveKitServer, LiveKitServerPorts, find_binary
from voicebot.embedded.livekit_sip import EmbeddedSipServer
from voicebot.embedded.redis_server import EmbeddedRedis

API_KEY = "voicebot-test"
API_SECRET = "voicebot-test-secret-0123456789abcdef"


# Ports handed to servers the tests start. Below the kernel's ephemeral range (32768-60999 here), so no
# outgoing connection (a LiveKit client, chromium, Redis) takes one between our check and the server's bind,
# and clear of the fixed ports voicebot uses by default (5060, 6379, 7880-7882, 8001, 8082, 10000-10100).
TEST_PORTS = range(15000, 20000)
_ports = random.Random()  # noqa: S311 - spreads test ports, guards nothing
_handed_out: set[int] = set()


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port nothing on 127.0.0.1 listens on right now, never handed out before in this run.

    Regression: ports from the ephemeral range were taken by outgoing connections before the server that
    was to listen on them had started ("bind: address already in use").
    """
    return free_ports(1, kind)


def free_ports(count: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """The first of `count` consecutive ports, each as `free_port` hands them out.

    Regression: sipp binds its media port and the three after it (audio RTCP, video RTP and RTCP); with only
    the first checked, a clean clone's run had it exit 254, "Unable to bind video RTP socket ... Address
    already in use", on a port another test held.
    """
    for _ in range(1000):
        first = _ports.choice(TEST_PORTS[: len(TEST_PORTS) - count + 1])
        block = range(first, first + count)
        if any(port in _handed_out for port in block) or not all(_bindable(port, kind) for port in block):
            continue
        _handed_out.update(block)
        return first
    raise RuntimeError(f"no {count} free ports left in {TEST_PORTS}")


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_livekit_ports() -> LiveKitServerPorts:
    """HTTP, TCP and UDP ports for one livekit-server."""
    return LiveKitServerPorts(free_port(), free_port(), free_port(socket.SOCK_DGRAM))


@pytest.fixture(scope="session")
async def livekit_server() -> AsyncIterator[EmbeddedLiveKitServer]:
    """A real livekit-server on free loopback ports for the whole run.

    A missing binary is an error, never a skip: `make test` builds it before pytest runs.
    """
    binary = find_binary(os.environ.get("LIVEKIT_SERVER_BIN", ""))
    server = EmbeddedLiveKitServer(binary, free_livekit_ports(), API_KEY, API_SECRET)
    await server.start()
    yield server
    await server.stop()


def livekit_on(redis: EmbeddedRedis, webhook_urls: tuple[str, ...] = ()) -> EmbeddedLiveKitServer:
    """A livekit-server on free ports in multi-node mode on `redis` (not started yet).

    It creates a room someone joins, as phone calls need (see server_config).
    """
    return EmbeddedLiveKitServer(
        find_binary(os.environ.get("LIVEKIT_SERVER_BIN", "")),
        free_livekit_ports(),
        API_KEY,
        API_SECRET,
        redis=redis.address,
        webhook_urls=webhook_urls,
        auto_create_rooms=True,
    )


@dataclass
class SipStack:
    """Redis, a livekit-server on it that sends webhooks to `webhook_port`, and livekit-sip beside them."""

    redis: EmbeddedRedis
    livekit: EmbeddedLiveKitServer
    sip: EmbeddedSipServer
    sip_settings: SipSettings
    webhook_port: int
    """Where the voicebot under test must listen to get the server's webhooks."""


def free_sip_port() -> int:
    """A port free for both UDP and TCP, as SIP listens on both."""
    while True:
        port = free_port(socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


@asynccontextmanager
async def running_sip_stack(webhook_port: int | None = None) -> AsyncIterator[SipStack]:
    """Redis, livekit-server on it and livekit-sip, started in that order and stopped in reverse.

    livekit-server sends its webhooks to `webhook_port` (a free port when not given). The tests' fixture and
    the phone benchmark both run the stack this way.
    """
    redis = EmbeddedRedis(free_port())
    webhook_port = webhook_port or free_port()
    livekit = livekit_on(redis, webhook_urls=(f"http://127.0.0.1:{webhook_port}{WEBHOOK_PATH}",))
    rtp_start = 20000 + (os.getpid() % 200) * 100
    settings = SipSettings(
        enabled=True,
        port=free_sip_port(),
        rtp_port_start=rtp_start,
        rtp_port_end=rtp_start + 99,
        health_port=free_port(),
    )
    sip = EmbeddedSipServer(
        settings,
        livekit_url=livekit.url,
        api_key=API_KEY,
        api_secret=API_SECRET,
        redis=redis.address,
        # livekit-sip refuses calls ("cpu exhausted") while the machine's idle CPU is under
        # NumCPU * (1 - max_cpu_utilization); a 2-core machine running the suite's browser, servers and
        # clients reaches 0.99 too. 1.0 (the most it accepts) switches the check off, for tests only.
        extra_config={"max_cpu_utilization": 1.0},
    )
    try:
        await redis.start()
        await livekit.start()
        await sip.start()
        yield SipStack(redis, livekit, sip, replace(settings, health_url=sip.health_url), webhook_port)
    finally:
        await sip.stop()
        await livekit.stop()
        await redis.stop()


@pytest.fixture(scope="session")
async def sip_stack() -> AsyncIterator[SipStack]:
    """The phone-call infrastructure of the issue, started once for the run; a missing program fails it."""
    async with running_sip_stack() as stack:
        yield stack


@pytest.fixture(scope="session")
async def redis_server() -> AsyncIterator[EmbeddedRedis]:
    """A redis-server of its own for the state-store tests, which empty it as they please."""
    redis = EmbeddedRedis(free_port())
    try:
        await redis.start()
        yield redis
    finally:
        await redis.stop()


@dataclass
class SharedState:
    """One Redis on disk, and a livekit-server in multi-node mode on it: what a scaled-out install runs."""

    redis: EmbeddedRedis
    livekit: EmbeddedLiveKitServer


@pytest.fixture
async def shared_state(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SharedState]:
    """Fresh for each test, since tests here kill processes and restart Redis."""
    redis = EmbeddedRedis(free_port(), data_dir=tmp_path_factory.mktemp("redis"))
    livekit = livekit_on(redis)
    try:
        await redis.start()
        await livekit.start()
        yield SharedState(redis, livekit)
    finally:
        await livekit.stop()
        await redis.stop()
