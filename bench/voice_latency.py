"""Voice-to-voice latency per offline pipeline: from the end of the caller's speech to the agent's first
audio.

For each pipeline, in one run: a fresh `voicebot serve` whose agent-123 listens and speaks through it, one
call through a real livekit-server; the client speaks the agent's rule phrases (espeak-ng audio) turn after
turn and measures, at the client, from the last sample of its speech to the first 10 ms frame of agent audio
above speech level. Beside it, livekit-agents' own per-turn metrics as voicebot's transcript keeps them: end
of turn (VAD silence + endpointing), transcription, LLM time to first token, TTS time to first byte. Then:

- CPU: voicebot's CPU-seconds (its process and children, user + system) over the turns, per second of the
  caller's speech;
- memory: voicebot's RSS (process tree) with that one session, then with 8 sessions (seven more rooms whose
  clients each heard the greeting): the models are loaded once, so each added session should cost little.

    .venv/bin/python -m bench.voice_latency [--turns 20]
        [--pipelines moonshine+piper,moonshine-tiny+piper,pocketsphinx+espeak]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import RESULTS, ROOT, livekit_server, post_json, summary, voicebot_process, write_result
from bench.processes import tree_cpu_s, tree_rss_mb
from tests.voice_client import VoiceClient, espeak, rms
from voicebot.config import load_settings

SPEECH_LEVEL = 300.0
CONFIG = ROOT / "config.toml"
# Pipeline name -> (stt.provider, its stt.model, tts.provider) given to agent-123.
PIPELINES = {
    "moonshine+piper": ("moonshine", "", "piper"),
    "moonshine-tiny+piper": ("moonshine", "tiny", "piper"),
    "pocketsphinx+espeak": ("pocketsphinx", "", "espeak"),
}
SESSIONS_FOR_MEMORY = 8
TARGETS = {"voice_to_voice_p50_ms": 800.0, "added_rss_per_session_mb": 20.0}


def pipeline_config(stt: str, tts: str, stt_model: str = "") -> Path:
    """config.toml with agent-123 on these providers, written beside the results (models from the repo's)."""
    text = CONFIG.read_text()
    found = re.search(r'^id = "agent-123"$', text, re.MULTILINE)
    assert found is not None, "config.toml has no agent-123"
    agent_start = found.start()
    agent_end = text.index("[[agents]]", agent_start)
    agent = text[agent_start:agent_end]
    model = f'\nmodel = "{stt_model}"' if stt_model else ""
    agent = re.sub(r'(\[agents\.stt\]\nprovider = )"[a-z]+"', rf'\1"{stt}"{model}', agent)
    agent = re.sub(r'(\[agents\.tts\]\nprovider = )"[a-z]+"', rf'\1"{tts}"', agent)
    assert f'provider = "{stt}"' in agent, "config.toml changed shape"
    assert f'provider = "{tts}"' in agent, "config.toml changed shape"
    text = text[:agent_start] + agent + text[agent_end:]
    # Written elsewhere, the config's relative models dir would point away from the repo's .cache.
    models_dir = f'dir = "{ROOT / ".cache" / "models"}"'
    if re.search(r"^\[models\]", text, re.MULTILINE):
        text = re.sub(r'^dir = ".*"', models_dir, text, count=1, flags=re.MULTILINE)
    else:
        text = f"[models]\n{models_dir}\n\n{text}"
    path = RESULTS / f"config-{stt}{'-' + stt_model if stt_model else ''}-{tts}.toml"
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


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


async def join(http: aiohttp.ClientSession, base: str) -> tuple[VoiceClient, dict[str, Any]]:
    """A new room with agent-123 and a client in it that has heard the greeting."""
    room = await post_json(http, f"{base}/api/livekit/create-room", {"agent_id": "agent-123"})
    client = VoiceClient(room["livekit_url"], room["access_token"])
    await client.connect()
    await client.wait_for_greeting()
    return client, room


async def run_pipeline(name: str, turns: int) -> dict[str, Any]:
    stt, stt_model, tts = PIPELINES[name]
    agent = load_settings(CONFIG, {}).agent("agent-123")
    assert agent is not None
    phrases = [rule.phrases[0] for rule in agent.rules if not rule.end_call]
    speech = {phrase: await espeak(phrase) for phrase in phrases}
    client_ms: list[float] = []
    async with (
        livekit_server() as server,
        aiohttp.ClientSession() as http,
        voicebot_process(
            server, config=pipeline_config(stt, tts, stt_model), log_name=f"voicebot-{name}.log"
        ) as (
            process,
            base,
        ),
    ):
        client, room = await join(http, base)
        spoken_s = 0.0
        cpu_before = tree_cpu_s(process.pid)
        for turn in range(turns):
            samples, rate = speech[phrases[turn % len(phrases)]]
            spoken_s += len(samples) / rate
            client_ms.append(await one_turn(client, samples, rate))
            print(f"  {name} turn {turn + 1:2}: {client_ms[-1]:6.0f} ms", flush=True)
            await asyncio.sleep(0.5)
        cpu_used = tree_cpu_s(process.pid) - cpu_before
        async with http.get(f"{base}/api/sessions/{room['room_name']}/transcript") as response:
            lines = (await response.json())["lines"]
        rss_one = tree_rss_mb(process.pid)
        others = [await join(http, base) for _ in range(SESSIONS_FOR_MEMORY - 1)]
        await asyncio.sleep(2)
        rss_many = tree_rss_mb(process.pid)
        for other, _ in others:
            await other.close()
        await client.close()
    return {
        "stt": f"{stt}/{stt_model}" if stt_model else stt,
        "tts": tts,
        "turns": turns,
        "client_measured": summary(client_ms),
        **breakdown(lines),
        "cpu_s_per_speech_s": round(cpu_used / spoken_s, 3),
        "rss_mb": {
            "one_session": round(rss_one, 1),
            f"{SESSIONS_FOR_MEMORY}_sessions": round(rss_many, 1),
            "added_per_session": round((rss_many - rss_one) / (SESSIONS_FOR_MEMORY - 1), 1),
        },
    }


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
    parser.add_argument("--pipelines", default=",".join(PIPELINES), help=f"of {', '.join(PIPELINES)}")
    args = parser.parse_args()
    names = [name.strip() for name in args.pipelines.split(",") if name.strip()]
    unknown = sorted(set(names) - set(PIPELINES))
    if unknown:
        parser.error(f"unknown pipelines: {', '.join(unknown)}")
    started = time.monotonic()
    results = {name: asyncio.run(run_pipeline(name, args.turns)) for name in names}
    path = write_result("voice_latency", {"unit": "ms", "targets": TARGETS, "pipelines": results})
    header = "".join(f"{name:>24}" for name in names)
    print(f"\nvoice-to-voice over {args.turns} turns, ms (p50 / p90){header}")
    for key in (
        "client_measured",
        "agent_e2e_latency",
        "eou_end_of_turn_delay",
        "stt_transcription_delay",
        "llm_ttft",
        "tts_ttfb",
    ):
        cells = "".join(
            f"{results[name][key]['p50']:>15.0f} / {results[name][key]['p90']:<6.0f}" for name in names
        )
        print(f"  {key:38}{cells}")
    print(f"  {'CPU-seconds per second of speech':38}" + "".join(
        f"{results[name]['cpu_s_per_speech_s']:>24.3f}" for name in names
    ))  # fmt: skip
    for key in ("one_session", f"{SESSIONS_FOR_MEMORY}_sessions", "added_per_session"):
        print(f"  {'RSS MB, ' + key.replace('_', ' '):38}" + "".join(
            f"{results[name]['rss_mb'][key]:>24.1f}" for name in names
        ))  # fmt: skip
    print(
        f"targets: voice-to-voice p50 < {TARGETS['voice_to_voice_p50_ms']:.0f} ms with the default pipeline; "
        f"added memory per session < {TARGETS['added_rss_per_session_mb']:.0f} MB"
    )
    print(f"(written to {path.relative_to(path.parents[2])}; {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
