"""The embedded livekit-server starts, serves and stops cleanly, whatever state it is in."""

from __future__ import annotations

import asyncio
import ipaddress
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


async def test_a_client_on_this_machine_connects_on_every_pair_it_checks(
    livekit_server: EmbeddedLiveKitServer,
) -> None:
    """Regression (issue 12): the server offered a 127.0.0.1 candidate, which WebRTC clients never gather
    themselves. Their check of that pair went unanswered and the pair that works was checked ~50 ms later:
    every agent's and every person's join took ~45 ms longer (ICE 65-75 ms instead of 15-25 ms)."""
    gateway = LiveKitGateway(livekit_server.url, API_KEY, API_SECRET)
    await gateway.create_room("ice-pairs", empty_timeout_s=60, departure_timeout_s=60)
    room = rtc.Room()
    await room.connect(
        livekit_server.url,
        sign_token(API_KEY, API_SECRET, "checks", join_grants("ice-pairs"), ttl_s=60),
        rtc.RoomOptions(single_peer_connection=True),
    )
    try:
        # Long enough for any check still in flight to be answered; an unreachable pair never is.
        await asyncio.sleep(0.5)
        stats = await room.get_rtc_stats()
    finally:
        await room.disconnect()
        await gateway.close()

    reports = [*stats.publisher_stats, *stats.subscriber_stats]
    offered = [
        r.remote_candidate.candidate.address for r in reports if r.WhichOneof("stats") == "remote_candidate"
    ]
    assert offered, "the server should have offered candidates"
    assert not [address for address in offered if ipaddress.ip_address(address).is_loopback], offered
    pairs = [r.candidate_pair.candidate_pair for r in reports if r.WhichOneof("stats") == "candidate_pair"]
    checked = [pair for pair in pairs if pair.requests_sent > 0]
    assert checked, f"the client should have checked a candidate pair: {pairs}"
    unanswered = [pair for pair in checked if pair.responses_received == 0]
    assert not unanswered, f"every pair checked should have answered: {unanswered}"


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
