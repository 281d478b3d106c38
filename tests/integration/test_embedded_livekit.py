"""The embedded livekit-server starts, serves and stops cleanly, whatever state it is in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from livekit import rtc

from tests.servers import API_KEY, API_SECRET, free_livekit_ports
from voicebot.embedded.livekit_server import EmbeddedLiveKitServer, find_binary
from voicebot.embedded.runner import EmbeddedProgramError
from voicebot.livekit import LiveKitGateway, join_grants, sign_token

pytestmark = pytest.mark.integration


def fresh_server() -> EmbeddedLiveKitServer:
    binary = find_binary(os.environ.get("LIVEKIT_SERVER_BIN", ""))
    return EmbeddedLiveKitServer(binary, free_livekit_ports(), API_KEY, API_SECRET)


async def stop_and_get_returncode(server: EmbeddedLiveKitServer) -> int | None:
    assert server.pid is not None
    return await server.stop()


async def test_stop_right_after_start_exits_cleanly() -> None:
    """Regression: livekit-server ignores a SIGTERM in the 100 ms after its port opens; we were killing it."""
    server = fresh_server()
    await server.start()

    assert await stop_and_get_returncode(server) == 0
    assert server.pid is None


async def test_stop_with_a_participant_connected_exits_cleanly() -> None:
    """Regression: livekit-server's first SIGTERM waits for every participant; the second closes rooms."""
    server = fresh_server()
    await server.start()
    gateway = LiveKitGateway(server.url, API_KEY, API_SECRET)
    await gateway.create_room("held-open", empty_timeout_s=60, departure_timeout_s=60)
    room = rtc.Room()
    await room.connect(
        server.url, sign_token(API_KEY, API_SECRET, "stays", join_grants("held-open"), ttl_s=60)
    )
    try:
        assert await stop_and_get_returncode(server) == 0
    finally:
        await room.disconnect()
        await gateway.close()


async def test_a_port_in_use_fails_start_instead_of_trusting_the_other_server(
    livekit_server: EmbeddedLiveKitServer,
) -> None:
    """Regression: the readiness check was answered by the server already on the port."""
    clash = EmbeddedLiveKitServer(livekit_server.binary, livekit_server.ports, API_KEY, API_SECRET)

    with pytest.raises(EmbeddedProgramError, match=f"port TCP {livekit_server.ports.http}.* already in use"):
        await clash.start()
    assert clash.pid is None


async def test_a_server_that_exits_at_start_reports_its_log(tmp_path: Path) -> None:
    failing = tmp_path / "livekit-server"
    failing.write_text("#!/bin/sh\necho 'could not parse config: yaml: line 3' >&2\nexit 3\n")
    failing.chmod(0o755)
    server = EmbeddedLiveKitServer(failing, free_livekit_ports(), API_KEY, API_SECRET)

    with pytest.raises(EmbeddedProgramError, match="exited with code 3") as error:
        await server.start()
    assert "could not parse config" in str(error.value)
    assert server.pid is None
