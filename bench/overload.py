"""Overload (issue 14): calls offered past capacity are refused at once, and the admitted ones keep answering.

One `voicebot serve` with its default admission (the count limit, the measured loop lag and CPU, the machine's
CPU and the offline models' queue) and a fresh livekit-server. Calls arrive one every --arrival-s: each is a
create-room, and an admitted call gets a LiveKit client (bench/density_clients.CountingClient, in this
process) that asks "what are your opening hours" (espeak-ng) at the start of every 7 s cycle and listens for
the reply. Arrivals go on until twice as many calls were offered as were admitted, after at least one refusal
(so the offer is 2x the capacity voicebot measured for itself), or until --max-offers. Then, with every
admitted call still talking, a window of --window-s counts each call's questions and replies.

Reported: every offer (when, status, error code, ms to the answer), the refusals' answer times, and each
admitted call's share of questions answered in the window. Targets: every admitted call answers at least 95%
of its questions, and every refusal is `503 at_capacity`, answered at once.

    .venv/bin/python -m bench.overload [--arrival-s 3] [--window-s 60] [--max-offers 30]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from bench.common import livekit_server, percentile, voicebot_process, write_result
from bench.density import CYCLE_S, PHRASE
from bench.density_clients import CountingClient
from tests.voice_client import espeak
from voicebot.config import SessionSettings

ANSWERED_AT_LEAST = 0.95
REFUSED_WITHIN_MS = 100.0
"""What "refused at once" means here: no room made, no agent started, one round trip to voicebot."""
GREETED_WITHIN_S = 60.0


@dataclass
class Offer:
    """One call offered: what create-room answered, and how fast."""

    at_s: float
    status: int
    code: str
    ms: float
    live: int = 0
    """Sessions voicebot had when it answered (its health's capacity), and its measured load then."""
    loop_lag_ms: float = 0.0
    machine_cpu: float = 0.0
    model_wait_ms: float = 0.0


@dataclass
class Call:
    """An admitted call and its client's counts at the start of the window."""

    room_name: str
    client: CountingClient
    task: asyncio.Task[None]
    questions_before: int = 0
    replies_before: int = 0


def asked(client: CountingClient) -> Callable[[], bool]:
    return lambda: client.questions > 0


async def offer(http: aiohttp.ClientSession, base: str, started: float) -> tuple[Offer, dict[str, Any]]:
    """One create-room, timed."""
    asked = time.monotonic()
    async with http.post(f"{base}/api/livekit/create-room", json={"agent_id": "agent-123"}) as response:
        body: dict[str, Any] = await response.json()
        ms = (time.monotonic() - asked) * 1000
        code = "" if response.status == 200 else str(body.get("error", {}).get("code", ""))
        return Offer(round(asked - started, 2), response.status, code, round(ms, 1)), body


async def capacity(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/api/livekit/health") as response:
        health: dict[str, Any] = await response.json()
    return dict(health["capacity"])


async def run(arrival_s: float, window_s: float, max_offers: int) -> dict[str, Any]:
    speech, rate = await espeak(PHRASE)
    offers: list[Offer] = []
    calls: list[Call] = []
    async with (
        livekit_server() as server,
        aiohttp.ClientSession() as http,
        voicebot_process(
            server,
            log_name="voicebot-overload.log",
            VOICEBOT_SESSIONS_ADMISSION_MAX_MACHINE_CPU=str(SessionSettings().admission_max_machine_cpu),
        ) as (_, base),
    ):
        started = time.monotonic()
        try:
            while len(offers) < max_offers:
                answer, body = await offer(http, base, started)
                load = await capacity(http, base)
                answer.live = int(load["live"])
                answer.loop_lag_ms, answer.model_wait_ms = load["loop_lag_ms"], load["model_wait_ms"]
                answer.machine_cpu = load["machine_cpu"]
                offers.append(answer)
                print(
                    f"offer {len(offers)}: {answer.status} {answer.code} {answer.ms} ms; "
                    f"{answer.live} live, loop lag {answer.loop_lag_ms} ms, "
                    f"machine CPU {answer.machine_cpu:.0%}, model wait {answer.model_wait_ms} ms",
                    file=sys.stderr,
                )
                if answer.status == 200:
                    client = CountingClient(body["livekit_url"], body["access_token"])
                    await client.connect()
                    task = asyncio.create_task(client.ask_every(speech, rate, CYCLE_S, 0.0))
                    calls.append(Call(body["room_name"], client, task))
                admitted = len(calls)
                if admitted and len(offers) > admitted and len(offers) >= 2 * admitted:
                    break
                await asyncio.sleep(arrival_s)
            # Every call has greeted and asked at least once before the window opens.
            await asyncio.gather(
                *(c.client.wait_for(asked(c.client), GREETED_WITHIN_S, "a first question") for c in calls),
                return_exceptions=True,  # a call that never got to ask shows as such in its counts
            )
            for call in calls:
                call.questions_before, call.replies_before = call.client.questions, call.client.replies
            await asyncio.sleep(window_s)
            load = await capacity(http, base)
            answered = [
                {
                    "room_name": call.room_name,
                    "questions": call.client.questions - call.questions_before,
                    "replies": call.client.replies - call.replies_before,
                    "greeted": call.client.greeted,
                    **({"error": call.client.error} if call.client.error else {}),
                }
                for call in calls
            ]
        finally:
            for call in calls:
                call.task.cancel()
            await asyncio.gather(*(call.task for call in calls), return_exceptions=True)
            await asyncio.gather(*(call.client.close() for call in calls), return_exceptions=True)
    return summarise(offers, answered, load, arrival_s, window_s)


def summarise(
    offers: list[Offer],
    answered: list[dict[str, Any]],
    load: dict[str, Any],
    arrival_s: float,
    window_s: float,
) -> dict[str, Any]:
    refused = [o for o in offers if o.status != 200]
    shares = [a["replies"] / a["questions"] if a["questions"] else 0.0 for a in answered]
    refusal_ms = [o.ms for o in refused]
    return {
        "arrival_s": arrival_s,
        "window_s": window_s,
        "offered": len(offers),
        "admitted": len(answered),
        "refused": len(refused),
        "refused_not_at_capacity": [asdict(o) for o in refused if (o.status, o.code) != (503, "at_capacity")],
        "refusal_ms_p50": round(percentile(refusal_ms, 50), 1) if refusal_ms else None,
        "refusal_ms_max": round(max(refusal_ms), 1) if refusal_ms else None,
        "answered_share_min": round(min(shares), 3) if shares else None,
        "answered_share_all": round(
            sum(a["replies"] for a in answered) / max(1, sum(a["questions"] for a in answered)), 3
        ),
        "calls": answered,
        "offers": [asdict(o) for o in offers],
        "capacity_at_end": load,
        "targets": {"answered_share_at_least": ANSWERED_AT_LEAST, "refused_within_ms": REFUSED_WITHIN_MS},
    }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"offered {result['offered']} calls, one every {result['arrival_s']} s: "
        f"admitted {result['admitted']}, "
        f"refused {result['refused']} (503 at_capacity in {result['refusal_ms_p50']} ms p50, "
        f"{result['refusal_ms_max']} ms max; other refusals: {len(result['refused_not_at_capacity'])})",
        f"over {result['window_s']} s with every admitted call talking: questions answered "
        f"{result['answered_share_all']:.1%} of all, the worst call {result['answered_share_min'] or 0:.1%}",
        "call  questions  replies  greeted",
    ]
    for number, call in enumerate(result["calls"], 1):
        lines.append(f"{number:>4}  {call['questions']:>9}  {call['replies']:>7}  {call['greeted']}")
    cap = result["capacity_at_end"]
    lines.append(
        f"at the end: {cap.get('live')} live of limit {cap.get('limit')}, admitting={cap.get('admitting')} "
        f"({cap.get('refusing_because')}), loop lag p90 {cap.get('loop_lag_ms')} ms, "
        f"loop CPU {cap.get('loop_cpu')}, machine CPU {cap.get('machine_cpu')}, "
        f"model wait p90 {cap.get('model_wait_ms')} ms"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arrival-s", type=float, default=3.0, help="seconds between offered calls")
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--max-offers", type=int, default=30)
    args = parser.parse_args()
    result = asyncio.run(run(args.arrival_s, args.window_s, args.max_offers))
    path = write_result("overload", result)
    print(report(result))
    print(f"(written to {path.relative_to(path.parents[2])})")


if __name__ == "__main__":
    main()
