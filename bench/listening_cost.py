"""A session's listening with a recogniser that does not stream: livekit-agents' adapter vs voicebot's echo.

A session's audio goes to its VAD stream and to its STT stream. For a recogniser that does not stream
(Moonshine, pocketsphinx), livekit-agents wraps it in a StreamAdapter that opens a second VAD stream on the
same audio; voicebot's adapter listens to the session's own stream's speech boundaries instead
(voicebot/agents/listening.py). Both are fed, in real time, the same 16 kHz room audio as bench/vad_cost.py,
on the batched Silero VAD sessions use, with a recogniser that answers at once (so only listening is
measured). N sessions at once, the two systems taking turns in rounds within this one process:

- adapter: the session's VAD stream, and livekit-agents' `StreamAdapter(stt, vad)` on the shared VAD;
- echo: `session_listening(stt, vad)`, as voicebot builds each AgentSession.

CPU is the process's per session-second of audio; windows are the VAD windows judged per session-second.

    .venv/bin/python -m bench.listening_cost [--seconds 30] [--sessions 1 8] [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import stt, vad

from bench.common import write_result
from bench.vad_cost import OPTIONS, PHASES_S, RATE, play, room_audio
from tests.fakes import ScriptedSTT
from voicebot.agents.listening import session_listening
from voicebot.providers.silero_vad import BatchedSileroVAD

Listening = Callable[[stt.STT[Any], BatchedSileroVAD], tuple[stt.STT[Any], vad.VAD]]


def livekit_adapter(speech_to_text: stt.STT[Any], shared: BatchedSileroVAD) -> tuple[stt.STT[Any], vad.VAD]:
    """What livekit-agents' `Agent.stt_node` builds for a recogniser that does not stream."""
    return stt.StreamAdapter(stt=speech_to_text, vad=shared), shared


SYSTEMS: dict[str, Listening] = {"adapter": livekit_adapter, "echo": session_listening}


@dataclass
class Run:
    """One system's cost for a number of sessions, summed over rounds."""

    cpu_s: float = 0.0
    session_s: float = 0.0
    windows: int = 0
    utterances: int = 0

    def __add__(self, other: Run) -> Run:
        """Two rounds as one."""
        return Run(
            cpu_s=self.cpu_s + other.cpu_s,
            session_s=self.session_s + other.session_s,
            windows=self.windows + other.windows,
            utterances=self.utterances + other.utterances,
        )


async def session(listening: Listening, shared: BatchedSileroVAD, audio: np.ndarray, phase_s: float) -> int:
    """One session's listening over `audio` in real time, read as AgentSession reads it; utterances heard."""
    # With no script it hears nothing, at once: the recogniser's own cost is not what is measured.
    recogniser = ScriptedSTT([])
    speech_to_text, voice_activity = listening(recogniser, shared)
    detecting, recognising = voice_activity.stream(), speech_to_text.stream()

    async def drain(events: Any) -> None:
        async for _ in events:
            pass

    def push(frame: rtc.AudioFrame) -> None:
        detecting.push_frame(frame)
        recognising.push_frame(frame)

    try:
        async with asyncio.TaskGroup() as readers:
            heard_all = readers.create_task(drain(detecting))
            readers.create_task(drain(recognising))
            await play(audio, phase_s, push)
            detecting.end_input()
            await heard_all
            # The STT stream ends with the session, after the VAD has heard everything.
            recognising.end_input()
    finally:
        await detecting.aclose()
        await recognising.aclose()
    return len(recogniser.heard_s)


async def run(listening: Listening, shared: BatchedSileroVAD, sessions: int, audio: np.ndarray) -> Run:
    rng = random.Random(sessions)  # noqa: S311 (the same phases every run, not secrets)
    windows = shared.inference_counts.windows
    cpu = time.process_time()
    heard = await asyncio.gather(
        *(
            session(listening, shared, np.roll(audio, rng.randrange(len(audio))), rng.uniform(0, PHASES_S))
            for _ in range(sessions)
        )
    )
    return Run(
        cpu_s=time.process_time() - cpu,
        session_s=sessions * len(audio) / RATE,
        windows=shared.inference_counts.windows - windows,
        utterances=sum(heard),
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per session")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=4, help="turns each system takes, interleaved")
    args = parser.parse_args()

    audio = await room_audio(args.seconds)
    shared = await asyncio.to_thread(lambda: BatchedSileroVAD(**OPTIONS))
    chunks = np.array_split(audio, args.rounds)
    names = list(SYSTEMS)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    print(f"{'sessions':>8} {'system':<8} {'CPU ms/session-s':>16} {'%core/session':>13} {'windows/s':>9}")
    for sessions in args.sessions:
        runs = {name: Run() for name in names}
        for round_, chunk in enumerate(chunks):
            for name in names[round_ % 2 :] + names[: round_ % 2]:
                runs[name] = runs[name] + await run(SYSTEMS[name], shared, sessions, chunk)
        results[str(sessions)] = {}
        for name, total in runs.items():
            row = {
                "cpu_ms_per_session_s": round(total.cpu_s / total.session_s * 1000, 2),
                "windows_per_session_s": round(total.windows / total.session_s, 1),
                "utterances": total.utterances,
            }
            results[str(sessions)][name] = row
            print(
                f"{sessions:>8} {name:<8} {row['cpu_ms_per_session_s']:>16.2f} "
                f"{row['cpu_ms_per_session_s'] / 10:>13.2f} {row['windows_per_session_s']:>9.1f}"
            )
    await shared.aclose()
    path = write_result(
        "listening_cost",
        {
            "seconds_per_session": args.seconds,
            "rounds": args.rounds,
            "cpus_available": len(os.sched_getaffinity(0)),
            "results": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
