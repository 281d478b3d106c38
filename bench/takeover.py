"""Failover: how long a room with a person in it is without an agent after its process is killed (-9).

A redis-server (on disk) and a livekit-server in multi-node mode on it, two voicebot processes, rooms
with a connected client each. The process that owns the rooms is killed with SIGKILL; the clock runs
from the kill to the moment the client sees another process's agent join. A fresh owner is started
for each round.

    .venv/bin/python -m bench.takeover [--rounds 5] [--rooms 3]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import summary, write_result
from tests.servers import API_KEY, API_SECRET, free_livekit_ports, free_port
from tests.voice_client import VoiceClient
from tests.voicebot_process import VoicebotProcess, start_voicebot
from voicebot.embedded.livekit_server import EmbeddedLiveKitServer, find_binary
from voicebot.embedded.redis_server import EmbeddedRedis


async def one_round(env: dict[str, str], survivor: VoicebotProcess, rooms: int) -> list[float]:
    """Kill an owner of `rooms` rooms; seconds until each room has an agent again."""
    owner = await start_voicebot(**env)
    people: list[VoiceClient] = []
    try:
        for _ in range(rooms):
            status, room = await owner.request("POST", "/api/livekit/create-room", {"agent_id": "faq"})
            assert status == 200, room
            person = VoiceClient(room["livekit_url"], room["access_token"])
            await person.connect()
            await person.wait_for_greeting()
            people.append(person)
        first_agents = [person.agents()[0].identity for person in people]
        killed_at = time.monotonic()
        owner.kill()

        async def back(person: VoiceClient, old: str) -> float:
            await person.wait_for(lambda: any(p.identity != old for p in person.agents()), 30, "a new agent")
            return time.monotonic() - killed_at

        return list(
            await asyncio.gather(*(back(p, old) for p, old in zip(people, first_agents, strict=True)))
        )
    finally:
        for person in people:
            await person.close()
        await owner.stop()
        del survivor


async def main(rounds: int, rooms: int) -> None:
    with tempfile.TemporaryDirectory(prefix="voicebot-bench-redis-") as data:
        redis = EmbeddedRedis(free_port(), data_dir=Path(data))
        await redis.start()
        livekit = EmbeddedLiveKitServer(
            find_binary(), free_livekit_ports(), API_KEY, API_SECRET, redis=redis.address
        )
        await livekit.start()
        env = {
            "LIVEKIT_URL": livekit.url,
            "LIVEKIT_API_KEY": API_KEY,
            "LIVEKIT_API_SECRET": API_SECRET,
            "VOICEBOT_REDIS_URL": redis.url,
        }
        survivor = await start_voicebot(**env)
        try:
            times: list[float] = []
            for number in range(rounds):
                round_times = await one_round(env, survivor, rooms)
                print(f"round {number + 1}: " + ", ".join(f"{t:.2f} s" for t in round_times), flush=True)
                times.extend(round_times)
        finally:
            await survivor.stop()
            await livekit.stop()
            await redis.stop()
    result = {"takeover_s": summary(times), "rooms_per_round": rooms, "rounds": rounds, "lease_ttl_s": 2.0}
    print(f"takeover after kill -9, {len(times)} rooms: {result['takeover_s']}")
    write_result("takeover", result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rooms", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.rooms))
