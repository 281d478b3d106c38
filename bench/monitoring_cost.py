"""What monitoring costs: create-room and turn latency with metrics and tracing on, and off (issue 13).

Two `voicebot serve` processes against one livekit-server, side by side in one run: "on" serves /metrics
(scraped every few seconds, as a Prometheus would) and exports every span to a real OTLP/HTTP receiver in
this process; "off" has `[metrics] enabled = false` and no OTLP endpoint. Create-room requests alternate
between the two; then each holds --calls calls of --turns voice turns (the client speaks Reception's
phrases, and the turn runs from the end of its speech to the reply's first audio), the calls alternating
on, off, off, on, ... so that drift over the run falls on both alike. Target: the p50s differ by under 5%.

    .venv/bin/python -m bench.monitoring_cost [--rooms 30] [--calls 6] [--turns 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from livekit.agents import utils

from bench.common import livekit_server, post_json, summary, voicebot_process, write_result
from bench.voice_latency import one_turn
from tests.otlp_receiver import OtlpReceiver, otlp_receiver
from tests.voice_client import VoiceClient, espeak
from voicebot.config import load_settings

CONFIG = Path(__file__).resolve().parent.parent / "config.toml"
SYSTEMS = ("on", "off")
SCRAPE_EVERY_S = 5.0
TARGET_PERCENT = 5.0


async def create_room_ms(http: aiohttp.ClientSession, base: str) -> float:
    """One create-room, timed at the client; the session is stopped again at once."""
    started = time.monotonic()
    room = await post_json(http, f"{base}/api/livekit/create-room", {"agent_id": "agent-123"})
    took = (time.monotonic() - started) * 1000
    async with http.delete(f"{base}/api/sessions/{room['room_name']}") as response:
        response.raise_for_status()
    return took


async def call_turns(http: aiohttp.ClientSession, base: str, turns: int) -> list[float]:
    """One call: the greeting, then `turns` questions; ms of each turn."""
    agent = load_settings(CONFIG, {}).agent("agent-123")
    assert agent is not None
    phrases = [rule.phrases[0] for rule in agent.rules if not rule.end_call]
    room = await post_json(http, f"{base}/api/livekit/create-room", {"agent_id": "agent-123"})
    client = VoiceClient(room["livekit_url"], room["access_token"])
    await client.connect()
    try:
        await client.wait_for_greeting()
        measured = []
        for turn in range(turns):
            samples, rate = await espeak(phrases[turn % len(phrases)])
            measured.append(await one_turn(client, samples, rate))
            await asyncio.sleep(0.5)
        return measured
    finally:
        await client.close()


@contextlib.asynccontextmanager
async def scraping(http: aiohttp.ClientSession, base: str) -> AsyncIterator[list[int]]:
    """Scrape `base`'s /metrics every few seconds until the block ends; yields the sizes scraped."""
    sizes: list[int] = []

    async def scrape() -> None:
        while True:
            async with http.get(f"{base}/metrics") as response:
                response.raise_for_status()
                sizes.append(len(await response.read()))
            await asyncio.sleep(SCRAPE_EVERY_S)

    task = asyncio.create_task(scrape())
    try:
        yield sizes
    finally:
        await utils.aio.cancel_and_wait(task)


async def run(rooms: int, calls: int, turns: int) -> dict[str, Any]:
    create: dict[str, list[float]] = {system: [] for system in SYSTEMS}
    turn: dict[str, list[float]] = {system: [] for system in SYSTEMS}
    receiver: OtlpReceiver
    async with (
        livekit_server() as server,
        aiohttp.ClientSession() as http,
        otlp_receiver() as receiver,
        voicebot_process(
            server, log_name="voicebot-monitoring-on.log", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint
        ) as (_, on),
        voicebot_process(
            server, log_name="voicebot-monitoring-off.log", VOICEBOT_METRICS_ENABLED="false"
        ) as (
            _,
            off,
        ),
        scraping(http, on) as scraped,
    ):
        bases = {"on": on, "off": off}
        for system in SYSTEMS:  # warm-up: first-call costs (the recogniser's dictionary, the greeting)
            await create_room_ms(http, bases[system])
        for _ in range(rooms):
            for system in SYSTEMS:
                create[system].append(await create_room_ms(http, bases[system]))
                await asyncio.sleep(0.2)
        for call in range(calls):
            for system in SYSTEMS if call % 2 == 0 else reversed(SYSTEMS):
                turn[system].extend(await call_turns(http, bases[system], turns))
        await asyncio.sleep(6)  # the batch exporter sends every 5 s
        spans = len(receiver.spans)
    result: dict[str, Any] = {"unit": "ms", "rooms": rooms, "calls": calls, "turns_per_call": turns}
    for name, series in (("create_room", create), ("turn", turn)):
        on_stats, off_stats = summary(series["on"]), summary(series["off"])
        result[name] = {
            "on": on_stats,
            "off": off_stats,
            "p50_difference_percent": round((on_stats["p50"] - off_stats["p50"]) / off_stats["p50"] * 100, 1),
            "samples": {system: [round(value, 1) for value in series[system]] for system in SYSTEMS},
        }
    result["spans_exported"] = spans
    result["scrapes"] = len(scraped)
    result["scrape_bytes"] = max(scraped) if scraped else 0
    result["target_p50_difference_under_percent"] = TARGET_PERCENT
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rooms", type=int, default=30)
    parser.add_argument("--calls", type=int, default=6, help="calls per system")
    parser.add_argument("--turns", type=int, default=4, help="turns per call")
    args = parser.parse_args()
    started = time.monotonic()
    result = asyncio.run(run(args.rooms, args.calls, args.turns))
    result["run_s"] = round(time.monotonic() - started)
    path = write_result("monitoring_cost", result)
    print(f"\nmonitoring on (metrics scraped, every span exported) vs off, ms p50 / p95 ({args.rooms} rooms)")
    print(f"{'':14}{'on':>16}{'off':>16}{'p50 diff':>10}")
    for name in ("create_room", "turn"):
        row = result[name]
        on_stats, off_stats = row["on"], row["off"]
        print(
            f"{name:14}{on_stats['p50']:>8.0f} / {on_stats['p95']:<5.0f}{off_stats['p50']:>8.0f} / "
            f"{off_stats['p95']:<5.0f}{row['p50_difference_percent']:>+9.1f}%"
        )
    print(
        f"spans exported: {result['spans_exported']}, scrapes: {result['scrapes']} "
        f"({result['scrape_bytes']} bytes); run took {result['run_s']} s "
        f"(written to {path.relative_to(path.parents[2])})"
    )


if __name__ == "__main__":
    main()
