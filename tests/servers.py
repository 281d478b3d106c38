"""The one fixture module that starts and stops the real servers the tests run against."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator

import pytest

from voicebot.livekit_server import EmbeddedLiveKitServer, LiveKitServerPorts, find_binary

API_KEY = "voicebot-test"
API_SECRET = "voicebot-test-secret-0123456789abcdef"


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port nothing on 127.0.0.1 listens on right now."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
