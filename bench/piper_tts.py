"""What the Piper voice costs: real-time factor, time to its first audio, espeak-ng's share, and memory.

In this process, no server: the voice loads (its RSS measured around the load and the runs), then each reply
is synthesised --runs times through PiperTTS as a session would, timing its first frame and its whole; two
replies at once stand for two sessions sharing the voice and its pool.

    .venv/bin/python -m bench.piper_tts [--runs 8]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import psutil

from bench.common import summary, write_result
from voicebot.providers.piper_tts import SAMPLE_RATE, PiperTTS, shared_voice, utterances

ONE_SENTENCE = "We are open from nine in the morning until five in the evening."
THREE_SENTENCES = (
    "Thank you for calling the front desk. We are open from nine in the morning until five in the evening, "
    "Monday to Friday. Is there anything else I can help you with today?"
)


async def reply(voice: PiperTTS, text: str) -> tuple[float, float, float]:
    """Milliseconds to the first frame, milliseconds to the last, and seconds of audio."""
    started = time.perf_counter()
    first_ms = 0.0
    audio_s = 0.0
    async with voice.synthesize(text) as stream:
        async for event in stream:
            if not first_ms:
                first_ms = (time.perf_counter() - started) * 1000
            audio_s += event.frame.samples_per_channel / SAMPLE_RATE
    return first_ms, (time.perf_counter() - started) * 1000, audio_s


async def main(runs: int) -> None:
    process = psutil.Process()
    rss_before = process.memory_info().rss
    await shared_voice()
    rss_loaded = process.memory_info().rss
    voice = PiperTTS()
    await reply(voice, ONE_SENTENCE)  # the first run sizes onnxruntime's buffers

    espeak_ms: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        await utterances(THREE_SENTENCES, voice="en-us")
        espeak_ms.append((time.perf_counter() - started) * 1000)

    result: dict[str, object] = {"espeak_ng_ms_per_call": summary(espeak_ms)}
    for name, text in (("one_sentence", ONE_SENTENCE), ("three_sentences", THREE_SENTENCES)):
        first, whole, audio, rtf = [], [], [], []
        for _ in range(runs):
            first_ms, whole_ms, audio_s = await reply(voice, text)
            first.append(first_ms)
            whole.append(whole_ms)
            audio.append(audio_s)
            rtf.append(whole_ms / 1000 / audio_s)
        result[name] = {
            "first_audio_ms": summary(first),
            "whole_ms": summary(whole),
            "audio_s": summary(audio),
            "real_time_factor": summary(rtf),
        }

    together_first, together_rtf = [], []
    for _ in range(runs):
        started = time.perf_counter()
        replies = await asyncio.gather(reply(PiperTTS(), THREE_SENTENCES), reply(PiperTTS(), THREE_SENTENCES))
        wall_s = time.perf_counter() - started
        together_first += [first_ms for first_ms, _, _ in replies]
        together_rtf.append(wall_s / sum(audio_s for _, _, audio_s in replies))
    result["two_sessions_three_sentences"] = {
        "first_audio_ms": summary(together_first),
        "real_time_factor_of_both": summary(together_rtf),
    }
    result["rss_mb"] = {
        "added_by_loading": round((rss_loaded - rss_before) / 2**20, 1),
        "added_after_runs": round((process.memory_info().rss - rss_before) / 2**20, 1),
    }

    for key, value in result.items():
        print(f"{key}: {value}")
    print(f"written to {write_result('piper_tts', result)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    asyncio.run(main(parser.parse_args().runs))
