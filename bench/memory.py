"""Memory per concurrent session: voicebot's tasks against the standard worker's job processes.

For each system, opens sessions in steps (1, 10, 30 by default), each with a client whose microphone streams
audio, waits until every agent has greeted and listens, and reads the resident memory (RSS) of everything the
system runs: the voicebot process, or the worker with all its job processes. Reports the memory each added
session costs between steps.

    .venv/bin/python -m bench.memory [--steps 1,10,30]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import aiohttp
from livekit import api

from bench.common import livekit_server, post_json, standard_worker, voicebot_process, write_result
from bench.processes import tree_rss_mb
from bench.standard_worker import AGENT_NAME
from tests.servers import API_KEY, API_SECRET
from tests.voice_client import VoiceClient
from voicebot.embedded.livekit_server import EmbeddedLiveKitServer
from voicebot.livekit import LiveKitGateway

SETTLE_S = 5.0

Open = Callable[[], Awaitable[tuple[str, str]]]


async def greeted(client: VoiceClient) -> None:
    """Wait until the client's agent has started its greeting: its session is fully up."""
    await client.wait_for(lambda: "speaking" in client.agent_states, 120, "the agent to greet")


async def climb(pid: int, open_session: Open, steps: list[int]) -> list[dict[str, float]]:
    """Open sessions up to each step and record the memory there."""
    clients: list[VoiceClient] = []
    readings: list[dict[str, float]] = []
    try:
        for step in steps:
            while len(clients) < step:
                url, token = await open_session()
                # The client streams its microphone but does not record the agent's audio: on 2 cores,
                # 30 recording clients would cost the machine as much as the agents being measured.
                client = VoiceClient(url, token, listen=False)
                await client.connect()
                clients.append(client)
            for client in clients:
                await greeted(client)
            await asyncio.sleep(SETTLE_S)
            readings.append({"sessions": step, "rss_mb": round(tree_rss_mb(pid), 1)})
            print(f"  {step:3} sessions: {readings[-1]['rss_mb']:8.1f} MB", flush=True)
    finally:
        await asyncio.gather(*(client.close() for client in clients))
    return readings


def per_session(readings: list[dict[str, float]]) -> list[dict[str, float]]:
    """MB each added session cost between consecutive steps."""
    return [
        {
            "from": low["sessions"],
            "to": high["sessions"],
            "mb_per_session": round(
                (high["rss_mb"] - low["rss_mb"]) / (high["sessions"] - low["sessions"]), 2
            ),
        }
        for low, high in itertools.pairwise(readings)
    ]


@asynccontextmanager
async def voicebot_system(
    server: EmbeddedLiveKitServer, http: aiohttp.ClientSession, most: int
) -> AsyncIterator[tuple[int, Open]]:
    async with voicebot_process(server, VOICEBOT_SESSIONS_MAX_CONCURRENT=str(most + 5)) as (process, base):

        async def open_session() -> tuple[str, str]:
            room = await post_json(http, f"{base}/api/livekit/create-room", {"agent_id": "agent-123"})
            return room["livekit_url"], room["access_token"]

        yield process.pid, open_session


@asynccontextmanager
async def standard_system(
    server: EmbeddedLiveKitServer, http: aiohttp.ClientSession, most: int
) -> AsyncIterator[tuple[int, Open]]:
    lkapi = api.LiveKitAPI(server.url, API_KEY, API_SECRET, session=http)
    gateway = LiveKitGateway(server.url, API_KEY, API_SECRET)
    counter = iter(range(10**6))
    async with standard_worker(server) as process:

        async def open_session() -> tuple[str, str]:
            name = f"bench_memory_{next(counter)}"
            await lkapi.room.create_room(api.CreateRoomRequest(name=name, empty_timeout=120))
            await lkapi.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=name)
            )
            return server.url, gateway.user_token(name, ttl_s=3600)[1]

        await asyncio.sleep(10)  # registration and the warm idle processes
        yield process.pid, open_session
    await gateway.close()


async def run(steps: list[int]) -> dict[str, object]:
    systems: dict[str, Callable[..., AbstractAsyncContextManager[tuple[int, Open]]]] = {
        "voicebot_in_process": voicebot_system,
        "standard_worker_process_executor": standard_system,
    }
    report: dict[str, object] = {"unit": "MB", "steps": steps, "measure": "RSS of the process tree"}
    async with livekit_server() as server, aiohttp.ClientSession() as http:
        for name, system in systems.items():
            print(name, flush=True)
            async with system(server, http, max(steps)) as (pid, open_session):
                readings = await climb(pid, open_session, steps)
            report[name] = {"readings": readings, "per_added_session": per_session(readings)}
    report["target_mb_per_session_under"] = 20
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", default="1,10,30", help="session counts to measure at")
    args = parser.parse_args()
    steps = sorted({int(step) for step in args.steps.split(",")})
    result = asyncio.run(run(steps))
    path = write_result("memory", result)
    print("\nmemory per added session (RSS of the whole process tree), MB")
    for name in ("voicebot_in_process", "standard_worker_process_executor"):
        row = result[name]
        assert isinstance(row, dict)
        cells = "   ".join(
            f"{p['from']:.0f}->{p['to']:.0f}: {p['mb_per_session']:.1f}" for p in row["per_added_session"]
        )
        print(f"{name:36}{cells}")
    print(f"(written to {path.relative_to(path.parents[2])})")


if __name__ == "__main__":
    main()
