"""Phone first word: from livekit-sip's 200 OK to the greeting's first loud RTP packet at the caller.

Issue 12. Starts Redis, livekit-server on it and livekit-sip as the tests do (tests/servers.py
running_sip_stack), and `voicebot serve` on the port livekit-server sends its webhooks to, with [sip] enabled
and config.toml's inbound route (+15550100 from 127.0.0.1 to Reception, agent-123). Then places --calls
inbound calls with sipp, one after another (after one warm-up call that is not counted): a caller that says
nothing, listens and hangs up (tests/sipp.py listen_scenario). The caller's RTP port is a UDP socket here.
Two callers alternate: "phone" streams RTP (A-law silence) from the answer on, as phones and PBXes do;
"silent" sends none, and shows livekit-sip waiting up to 1 s for the caller's first packet before it marks
the call active.

Each call is timed on the wall clock, in ms after sipp got the 200 OK (its own `gettimeofday`, logged):
  webhook         voicebot handled livekit-server's participant_joined for the caller (`phone_caller_joined`)
  agent_joined    the agent had joined the call's room (`agent_joined`); both may come before the 200 OK
  voice_subscribed  the server told the agent its voice has a subscriber (`voice_subscribed`): until then
                  livekit-agents holds the agent's audio frames
  call_answered   voicebot saw the caller's sip.callStatus turn `active` (its `call_answered` log line)
  agent_speaking  the greeting's first frame went out on the agent's track (the transcript line's
                  started_speaking_at, from livekit-agents)
  first_rtp       the first RTP packet from livekit-sip reached the caller's port
  first_loud      the first packet whose G.711 samples have an RMS above 300 (tests/audio.py VOICED_RMS)
and, for context, the INVITE to the 200 OK and the greeting's TTS time to first byte.

    .venv/bin/python -m bench.phone_first_word [--calls 10]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bench.common import RESULTS, ROOT, summary, voicebot_process, write_result
from tests.audio import VOICED_RMS
from tests.servers import SipStack, running_sip_stack
from tests.sipp import RtpSink, finished, listen_scenario, start_sipp
from voicebot.config import load_settings

NUMBER = "+15550100"
AGENT_ID = "agent-123"
LISTEN_MS = 6000  # after the answer: the greeting (about 3 s) ends, so its transcript line has its metrics
CALL_WITHIN_S = 30
GREETING_WITHIN_S = 10.0
SESSION_GONE_WITHIN_S = 15.0
TARGET_MS = 500
LOG_NAME = "phone_voicebot.log"
# Callers, by whether they stream RTP from the answer on. livekit-sip marks a call active at the caller's
# first RTP packet, or 1 s after its 200 OK when none comes (audioBridgeMaxDelay in its pkg/sip/inbound.go).
CALLERS = {"phone": True, "silent": False}
STEPS = (
    "webhook",
    "agent_joined",
    "voice_subscribed",
    "call_answered",
    "agent_speaking",
    "first_rtp",
    "first_loud",
)
STEP_LABELS = {
    "webhook": "caller's participant_joined webhook handled",
    "agent_joined": "agent joined the room",
    "voice_subscribed": "agent told its voice is subscribed",
    "call_answered": "callStatus active seen by voicebot",
    "agent_speaking": "greeting's first frame sent by the agent",
    "first_rtp": "first RTP packet at the caller",
    "first_loud": "first loud RTP packet at the caller",
}


@dataclass
class Call:
    """One call's times: the INVITE to the 200 OK, each step after the 200 OK (None: never seen), TTS TTFB."""

    invite_to_answer_ms: float
    after_answer_ms: dict[str, float | None] = field(default_factory=dict)
    tts_ttfb_ms: float | None = None


class CallFailed(Exception):
    """sipp did not complete a call."""


def check_route(config: Path) -> None:
    """The benchmark calls config.toml's reception line; say so plainly if it is not there any more."""
    settings = load_settings(config, {})
    if not any(r.agent_id == AGENT_ID and NUMBER in r.numbers for r in settings.sip.inbound):
        raise SystemExit(f"{config} has no [[sip.inbound]] route of {NUMBER} to {AGENT_ID}")


def sipp_times(log: Path) -> dict[str, float]:
    """The `invite_sent` and `answered` lines listen_scenario makes sipp log, as epoch seconds."""
    times = {}
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("invite_sent", "answered"):
            times[parts[0]] = float(parts[1]) + float(parts[2]) / 1e6
    return times


def logged_at(lines: list[str], event: str) -> float | None:
    """When voicebot's JSON log first says `event`, as epoch seconds."""
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            return datetime.fromisoformat(record["timestamp"]).timestamp()
    return None


def first_loud(sink: RtpSink) -> float | None:
    """Arrival of the first G.711 packet whose RMS is above VOICED_RMS."""
    for packet in sink.packets:
        samples = packet.samples.astype(np.float64)
        if len(samples) and float(np.sqrt((samples**2).mean())) > VOICED_RMS:
            return packet.at
    return None


async def get_json(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as response:
        response.raise_for_status()
        body: dict[str, Any] = await response.json()
        return body


async def live_rooms(http: aiohttp.ClientSession, base: str) -> list[str]:
    body = await get_json(http, f"{base}/api/sessions")
    return [s["room_name"] for s in body["sessions"] if s["agent_id"] == AGENT_ID]


async def until(
    check: Callable[[], bool | Awaitable[bool]], within_s: float, what: str, every_s: float = 0.05
) -> None:
    """Poll `check()` (sync or async) until it is true; raises CallFailed after `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise CallFailed(f"{what} did not happen within {within_s:.0f} s")
        await asyncio.sleep(every_s)


async def place_call(
    stack: SipStack, http: aiohttp.ClientSession, base: str, folder: Path, *, sends_silence: bool
) -> Call:
    """One inbound call from sipp, timed from its 200 OK to the greeting's first loud packet."""
    log_path = RESULTS / LOG_NAME
    log_offset = log_path.stat().st_size
    sipp_log = folder / "sipp.log"
    sipp_log.unlink(missing_ok=True)
    sink = RtpSink(clock=time.time)
    await sink.open()
    try:
        scenario = listen_scenario(folder, sink.port, listen_ms=LISTEN_MS, sends_silence=sends_silence)
        address = stack.sip.address
        sipp = await start_sipp(
            folder, scenario, "-s", NUMBER, "-trace_logs", "-log_file", str(sipp_log), address,
            timeout_s=CALL_WITHIN_S,
        )  # fmt: skip
        # Nothing asks voicebot anything until the greeting is heard, so the API does not share its time.
        try:
            await until(lambda: first_loud(sink) is not None, GREETING_WITHIN_S, "the greeting")
        except CallFailed:
            print("a call's greeting was not heard", file=sys.stderr)
        rooms = await live_rooms(http, base)
        run = await finished(folder, sipp, within_s=CALL_WITHIN_S + 10)
    finally:
        sink.close()
    if run.returncode != 0:
        raise CallFailed(f"sipp exited {run.returncode}: {run.errors or run.output[-2000:]}")
    await until(lambda: _no_live_rooms(http, base), SESSION_GONE_WITHIN_S, "the session's end", every_s=0.2)
    with log_path.open() as log:
        log.seek(log_offset)
        logged = log.read().splitlines()
    times = sipp_times(sipp_log)
    answered = times["answered"]
    started_speaking, ttfb = await _greeting_metrics(http, base, rooms)
    loud = first_loud(sink)
    seen = {
        "webhook": logged_at(logged, "phone_caller_joined"),
        "agent_joined": logged_at(logged, "agent_joined"),
        "voice_subscribed": logged_at(logged, "voice_subscribed"),
        "call_answered": logged_at(logged, "call_answered"),
        "agent_speaking": started_speaking,
        "first_rtp": sink.packets[0].at if sink.packets else None,
        "first_loud": loud,
    }
    return Call(
        invite_to_answer_ms=(answered - times["invite_sent"]) * 1000,
        after_answer_ms={k: None if at is None else (at - answered) * 1000 for k, at in seen.items()},
        tts_ttfb_ms=None if ttfb is None else ttfb * 1000,
    )


async def _no_live_rooms(http: aiohttp.ClientSession, base: str) -> bool:
    return not await live_rooms(http, base)


async def _greeting_metrics(
    http: aiohttp.ClientSession, base: str, rooms: list[str]
) -> tuple[float | None, float | None]:
    """The greeting line's started_speaking_at (epoch s) and tts_node_ttfb (s), from the call's transcript."""
    if len(rooms) != 1:
        return None, None
    body = await get_json(http, f"{base}/api/sessions/{rooms[0]}/transcript")
    agent_lines = [line for line in body["lines"] if line["speaker"] == "agent"]
    if not agent_lines:
        return None, None
    metrics = agent_lines[0]["metrics"]
    return metrics.get("started_speaking_at"), metrics.get("tts_node_ttfb")


async def run(calls: int) -> dict[str, Any]:
    check_route(ROOT / "config.toml")
    measured: dict[str, list[Call]] = {kind: [] for kind in CALLERS}
    failed: dict[str, list[str]] = {kind: [] for kind in CALLERS}
    async with running_sip_stack() as stack, aiohttp.ClientSession() as http:
        env = {
            "VOICEBOT_SIP_ENABLED": "true",
            "VOICEBOT_SIP_HEALTH_URL": stack.sip_settings.health_url,
            # call_answered, agent_joined and phone_caller_joined are info lines.
            "VOICEBOT_LOGGING_LEVEL": "info",
        }
        voicebot = voicebot_process(stack.livekit, port=stack.webhook_port, log_name=LOG_NAME, **env)
        async with voicebot as (_, base):
            with tempfile.TemporaryDirectory(prefix="phone_first_word_") as tmp:
                folder = Path(tmp)
                # The first call pays first-call costs (models, espeak-ng, codecs): a warm-up, not counted.
                for number, (kind, streams) in itertools.product(range(calls + 1), CALLERS.items()):
                    label = f"{kind} caller, " + (
                        "warm-up call" if number == 0 else f"call {number} of {calls}"
                    )
                    print(label, file=sys.stderr)
                    try:
                        call = await place_call(stack, http, base, folder, sends_silence=streams)
                    except CallFailed as exc:
                        print(f"{label} failed: {exc}", file=sys.stderr)
                        failed[kind].append(str(exc))
                        continue
                    if number > 0:
                        measured[kind].append(call)
    return {
        "unit": "ms",
        "calls": calls,
        "warmup_calls": 1,
        "listen_ms": LISTEN_MS,
        "loud_rms": VOICED_RMS,
        "callers": {kind: _describe(measured[kind], failed[kind]) for kind in CALLERS},
        "target": {"phone_first_loud_p50_under_ms": TARGET_MS},
    }


def _describe(calls: list[Call], failed: list[str]) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    for step in STEPS:
        values = [c.after_answer_ms[step] for c in calls]
        seen = [v for v in values if v is not None]
        steps[step] = {"label": STEP_LABELS[step], "missed": len(values) - len(seen), **_stats(seen)}
    return {
        "failed_calls": failed,
        "invite_to_answer": _stats([c.invite_to_answer_ms for c in calls]),
        "after_answer": steps,
        "tts_ttfb": _stats([c.tts_ttfb_ms for c in calls if c.tts_ttfb_ms is not None]),
        "per_call": [
            {
                "invite_to_answer_ms": round(c.invite_to_answer_ms, 1),
                **{k: None if v is None else round(v, 1) for k, v in c.after_answer_ms.items()},
                "tts_ttfb_ms": None if c.tts_ttfb_ms is None else round(c.tts_ttfb_ms, 1),
            }
            for c in calls
        ],
    }


def _stats(values: list[float]) -> dict[str, float]:
    return summary(values) if values else {"n": 0}


def _row(label: str, stats: dict[str, Any], missed: int = 0) -> str:
    if not stats.get("n"):
        return f"{label:46}{'-':>8}"
    cells = "".join(f"{stats[k]:>8.0f}" for k in ("p50", "p95", "min", "max"))
    return f"{label:46}{cells}{missed:>8}"


def print_table(result: dict[str, Any]) -> None:
    """The result as one table per caller: each step's ms after the 200 OK, p50 / p95 / min / max."""
    calls = result["calls"]
    print(f"\nphone first word, {calls} calls of each caller (after a warm-up call each), ms after sipp got")
    print("the 200 OK. phone: streams RTP (silence) from the answer on, as phones do; silent: sends no RTP.")
    for kind, described in result["callers"].items():
        print(f"\n{kind + ' caller':46}{'p50':>8}{'p95':>8}{'min':>8}{'max':>8}{'missed':>8}")
        print(_row("(before) INVITE sent -> 200 OK", described["invite_to_answer"]))
        for step in STEPS:
            stats = described["after_answer"][step]
            print(_row(stats["label"], stats, stats["missed"]))
        print(_row("(within) the greeting's TTS first byte", described["tts_ttfb"]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    started = time.monotonic()
    result = asyncio.run(run(args.calls))
    result["run_s"] = round(time.monotonic() - started)
    path = write_result("phone_first_word", result)
    print_table(result)
    loud = result["callers"]["phone"]["after_answer"]["first_loud"]
    if loud.get("n"):
        verdict = "met" if loud["p50"] < TARGET_MS else "missed"
        print(
            f"\ntarget: the phone caller's first loud packet, p50 < {TARGET_MS} ms: {verdict}"
            f" ({loud['p50']:.0f} ms)"
        )
    for kind, described in result["callers"].items():
        if described["failed_calls"]:
            print(f"{len(described['failed_calls'])} {kind} call(s) failed; see {path.name}")
    print(f"run took {result['run_s']} s   (written to {path.relative_to(path.parents[2])})")


if __name__ == "__main__":
    main()
