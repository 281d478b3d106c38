"""The density benchmark's callers: K LiveKit clients in one process, each asking a question every cycle.

bench/density.py runs this as a process of its own, so that what the clients cost the machine is measured
apart from the system under test. It reads one JSON line on stdin,

    {"sessions": [[url, token], ...], "phrase": "...", "cycle_s": 7.0, "max_s": 300.0}

joins every room, waits for each agent's greeting, and then has each client say `phrase` (espeak-ng, into a
48 kHz microphone) at the start of every cycle and stay silent for the rest of it, the clients' cycles spread
evenly over one cycle. It prints one JSON line when all have started (`{"event": "ready", ...}`), answers
each `count` line on stdin with the counts so far (`{"event": "count", ...}`), and leaves at `stop`, at the
end of its stdin, or after `max_s` by itself.

A question counts once its cycle is over, and as replied to if the agent was heard in that cycle after the
question ended: agent audio above speech level for REPLY_FRAMES frames, or the agent's final transcription.

    .venv/bin/python -m bench.density_clients < sessions.json   (normally started by bench.density)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from livekit import rtc

from tests.audio import VOICED_RMS
from tests.voice_client import VoiceClient, espeak, rms
from voicebot.livekit import AGENT_IDENTITY_PREFIX

REPLY_FRAMES = 5
"""Audible agent frames (10 ms each) after a question that make a reply: more than a click, under a word."""
GREETING_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 10.0


@dataclass
class CountingClient(VoiceClient):
    """A VoiceClient that counts the agent's audible frames after each question instead of recording them.

    Recording every client's audio for minutes would grow without bound; only the level matters here.
    """

    question_ended_at: float = math.inf
    loud_frames: int = 0
    questions: int = 0
    replies: int = 0
    greeted: bool = False
    error: str = ""

    async def _record(self, stream: rtc.AudioStream) -> None:
        # Overrides VoiceClient's recorder (started for each agent track it subscribes to).
        try:
            async for event in stream:
                if time.monotonic() > self.question_ended_at:
                    samples = np.frombuffer(event.frame.data, dtype=np.int16)
                    if rms(samples) > VOICED_RMS:
                        self.loud_frames += 1
        finally:
            await stream.aclose()

    def replied_since(self, at: float) -> bool:
        """Whether the agent was heard after `at`: enough audible frames, or a final transcription."""
        if self.loud_frames >= REPLY_FRAMES:
            return True
        return any(
            h.final and h.at > at and h.text.strip() and h.identity.startswith(AGENT_IDENTITY_PREFIX)
            for h in self.heard
        )

    async def ask_every(self, speech: np.ndarray, rate: int, cycle_s: float, offset_s: float) -> None:
        """Say `speech` at the start of every `cycle_s`, first after `offset_s`, until cancelled."""
        try:
            await self.wait_for_greeting(GREETING_TIMEOUT_S)
            self.greeted = True
        except AssertionError as exc:
            # Ask anyway: a session that never greets should show up as questions without replies.
            self.error = str(exc)[:300]
        await asyncio.sleep(offset_s)
        while True:
            started = time.monotonic()
            self.question_ended_at = math.inf  # the question itself (and what it interrupts) is no reply
            ended = await self.say(speech, rate, trailing_silence_s=0)
            self.loud_frames = 0
            self.question_ended_at = ended
            await asyncio.sleep(max(0.0, started + cycle_s - time.monotonic()))
            replied = self.replied_since(ended)
            self.questions += 1
            self.replies += replied
            self.heard.clear()  # only this cycle's transcriptions matter; the list must not grow all run

    def counts(self) -> dict[str, Any]:
        """What this client has asked and heard so far."""
        return {
            "questions": self.questions,
            "replies": self.replies,
            "greeted": self.greeted,
            **({"error": self.error} if self.error else {}),
        }


def emit(event: str, clients: list[CountingClient], **extra: Any) -> None:
    """One JSON line on stdout for bench/density.py."""
    per_client = [client.counts() for client in clients]
    line = {
        "event": event,
        "questions": sum(c["questions"] for c in per_client),
        "replies": sum(c["replies"] for c in per_client),
        "clients": per_client,
        **extra,
    }
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


async def stdin_reader() -> asyncio.StreamReader:
    """stdin as an asyncio stream."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run() -> None:
    reader = await stdin_reader()
    brief = json.loads(await asyncio.wait_for(reader.readline(), 60))
    deadline = time.monotonic() + float(brief["max_s"])
    cycle_s = float(brief["cycle_s"])
    speech, rate = await espeak(brief["phrase"])
    clients = [CountingClient(url, token) for url, token in brief["sessions"]]
    tasks: list[asyncio.Task[None]] = []
    try:
        await asyncio.wait_for(asyncio.gather(*(client.connect() for client in clients)), 60)
        tasks = [
            asyncio.create_task(client.ask_every(speech, rate, cycle_s, cycle_s * i / len(clients)))
            for i, client in enumerate(clients)
        ]
        emit("ready", clients, speech_s=round(len(speech) / rate, 3))
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                command = (await asyncio.wait_for(reader.readline(), remaining)).decode().strip()
            except TimeoutError:
                break
            if command == "count":
                failed = [str(task.exception()) for task in tasks if task.done() and task.exception()]
                emit("count", clients, **({"failed": failed} if failed else {}))
            elif command in ("stop", ""):  # "" is the end of stdin: the benchmark went away
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(client.close() for client in clients), return_exceptions=True),
                CLOSE_TIMEOUT_S,
            )


if __name__ == "__main__":
    asyncio.run(run())
