"""Join latency: from asking for an agent to the agent being visible to the client.

voicebot: POST /api/livekit/create-room, then the client joins with the returned token.
Standard worker: the equivalent server-side calls (CreateRoom + CreateAgentDispatch), the same client join,
with bench/standard_worker.py registered (livekit-agents' default process executor, warm idle processes).
Both run in the same run, against the same livekit-server, alternating room by room.

    .venv/bin/python -m bench.join_latency [--rooms 30]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
from livekit import api, rtc

from bench.common import livekit_server, post_json, standard_worker, summary, voicebot_process, write_result
from bench.standard_worker import AGENT_NAME
from tests.servers import API_KEY, API_SECRET
from voicebot.livekit import LiveKitGateway

AGENT_TIMEOUT_S = 30.0


async def time_to_agent(join: Callable[[], Awaitable[tuple[str, str]]]) -> float:
    """Milliseconds from the request to an agent participant being visible in the client's room."""
    started = time.perf_counter()
    url, token = await join()
    room = rtc.Room()
    seen = asyncio.Event()

    def on_participant(participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            seen.set()

    room.on("participant_connected", on_participant)
    await room.connect(url, token)
    if any(p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT for p in room.remote_participants.values()):
        seen.set()
    await asyncio.wait_for(seen.wait(), AGENT_TIMEOUT_S)
    elapsed_ms = (time.perf_counter() - started) * 1000
    await room.disconnect()
    return elapsed_ms


async def run(rooms: int) -> dict[str, object]:
    async with livekit_server() as server, aiohttp.ClientSession() as http:
        gateway = LiveKitGateway(server.url, API_KEY, API_SECRET)
        lkapi = api.LiveKitAPI(server.url, API_KEY, API_SECRET, session=http)
        async with (
            voicebot_process(server, VOICEBOT_SESSIONS_MAX_CONCURRENT=str(rooms + 5)) as (_, base),
            standard_worker(server),
        ):

            async def via_voicebot() -> tuple[str, str]:
                room = await post_json(http, f"{base}/api/livekit/create-room", {"agent_id": "agent-123"})
                return room["livekit_url"], room["access_token"]

            counter = iter(range(10**6))

            async def via_standard_worker() -> tuple[str, str]:
                name = f"bench_standard_{next(counter)}"
                await lkapi.room.create_room(api.CreateRoomRequest(name=name, empty_timeout=60))
                await lkapi.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=name)
                )
                _, token = gateway.user_token(name, ttl_s=600)
                return server.url, token

            # Warm-up: the worker must have registered, and both sides have first-call costs.
            for _ in range(3):
                await time_to_agent(via_voicebot)
                await _retry_until_registered(lambda: time_to_agent(via_standard_worker))
            voicebot_ms: list[float] = []
            standard_ms: list[float] = []
            for _ in range(rooms):
                voicebot_ms.append(await time_to_agent(via_voicebot))
                standard_ms.append(await time_to_agent(via_standard_worker))
        await gateway.close()
    voicebot, standard = summary(voicebot_ms), summary(standard_ms)
    return {
        "unit": "ms",
        "rooms": rooms,
        "voicebot_in_process": voicebot,
        "standard_worker_process_executor": standard,
        "speedup_p50": round(standard["p50"] / voicebot["p50"], 2),
        "targets": {"voicebot_p50_under_ms": 100, "speedup_at_least": 3},
    }


async def _retry_until_registered(attempt: Callable[[], Awaitable[float]]) -> float:
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
    print(f"join latency over {args.rooms} rooms (create-room -> agent visible to the client), ms")
    print(f"{'':34}{'p50':>8}{'p95':>8}{'mean':>8}{'max':>8}")
    for label, key in (
        ("voicebot (in-process task)", "voicebot_in_process"),
        ("standard worker (process pool)", "standard_worker_process_executor"),
    ):
        row = result[key]
        assert isinstance(row, dict)
        print(f"{label:34}{row['p50']:>8}{row['p95']:>8}{row['mean']:>8}{row['max']:>8}")
    print(f"speedup at p50: {result['speedup_p50']}x   (written to {path.relative_to(path.parents[2])})")


if __name__ == "__main__":
    main()
