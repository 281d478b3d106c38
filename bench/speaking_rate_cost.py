"""What pacing the captions costs: livekit-agents' speaking-rate estimate, its own flux and voicebot's.

The transcript synchroniser estimates how fast the agent speaks from every 1 s window of its voice, every
100 ms, on the event loop. This feeds the same audio (Piper's rendering of the greeting, looped, in 20 ms
frames at 24 kHz, as the agent's output carries it) through a speaking-rate stream with each flux
computation, in rounds that alternate, and reports CPU seconds per second of agent speech, and the
largest difference between the two computations' speaking rates.

    .venv/bin/python -m bench.speaking_rate_cost [--seconds 20] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from livekit import rtc
from livekit.agents.voice.transcription._speaking_rate import SpeakingRateDetector, SpeakingRateStream

from bench.common import ROOT, write_result
from tests.audio import greeting_agent, synthesised_greeting
from voicebot.sessions.speaking_rate import LIVEKIT_SPECTRAL_FLUX, estimate_in_one_call

RATE = 24000
FRAME = RATE // 50  # the agent's output frames: 20 ms


async def _voice() -> bytes:
    """The default voice saying agent-123's greeting, at the output's rate."""
    greeting = await synthesised_greeting(greeting_agent(), "piper")
    resampler = rtc.AudioResampler(greeting.sample_rate, RATE, num_channels=1)
    heard = rtc.AudioFrame(greeting.samples.tobytes(), greeting.sample_rate, 1, len(greeting.samples))
    return b"".join(bytes(frame.data) for frame in resampler.push(heard) + resampler.flush())


def _frames(pcm: bytes, seconds: float) -> list[rtc.AudioFrame]:
    wanted = int(seconds * RATE) * 2
    looped = (pcm * (wanted // len(pcm) + 1))[:wanted]
    step = FRAME * 2
    return [rtc.AudioFrame(looped[i : i + step], RATE, 1, FRAME) for i in range(0, len(looped), step)]


async def _estimate(frames: list[rtc.AudioFrame]) -> tuple[float, list[float]]:
    """CPU seconds spent on `frames`, and the speaking rates the stream gave."""
    stream = SpeakingRateDetector().stream()
    rates: list[float] = []

    async def read() -> None:
        async for event in stream:
            rates.append(event.speaking_rate)

    reader = asyncio.create_task(read())
    started = time.process_time()
    for frame in frames:
        stream.push_frame(frame)
        await asyncio.sleep(0)  # the loop turns between frames, as it does between real ones
    stream.end_input()
    await reader
    return time.process_time() - started, rates


async def run(seconds: float, rounds: int) -> dict[str, Any]:
    frames = _frames(await _voice(), seconds)
    cost: dict[str, list[float]] = {"livekit": [], "one_call": []}
    rates: dict[str, list[float]] = {}
    for _ in range(rounds):
        for system in cost:
            if system == "livekit":
                SpeakingRateStream._spectral_flux = LIVEKIT_SPECTRAL_FLUX  # type: ignore[method-assign]
            else:
                estimate_in_one_call()
            spent, rates[system] = await _estimate(frames)
            cost[system].append(spent / seconds)
    SpeakingRateStream._spectral_flux = LIVEKIT_SPECTRAL_FLUX  # type: ignore[method-assign]
    difference = max(
        (abs(a - b) / max(abs(a), 1e-12) for a, b in zip(rates["livekit"], rates["one_call"], strict=True)),
        default=0.0,
    )
    return {
        "seconds_of_speech": seconds,
        "rounds": rounds,
        "events": len(rates["livekit"]),
        "cpu_s_per_s_of_speech": {
            system: {"median": round(statistics.median(values), 4), "all": [round(v, 4) for v in values]}
            for system, values in cost.items()
        },
        "largest_relative_difference": difference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of agent speech a round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each computation, alternating")
    args = parser.parse_args()
    result = asyncio.run(run(args.seconds, args.rounds))
    path = write_result("speaking_rate_cost", result)
    medians = result["cpu_s_per_s_of_speech"]
    livekit, one_call = medians["livekit"]["median"], medians["one_call"]["median"]
    print(f"speaking-rate estimate, CPU s per s of agent speech ({result['events']} events a round):")
    print(f"  livekit-agents' flux   {livekit:.4f}  ({livekit * 100:.1f}% of a core while the agent speaks)")
    print(f"  one call per window    {one_call:.4f}  ({one_call * 100:.1f}%), {livekit / one_call:.1f}x less")
    difference = result["largest_relative_difference"]
    print(f"  largest relative difference between their speaking rates: {difference:.1e}")
    print(f"(written to {path.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
