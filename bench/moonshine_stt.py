"""Moonshine base's and tiny's cost: milliseconds per recognition, CPU per second of speech, the memory each
adds.

Recognises espeak-ng speech cut to 1.5, 3 and 10 s, one at a time and two at once (two sessions' turns ending
together), with voicebot's onnxruntime settings (one thread per recognition), each model in turn, following
one reading at a time (beam_width 1) and three (the default). Reads this process's RSS before and after
loading each model (tiny first: it is the smaller).

    .venv/bin/python -m bench.moonshine_stt [--runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import psutil

from bench.common import ROOT, summary, write_result
from tests.voice_client import espeak
from voicebot.config import DEFAULT_MODELS_DIR
from voicebot.providers import moonshine_stt
from voicebot.providers.audio import SAMPLE_RATE

LENGTHS_S = (1.5, 3.0, 10.0)
TEXT = (
    "Good morning. I am calling about the order I placed last Tuesday, number four two seven. "
    "It was meant to arrive on Friday, but nothing has come yet, and the tracking page has not changed "
    "since the weekend. Could someone tell me where it is, and whether I can still get it before Monday?"
)
MB = 1024 * 1024


WIDTHS = (1, 3)


def measure(
    model: moonshine_stt._Moonshine, audio: np.ndarray, runs: int, at_once: int, width: int
) -> dict[str, Any]:
    """Wall ms per recognition with `at_once` running together, and CPU seconds per second of speech."""
    model.transcribe(audio, beam_width=width)
    wall: list[float] = []
    cpu_start = time.process_time()
    with ThreadPoolExecutor(at_once) as pool:
        for _ in range(runs):

            def timed(_: int) -> float:
                started = time.perf_counter()
                model.transcribe(audio, beam_width=width)
                return (time.perf_counter() - started) * 1000

            wall.extend(pool.map(timed, range(at_once)))
    cpu_s = time.process_time() - cpu_start
    speech_s = len(audio) / SAMPLE_RATE * runs * at_once
    return {"ms": summary(wall), "cpu_s_per_speech_s": round(cpu_s / speech_s, 4)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    samples, rate = await espeak(TEXT)
    positions = np.linspace(0, len(samples) - 1, int(len(samples) * SAMPLE_RATE / rate))
    speech = np.interp(positions, np.arange(len(samples)), samples).astype(np.float32) / 32768.0

    process = psutil.Process()
    memory: dict[str, Any] = {}
    results: dict[str, Any] = {}
    for name in ("tiny", "base"):
        before = process.memory_info().rss
        model = moonshine_stt._Moonshine(name, ROOT / DEFAULT_MODELS_DIR)
        loaded = process.memory_info().rss
        model.transcribe(speech[: int(10 * SAMPLE_RATE)], beam_width=max(WIDTHS))
        warm = process.memory_info().rss
        memory[name] = added = {
            "rss_added_by_loading_mb": round((loaded - before) / MB, 1),
            "rss_added_after_a_10s_recognition_mb": round((warm - before) / MB, 1),
        }
        print(f"{name}: RSS +{added['rss_added_by_loading_mb']} MB loaded, "
              f"+{added['rss_added_after_a_10s_recognition_mb']} MB after a 10 s recognition")  # fmt: skip
        results[name] = {}
        for length in LENGTHS_S:
            audio = speech[: int(length * SAMPLE_RATE)]
            for at_once in (1, 2):
                for width in WIDTHS:
                    row = measure(model, audio, args.runs, at_once, width)
                    results[name][f"{length}s_x{at_once}_beam{width}"] = row
                    wall, cpu = row["ms"], row["cpu_s_per_speech_s"]
                    print(f"{name:5} beam {width} {length:5.1f} s x{at_once}: p50 {wall['p50']:7.1f} ms  "
                          f"p95 {wall['p95']:7.1f} ms  {cpu:.4f} CPU-s/s")  # fmt: skip
    path = write_result("moonshine_stt", {"runs": args.runs, "memory": memory, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
