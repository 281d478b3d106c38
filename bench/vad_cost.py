"""What listening costs: CPU and loop lag of N concurrent VAD streams, livekit-plugins-silero vs batched.

Each stream is fed 16 kHz room audio (espeak-ng speech with silence between utterances) in real time, one
20 ms frame at a time, each starting at its own moment as sessions do, and its events are read as AgentSession
reads them. For N = 1, 4, 8 streams, the systems take turns in this one process (in rounds, so that what
else runs on the machine falls on all of them alike):

- none: a stream that reads its frames and hears nothing: the cost of feeding and of the harness, which
  the other rows' "VAD" column leaves out;
- plugin: `silero.VAD.load()`, one executor hand-off per window per stream (what sessions used before);
- batched: voicebot/providers/silero_vad.py, windows of the same loop iteration in one ONNX call, every
  window reported as the plugin does;
- batched+quiet: the same as sessions run it, outside speech one quiet window reported a second;
- batched+Nms: batched with a tick that waits N ms for more windows.

CPU is the process's (every thread: onnxruntime's run in workers) per stream-second of audio; loop lag is
how late a 10 ms sleep wakes; delay is the INFERENCE_DONE events' inference_duration (window complete to
probability known, which AgentSession subtracts from the time of speech; batched+quiet's are of the windows
it reports).

    .venv/bin/python -m bench.vad_cost [--seconds 30] [--streams 1 4 8] [--gather-ms 5 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import vad
from livekit.plugins import silero

from bench.common import percentile, write_result
from tests.voice_client import espeak, resample
from voicebot.providers.silero_vad import BatchedSileroVAD

RATE = 16000
FRAME_S = 0.02
FRAME = int(RATE * FRAME_S)
PHASES_S = 0.16
"""Sessions start at any moment, so which 20 ms frame completes a 32 ms window differs between them: their
windows line up again only every 160 ms (20 and 32's least common multiple), over which phases spread."""
LAG_PROBE_S = 0.01
PHRASES = (
    "Hello, I would like to book a table for two tonight.",
    "What are your opening hours on Sunday?",
    "Can I leave a message for the manager, please?",
)
OPTIONS: dict[str, Any] = {"activation_threshold": 0.5, "min_silence_duration": 0.35}


async def room_audio(seconds: float) -> np.ndarray:
    """`seconds` of 16 kHz audio: utterances with 1-2 s of silence between them, as a caller speaks."""
    pieces: list[np.ndarray] = []
    total = 0
    rng = random.Random(7)  # noqa: S311 (the same pauses every run, not secrets)
    while total < seconds * RATE:
        samples, rate = await espeak(PHRASES[len(pieces) % len(PHRASES)])
        silence = np.zeros(int(rng.uniform(1.0, 2.0) * RATE), dtype=np.int16)
        for piece in (silence, resample(samples, rate, RATE)):
            pieces.append(piece)
            total += len(piece)
    return np.concatenate(pieces)[: int(seconds * RATE)]


class DeafVAD(vad.VAD):
    """Reads every frame and reports nothing: what is left when the detection is taken away."""

    def __init__(self) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=0.032))

    def stream(self) -> DeafStream:
        return DeafStream(self)


class DeafStream(vad.VADStream):
    async def _main_task(self) -> None:
        async for _ in self._input_ch:
            pass


@dataclass
class Run:
    """What one system cost for one number of streams."""

    cpu_s: float
    wall_s: float
    stream_s: float
    lags_ms: list[float]
    delays_ms: list[float]
    speech_starts: int
    calls: int | None
    windows: int | None

    rounds_cpu_ms_per_stream_s: list[float] = field(default_factory=list)

    def __add__(self, other: Run) -> Run:
        """Two rounds as one."""

        def add(a: int | None, b: int | None) -> int | None:
            return None if a is None or b is None else a + b

        return Run(
            cpu_s=self.cpu_s + other.cpu_s,
            wall_s=self.wall_s + other.wall_s,
            stream_s=self.stream_s + other.stream_s,
            lags_ms=self.lags_ms + other.lags_ms,
            delays_ms=self.delays_ms + other.delays_ms,
            speech_starts=self.speech_starts + other.speech_starts,
            calls=add(self.calls, other.calls),
            windows=add(self.windows, other.windows),
            rounds_cpu_ms_per_stream_s=self.rounds_cpu_ms_per_stream_s + other.rounds_cpu_ms_per_stream_s,
        )

    def row(self, baseline: Run | None) -> dict[str, Any]:
        vad_cpu_s = self.cpu_s - baseline.cpu_s * self.stream_s / baseline.stream_s if baseline else 0.0
        return {
            "cpu_ms_per_stream_s": round(self.cpu_s / self.stream_s * 1000, 3),
            "vad_cpu_ms_per_stream_s": round(vad_cpu_s / self.stream_s * 1000, 3),
            "cpu_percent_of_a_core": round(self.cpu_s / self.wall_s * 100, 2),
            "loop_lag_ms": {
                "p50": round(percentile(self.lags_ms, 50), 2),
                "p99": round(percentile(self.lags_ms, 99), 2),
                "max": round(max(self.lags_ms), 2),
            },
            "delay_ms": {
                "p50": round(percentile(self.delays_ms, 50), 2) if self.delays_ms else None,
                "p95": round(percentile(self.delays_ms, 95), 2) if self.delays_ms else None,
            },
            "rounds_cpu_ms_per_stream_s": self.rounds_cpu_ms_per_stream_s,
            "speech_starts": self.speech_starts,
            "onnx_calls": self.calls,
            "windows": self.windows,
        }


async def play(audio: np.ndarray, phase_s: float, push: Callable[[rtc.AudioFrame], None]) -> None:
    """Hand `audio` to `push` in 20 ms frames at the pace it plays, on absolute deadlines so it does not
    drift, starting `phase_s` from now."""
    loop = asyncio.get_running_loop()
    start = loop.time() + phase_s
    for i, offset in enumerate(range(0, len(audio) - FRAME + 1, FRAME)):
        delay = start + i * FRAME_S - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        push(rtc.AudioFrame(audio[offset : offset + FRAME].tobytes(), RATE, 1, FRAME))


async def feed(stream: vad.VADStream, audio: np.ndarray, phase_s: float) -> None:
    """Push `audio` to `stream` as it plays, then end its input."""
    await play(audio, phase_s, stream.push_frame)
    stream.end_input()


async def listen(stream: vad.VADStream, delays_ms: list[float]) -> int:
    """Read every event; the number of speech starts."""
    starts = 0
    async for event in stream:
        if event.type is vad.VADEventType.INFERENCE_DONE:
            delays_ms.append(event.inference_duration * 1000)
        elif event.type is vad.VADEventType.START_OF_SPEECH:
            starts += 1
    return starts


async def probe_lag(lags_ms: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(LAG_PROBE_S)
        lags_ms.append((loop.time() - before - LAG_PROBE_S) * 1000)


async def run(detector: vad.VAD, streams: int, audio: np.ndarray) -> Run:
    """`streams` sessions listening through `detector` at once, in real time."""
    rng = random.Random(streams)  # noqa: S311 (the same phases every run, not secrets)
    lags_ms: list[float] = []
    delays_ms: list[float] = []
    counts = detector.inference_counts if isinstance(detector, BatchedSileroVAD) else None
    before = (counts.calls, counts.windows) if counts else (0, 0)
    stop = asyncio.Event()
    cpu, wall = time.process_time(), time.monotonic()
    opened = [detector.stream() for _ in range(streams)]
    async with asyncio.TaskGroup() as group:
        prober = group.create_task(probe_lag(lags_ms, stop))
        # Each stream starts its audio at another point, so speech and silence overlap differently.
        listeners = [group.create_task(listen(stream, delays_ms)) for stream in opened]
        feeders = [
            group.create_task(
                feed(stream, np.roll(audio, rng.randrange(len(audio))), rng.uniform(0, PHASES_S))
            )
            for stream in opened
        ]
        await asyncio.gather(*feeders, *listeners)
        stop.set()
        await prober
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    for stream in opened:
        await stream.aclose()
    stream_s = streams * len(audio) / RATE
    return Run(
        cpu_s=cpu,
        wall_s=wall,
        stream_s=stream_s,
        rounds_cpu_ms_per_stream_s=[round(cpu / stream_s * 1000, 2)],
        lags_ms=lags_ms,
        delays_ms=delays_ms,
        speech_starts=sum(task.result() for task in listeners),
        calls=counts.calls - before[0] if counts else None,
        windows=counts.windows - before[1] if counts else None,
    )


def print_table(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    print(
        f"{'streams':>7} {'system':<13} {'CPU ms/stream-s':>15} {'VAD':>6} {'%core':>6} "
        f"{'lag p50/p99/max ms':>20} {'delay p50/p95 ms':>17} {'windows/call':>12}"
    )
    for streams, systems in results.items():
        for system, row in systems.items():
            lag, delay = row["loop_lag_ms"], row["delay_ms"]
            per_call = f"{row['windows'] / row['onnx_calls']:.2f}" if row["onnx_calls"] else "-"
            delays = f"{delay['p50']:.2f}/{delay['p95']:.2f}" if delay["p50"] is not None else "-"
            print(
                f"{streams:>7} {system:<13} {row['cpu_ms_per_stream_s']:>15.2f} "
                f"{row['vad_cpu_ms_per_stream_s']:>6.2f} {row['cpu_percent_of_a_core']:>6.1f} "
                f"{lag['p50']:>6.2f}/{lag['p99']:>6.2f}/{lag['max']:>6.2f} {delays:>17} {per_call:>12}"
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per stream")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=5, help="turns each system takes, interleaved")
    parser.add_argument(
        "--gather-ms", type=float, nargs="*", default=[5.0, 10.0], help="ticks of the waiting batched systems"
    )
    args = parser.parse_args()

    audio = await room_audio(args.seconds)
    # Loaded before any clock starts: loading is not what is measured.
    systems: dict[str, vad.VAD] = {
        "none": DeafVAD(),
        "plugin": await asyncio.to_thread(silero.VAD.load, **OPTIONS),
        "batched": await asyncio.to_thread(partial(BatchedSileroVAD, every_window=True, **OPTIONS)),
        "batched+quiet": await asyncio.to_thread(partial(BatchedSileroVAD, **OPTIONS)),
    }
    for gather_ms in args.gather_ms:
        systems[f"batched+{gather_ms:g}ms"] = await asyncio.to_thread(
            partial(BatchedSileroVAD, gather_s=gather_ms / 1000, every_window=True, **OPTIONS)
        )
    # The machine is shared: rounds of each system in turn (each starting with another) spread what the
    # neighbours do over all of them, instead of charging one system with a busy minute.
    chunks = np.array_split(audio, args.rounds)
    names = list(systems)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for streams in args.streams:
        runs: dict[str, Run] = {}
        for round_, chunk in enumerate(chunks):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                measured = await run(systems[name], streams, chunk)
                runs[name] = runs[name] + measured if name in runs else measured
        results[str(streams)] = {
            name: runs[name].row(runs["none"] if name != "none" else None) for name in names
        }
    for detector in systems.values():
        if isinstance(detector, BatchedSileroVAD):
            await detector.aclose()

    print_table(results)
    path = write_result(
        "vad_cost",
        {
            "seconds_per_stream": args.seconds,
            "rounds": args.rounds,
            "frame_ms": FRAME_S * 1000,
            "cpus_available": len(os.sched_getaffinity(0)),
            "results": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
