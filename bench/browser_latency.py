"""Browser latency: the test page's greeting and turn latency in headless chromium, and where a turn goes.

Each call opens the test page (static/) of a `voicebot serve` against a real livekit-server in Debian's
headless chromium, whose fake microphone plays espeak-ng saying the Reception agent's rule phrase after
5.5 s of silence (tests/e2e/browser.py), presses Connect and reads what the page shows: the greeting's
latency (Connect pressed -> the agent's first sound) and the turn's (the last sample of the voice -> the
reply's first sound), with WebRTC's statistics of the agent's audio read while the reply plays.

The turn is broken down by lining the page's wall-clock times up with voicebot's per-turn metrics from the
transcript endpoint (all on this one machine's clock):

    page turn = uplink + agent (livekit-agents' e2e_latency) + downlink
    uplink    = the agent's VAD's end of speech - the page's end of voice: capture, Opus, network, decode
    agent     = end of turn (VAD silence + endpointing) + LLM first token + TTS first byte + the rest
    downlink  = the page's first sound - the agent's first frame out: network, jitter buffer, playout, page

    .venv/bin/python -m bench.browser_latency [--calls 10]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Browser, async_playwright, expect

from bench.common import livekit_server, summary, voicebot_process, write_result
from tests.e2e.browser import PageLatencies, chromium_args, wait_for_latencies, write_microphone_wav
from voicebot.config import load_settings

CONFIG = Path(__file__).resolve().parent.parent / "config.toml"
AGENT_ID = "agent-123"
CALL_MS = 60_000
TARGET_TURN_P50_MS = 600


async def one_call(browser: Browser, http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """One call through the page: its latencies, the audio path's statistics and voicebot's metrics."""
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(base)
        await expect(page.locator("#agent option")).to_have_count(2)
        await page.select_option("#agent", AGENT_ID)
        async with page.expect_response(lambda r: r.url.endswith("/api/livekit/create-room")) as created:
            await page.click("#connect")
        room_name = (await (await created.value).json())["room_name"]
        latencies = await wait_for_latencies(page, CALL_MS)
        # WebRTC's statistics of a second of the reply itself, not of the silence before it.
        await page.wait_for_function(
            "(after) => Number(document.getElementById('media-stats').dataset.at) > after",
            arg=latencies.reply_at + 1000,
            timeout=CALL_MS,
        )
        latencies = await wait_for_latencies(page, CALL_MS)
        user, agent = await _turn_metrics(http, base, room_name)
        await page.click("#disconnect")
        await expect(page.locator("#status")).to_contain_text("Disconnected")
        await _until_no_sessions(http, base)
    finally:
        await context.close()
    return {"room_name": room_name, "page": asdict(latencies), "user": user, "agent": agent}


async def _turn_metrics(
    http: aiohttp.ClientSession, base: str, room_name: str
) -> tuple[dict[str, float], dict[str, float]]:
    """The metrics of the person's line and of the reply after it, once the reply is in the transcript."""
    deadline = time.monotonic() + CALL_MS / 1000
    while time.monotonic() < deadline:
        async with http.get(f"{base}/api/sessions/{room_name}/transcript") as response:
            lines = (await response.json())["lines"]
        speakers = [line["speaker"] for line in lines]
        if "user" in speakers:
            at = speakers.index("user")
            reply = next((line for line in lines[at + 1 :] if line["speaker"] == "agent"), None)
            if reply is not None and "e2e_latency" in reply["metrics"]:
                return lines[at]["metrics"], reply["metrics"]
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no reply with metrics in {room_name}'s transcript")


async def _until_no_sessions(http: aiohttp.ClientSession, base: str) -> None:
    """Wait for the call's session to end, so the next call starts on a quiet machine."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        async with http.get(f"{base}/api/sessions") as response:
            if not (await response.json())["sessions"]:
                return
        await asyncio.sleep(0.1)
    raise TimeoutError("the session did not end after Disconnect")


def breakdown(call: dict[str, Any], vad_silence_ms: float) -> dict[str, float]:
    """One turn in ms, from the page's wall-clock times and voicebot's metrics (seconds)."""
    page, user, agent = PageLatencies(**call["page"]), call["user"], call["agent"]
    path = page.audio_path
    uplink = user["stopped_speaking_at"] * 1000 - page.voice_ended_at
    downlink = page.reply_at - agent["started_speaking_at"] * 1000
    end_of_turn = user["end_of_turn_delay"] * 1000
    llm, tts = agent.get("llm_node_ttft", 0) * 1000, agent.get("tts_node_ttfb", 0) * 1000
    e2e = agent["e2e_latency"] * 1000
    network = path.get("rttMs", 0) / 2
    jitter, playout = path.get("jitterBufferMs", 0), path.get("playoutMs", 0)
    return {
        "greeting": page.greeting_ms,
        "turn": page.turn_ms,
        "uplink": uplink,
        "vad_silence": vad_silence_ms,
        "endpointing": end_of_turn - vad_silence_ms,
        "stt": user.get("transcription_delay", 0) * 1000,
        "llm": llm,
        "tts": tts,
        "agent_other": e2e - end_of_turn - llm - tts,
        "agent_e2e": e2e,
        "downlink": downlink,
        "network": network,
        "jitter_buffer": jitter,
        "jitter_target": path.get("jitterTargetMs", 0),
        "playout": playout,
        "downlink_rest": downlink - network - jitter - playout,
        "page_detection_by_reading": page.turn_by_reading_ms - page.turn_ms,
    }


ROWS = {
    "greeting": "greeting: Connect pressed -> first sound (page)",
    "turn": "turn: end of voice -> first sound of the reply (page)",
    "uplink": "  uplink: page's end of voice -> agent VAD's end of speech",
    "vad_silence": "  VAD silence (agents.turn.vad_min_silence_s)",
    "endpointing": "  end of turn past the VAD silence: STT's final, endpointing",
    "stt": "  (STT transcription_delay, within the two above)",
    "llm": "  LLM llm_node_ttft",
    "tts": "  TTS tts_node_ttfb",
    "agent_other": "  agent, the rest of e2e_latency",
    "agent_e2e": "  = agent e2e_latency",
    "downlink": "  downlink: agent's first frame out -> page's first sound",
    "network": "    network (round trip / 2)",
    "jitter_buffer": "    jitter buffer (jitterBufferDelay / emitted)",
    "jitter_target": "    (jitter buffer target)",
    "playout": "    playout (media-playout totalPlayoutDelay)",
    "downlink_rest": "    the rest: Web Audio, page detection",
    "page_detection_by_reading": "page detection: turn timed by readings - by samples",
}


async def run(calls: int) -> dict[str, Any]:
    agent = load_settings(CONFIG, {}).agent(AGENT_ID)
    assert agent is not None
    vad_silence_ms = agent.turn.vad_min_silence_s * 1000
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed: `make bench` installs Debian's chromium package")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        microphone = await write_microphone_wav(Path(scratch) / "phrase.wav")
        async with (
            livekit_server() as server,
            aiohttp.ClientSession() as http,
            voicebot_process(server) as (_, base),
            async_playwright() as driver,
        ):
            browser = await driver.chromium.launch(
                executable_path=chromium, headless=True, args=chromium_args(microphone)
            )
            try:
                # Warm-up: the first call pays for loading the recogniser's grammar and the like.
                await one_call(browser, http, base)
                for number in range(calls):
                    results.append(await one_call(browser, http, base))
                    row = breakdown(results[-1], vad_silence_ms)
                    greeting, turn = row["greeting"], row["turn"]
                    line = f"  call {number + 1:2}: greeting {greeting:5.0f} ms, turn {turn:5.0f} ms"
                    print(line, file=sys.stderr, flush=True)
            finally:
                await browser.close()
    rows = [breakdown(call, vad_silence_ms) for call in results]
    return {
        "unit": "ms",
        "calls": calls,
        "agent_turn": asdict(agent.turn),
        "summary": {key: summary([row[key] for row in rows]) for key in ROWS},
        "target": {"turn_p50_under_ms": TARGET_TURN_P50_MS},
        "per_call": results,
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"\nbrowser latency over {result['calls']} calls, ms{'p50':>31}{'p95':>8}")
    for key, label in ROWS.items():
        row = result["summary"][key]
        print(f"  {label:58}{row['p50']:>7.0f}{row['p95']:>8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    started = time.monotonic()
    result = asyncio.run(run(args.calls))
    result["run_s"] = round(time.monotonic() - started)
    path = write_result("browser_latency", result)
    print_table(result)
    turn_p50 = result["summary"]["turn"]["p50"]
    verdict = "met" if turn_p50 < TARGET_TURN_P50_MS else "not met"
    print(f"target turn p50 < {TARGET_TURN_P50_MS} ms: {verdict} ({turn_p50:.0f} ms)")
    print(f"run took {result['run_s']} s   (written to {path.relative_to(path.parents[2])})")


if __name__ == "__main__":
    main()
