"""Voice-to-voice latency, offline pipeline: from the end of the caller's speech to the agent's first audio.

One call to agent-123 through a real livekit-server; the client speaks the agent's rule phrases (espeak-ng
audio) turn after turn and measures, at the client, from the last sample of its speech to the first 10 ms
frame of agent audio above speech level. Beside it, livekit-agents' own per-turn metrics as voicebot's
transcript keeps them: end of turn (VAD silence + endpointing), transcription, LLM time to first token, TTS
time to first byte.

    .venv/bin/python -m bench.voice_latency [--turns 20]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import livekit_server, post_json, summary, voicebot_process, write_result
from tests.voice_client import VoiceClient, espeak, rms
from voicebot.config import load_settings

SPEECH_LEVEL = 300.0
CONFIG = Path(__file__).resolve().parent.parent / "config.toml"


def first_speech_after(client: VoiceClient, since: float) -> float | None:
    """Monotonic time the first agent audio frame above speech level began, after `since`."""
    for at, samples in client.agent_audio:
        if at >= since and rms(samples) > SPEECH_LEVEL:
            # Frames (10 ms) are stamped on arrival, at their end.
            return at - len(samples) / client.agent_sample_rate
    return None


async def one_turn(client: VoiceClient, samples: Any, rate: int) -> float:
    """Say one phrase and return ms from the end of the speech to the reply's first audio."""
    replies = len(client.finals(agent=True))
    ended = await client.say(samples, rate, trailing_silence_s=0.0)
    await client.wait_for(lambda: len(client.finals(agent=True)) > replies, 30, "the reply")
    await client.wait_until_listening(30, "the reply to end")
    answered = first_speech_after(client, ended)
    assert answered is not None, "the reply had no audio"
    return (answered - ended) * 1000


async def run(turns: int) -> dict[str, Any]:
    agent = load_settings(CONFIG, {}).agent("agent-123")
    assert agent is not None
    phrases = [rule.phrases[0] for rule in agent.rules if not rule.end_call]
    speech = {phrase: await espeak(phrase) for phrase in phrases}
    client_ms: list[float] = []
    async with (
        livekit_server() as server,
        aiohttp.ClientSession() as http,
        voicebot_process(server) as (_, base),
    ):
        room = await post_json(http, f"{base}/api/livekit/create-room", {"agent_id": "agent-123"})
        client = VoiceClient(room["livekit_url"], room["access_token"])
        await client.connect()
        await client.wait_for_greeting()
        for turn in range(turns):
            samples, rate = speech[phrases[turn % len(phrases)]]
            client_ms.append(await one_turn(client, samples, rate))
            print(f"  turn {turn + 1:2}: {client_ms[-1]:6.0f} ms", flush=True)
            await asyncio.sleep(0.5)
        async with http.get(f"{base}/api/sessions/{room['room_name']}/transcript") as response:
            lines = (await response.json())["lines"]
        await client.close()
    return {"unit": "ms", "turns": turns, "client_measured": summary(client_ms), **breakdown(lines)}


def breakdown(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """livekit-agents' per-turn metrics from the transcript, in ms."""
    user = [line["metrics"] for line in lines if line["speaker"] == "user"]
    agent = [line["metrics"] for line in lines[1:] if line["speaker"] == "agent"]

    def series(rows: list[dict[str, float]], key: str) -> dict[str, float]:
        return summary([row[key] * 1000 for row in rows if key in row])

    return {
        "eou_end_of_turn_delay": series(user, "end_of_turn_delay"),
        "stt_transcription_delay": series(user, "transcription_delay"),
        "llm_ttft": series(agent, "llm_node_ttft"),
        "tts_ttfb": series(agent, "tts_node_ttfb"),
        "agent_e2e_latency": series(agent, "e2e_latency"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    started = time.monotonic()
    result = asyncio.run(run(args.turns))
    path = write_result("voice_latency", result)
    print(f"\nvoice-to-voice latency over {args.turns} turns, ms        p50     p90     max")
    for key in (
        "client_measured",
        "agent_e2e_latency",
        "eou_end_of_turn_delay",
        "stt_transcription_delay",
        "llm_ttft",
        "tts_ttfb",
    ):
        row = result[key]
        print(f"  {key:45}{row['p50']:>7.0f}{row['p90']:>8.0f}{row['max']:>8.0f}")
    print(f"(written to {path.relative_to(path.parents[2])}; {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
