"""What playing a kept line costs the event loop: kept at the voice's rate, or at the agent's output rate.

A rules agent's greeting and replies are synthesised once and replayed from memory (agents/spoken_lines.py).
Piper speaks at 22,050 Hz and the agent's audio output runs at 24 kHz, so a line kept at Piper's rate is
resampled by livekit-agents (`_audio_forwarding_task`: one native resampler per playback, fed every 20 ms
frame) each time it is played; kept at 24 kHz it is handed on as it is. This replays agent-123's greeting
from both caches, in rounds that alternate, through that same step, and reports CPU seconds per second of
agent speech.

    .venv/bin/python -m bench.line_playback_cost [--seconds 30] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from livekit import rtc

from bench.common import ROOT, write_result
from tests.audio import greeting_agent
from voicebot.agents.spoken_lines import SpokenLines
from voicebot.providers.piper_tts import PiperTTS, shared_voice
from voicebot.sessions.agent_voice import SAMPLE_RATE

AGENT_ID = "bench"


async def _play(lines: SpokenLines, text: str, voice: PiperTTS, seconds: float) -> float:
    """CPU seconds to hand on `seconds` of the line's replays the way livekit-agents forwards TTS audio."""
    played = 0.0
    started = time.process_time()
    while played < seconds:
        resampler: rtc.AudioResampler | None = None
        async for frame in lines.audio(AGENT_ID, text, voice):
            if resampler is None and frame.sample_rate != SAMPLE_RATE:
                resampler = rtc.AudioResampler(frame.sample_rate, SAMPLE_RATE, num_channels=1)
            out = resampler.push(frame) if resampler is not None else [frame]
            played += sum(f.duration for f in out)
        if resampler is not None:
            played += sum(f.duration for f in resampler.flush())
    return time.process_time() - started


async def run(seconds: float, rounds: int) -> dict[str, Any]:
    agent = greeting_agent()
    await shared_voice()
    caches = {"voice_rate": SpokenLines(), "output_rate": SpokenLines(sample_rate=SAMPLE_RATE)}
    voice = PiperTTS(speed_wpm=agent.tts.speed_wpm)
    for cache in caches.values():
        await cache.fill(AGENT_ID, agent.greeting, voice)
    cost: dict[str, list[float]] = {name: [] for name in caches}
    for _ in range(rounds):
        for name, cache in caches.items():
            cost[name].append(await _play(cache, agent.greeting, voice, seconds) / seconds)
    await voice.aclose()
    return {
        "seconds_of_speech": seconds,
        "rounds": rounds,
        "cpu_s_per_s_of_speech": {
            name: {"median": round(statistics.median(values), 5), "all": [round(v, 5) for v in values]}
            for name, values in cost.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of agent speech a round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each cache, alternating")
    args = parser.parse_args()
    result = asyncio.run(run(args.seconds, args.rounds))
    path = write_result("line_playback_cost", result)
    medians = result["cpu_s_per_s_of_speech"]
    before, after = medians["voice_rate"]["median"], medians["output_rate"]["median"]
    print("playing a kept line, CPU s per s of agent speech on the event loop:")
    print(f"  kept at Piper's 22,050 Hz (resampled at every playback)  {before:.5f}  ({before * 100:.2f}%)")
    print(f"  kept at the output's 24 kHz                              {after:.5f}  ({after * 100:.2f}%)")
    print(f"(written to {path.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
