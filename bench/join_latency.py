"""Join latency: asking for an agent until it is in the room, voicebot against the standard worker.

voicebot: POST /api/livekit/create-room, then the client joins with the returned token.
Standard worker: the equivalent server-side calls (CreateRoom + CreateAgentDispatch) and the same client join,
with bench/standard_worker.py registered (livekit-agents' process executor, warm idle processes) running the
same agent. Both run in one run, against one livekit-server, alternating room by room. Per room it records:

- visible: request -> the agent participant visible to the client (the client's own connect included);
- joined: request -> the agent joined, by livekit-server's own clock (ParticipantInfo.joined_at_ms);
- client_connect: the client's rtc connect alone, the floor under `visible` on this machine.

    .venv/bin/python -m bench.join_latency [--rooms 30]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from livekit import api, rtc

from bench.common import livekit_server, post_json, standard_worker, summary, voicebot_process, write_result
from bench.standard_worker import AGENT_NAME
from tests.servers import API_KEY, API_SECRET
from voicebot.livekit import LiveKitGateway

AGENT_TIMEOUT_S = 30.0
VOICEBOT = "voicebot_in_process"
STANDARD = "standard_worker_process_executor"
SETTLE_S = 1.0  # between rooms, so one system's greeting does not load the CPU during the other's join


@dataclass
class Join:
    visible_ms: float
    joined_ms: float
    client_connect_ms: float


Request = Callable[[], Awaitable[tuple[str, str, str]]]


async def measure(request: Request, gateway: LiveKitGateway) -> Join:
    """Time one request for an agent; `request` returns (room name, url, client token)."""
    started_wall, started = time.time(), time.perf_counter()
    room_name, url, token = await request()
    room = rtc.Room()
    seen = asyncio.Event()

    def on_participant(participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            seen.set()

    room.on("participant_connected", on_participant)
    connecting = time.perf_counter()
    await room.connect(url, token)
    connected = time.perf_counter()
    if any(p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT for p in room.remote_participants.values()):
        seen.set()
    await asyncio.wait_for(seen.wait(), AGENT_TIMEOUT_S)
    visible = time.perf_counter()
    agent = next(p for p in await gateway.participants(room_name) if p.kind == api.ParticipantInfo.Kind.AGENT)
    await room.disconnect()
    return Join(
        visible_ms=(visible - started) * 1000,
        joined_ms=agent.joined_at_ms - started_wall * 1000,
        client_connect_ms=(connected - connecting) * 1000,
    )


async def run(rooms: int) -> dict[str, object]:
    async with livekit_server() as server, aiohttp.ClientSession() as http:
        gateway = LiveKitGateway(server.url, API_KEY, API_SECRET)
        lkapi = api.LiveKitAPI(server.url, API_KEY, API_SECRET, session=http)
        async with (
            voicebot_process(server, VOICEBOT_SESSIONS_MAX_CONCURRENT=str(rooms + 5)) as (_, base),
            standard_worker(server),
        ):

            async def via_voicebot() -> tuple[str, str, str]:
                room = await post_json(http, f"{base}/api/livekit/create-room", {"agent_id": "agent-123"})
                return room["room_name"], room["livekit_url"], room["access_token"]

            counter = iter(range(10**6))

            async def via_standard_worker() -> tuple[str, str, str]:
                name = f"bench_standard_{next(counter)}"
                await lkapi.room.create_room(api.CreateRoomRequest(name=name, empty_timeout=60))
                await lkapi.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=name)
                )
                _, token = gateway.user_token(name, ttl_s=600)
                return name, server.url, token

            # Warm-up: the worker must have registered, and both sides have first-call costs.
            for _ in range(3):
                await measure(via_voicebot, gateway)
                await _until_registered(lambda: measure(via_standard_worker, gateway))
            results: dict[str, list[Join]] = {"voicebot": [], "standard": []}
            for _ in range(rooms):
                for key, request in (("voicebot", via_voicebot), ("standard", via_standard_worker)):
                    await asyncio.sleep(SETTLE_S)
                    results[key].append(await measure(request, gateway))
        await gateway.close()
    systems = {
        label: {
            "visible": summary([j.visible_ms for j in results[key]]),
            "joined": summary([j.joined_ms for j in results[key]]),
            "client_connect": summary([j.client_connect_ms for j in results[key]]),
        }
        for key, label in (("voicebot", VOICEBOT), ("standard", STANDARD))
    }
    return {
        "unit": "ms",
        "rooms": rooms,
        **systems,
        "speedup_p50_visible": round(
            systems[STANDARD]["visible"]["p50"] / systems[VOICEBOT]["visible"]["p50"], 2
        ),
        "speedup_p50_joined": round(
            systems[STANDARD]["joined"]["p50"] / systems[VOICEBOT]["joined"]["p50"], 2
        ),
        "targets": {"voicebot_p50_under_ms": 100, "speedup_at_least": 3},
    }


async def _until_registered(attempt: Callable[[], Awaitable[Join]]) -> Join:
    deadline = time.monotonic() + 60
    while True:
        try:
            return await attempt()
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rooms", type=int, default=30)
    args = parser.parse_args()
    result = asyncio.run(run(args.rooms))
    path = write_result("join_latency", result)
    print(f"\njoin latency over {args.rooms} rooms per system, ms (p50 / p95)")
    print(f"{'':34}{'visible':>16}{'joined':>16}{'client connect':>18}")
    for label, key in (
        ("voicebot (in-process task)", VOICEBOT),
        ("standard worker (process pool)", STANDARD),
    ):
        row = result[key]
        assert isinstance(row, dict)
        cells = [
            f"{row[m]['p50']:.0f} / {row[m]['p95']:.0f}" for m in ("visible", "joined", "client_connect")
        ]
        print(f"{label:34}{cells[0]:>16}{cells[1]:>16}{cells[2]:>18}")
    print(
        f"speedup at p50: {result['speedup_p50_visible']}x visible, {result['speedup_p50_joined']}x joined"
        f"   (written to {path.relative_to(path.parents[2])})"
    )


if __name__ == "__main__":
    main()
