"""Where speech is audible in recorded audio, and the agent's greeting as its offline voice says it.

The tests and bench/first_word.py measure the greeting the same way: the first audible 10 ms frame is when
the first word arrived, and the span from the first to the last audible frame is how much of it was heard.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from livekit import rtc

from tests.voice_client import VoiceClient, espeak, rms
from voicebot.config import AgentDefinition, load_settings

ROOT = Path(__file__).resolve().parent.parent
VOICED_RMS = 300.0
"""int16 RMS above which a frame counts as audible: above Opus's silence, well below espeak-ng's vowels."""
FRAME_S = 0.01
"""One WebRTC audio frame; levels are measured frame by frame on both sides of the comparison."""
WHOLE_WITHIN_S = 0.1
"""How far the heard greeting's audible span may be from the synthesised one's and still count as whole.

A whole greeting comes out 10-70 ms shorter at the client, in both voicebot and the standard worker and in
every join order, its first frames' levels closely matching the synthesised start's, while the jitter
buffer removes and inserts about as much (WebRTC's stats): Opus moving the quietest frames across the
threshold. A start lost to a track nobody had subscribed to yet costs more: a subscription's round trip.
What the jitter buffer did remove or insert (`VoiceClient.playout_stretch`) widens the bound by as much.
"""
QUIET_AFTER_S = 0.3
"""Quiet audio received after the agent's last audible frame, once it listens again, that ends the greeting:
the state attribute and the audio travel separately, and the last frames may still be in the jitter buffer."""


def frame_levels(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """The RMS level of each whole 10 ms frame of int16 `samples`."""
    size = round(sample_rate * FRAME_S)
    count = len(samples) // size
    frames = samples[: count * size].astype(np.float64).reshape(count, size)
    levels: np.ndarray = np.sqrt((frames**2).mean(axis=1))
    return levels


def voiced_span(
    samples: np.ndarray, sample_rate: int, threshold: float = VOICED_RMS
) -> tuple[float, float] | None:
    """Seconds from the start of `samples` to the start of the first and the end of the last audible frame."""
    loud = np.flatnonzero(frame_levels(samples, sample_rate) > threshold)
    if not loud.size:
        return None
    return float(loud[0]) * FRAME_S, float(loud[-1] + 1) * FRAME_S


def voiced_duration(samples: np.ndarray, sample_rate: int) -> float:
    """Seconds from the first to past the last audible frame; 0 for silence."""
    span = voiced_span(samples, sample_rate)
    return span[1] - span[0] if span else 0.0


@dataclass(frozen=True)
class Speech:
    """Audio as int16 samples at a sample rate."""

    samples: np.ndarray
    sample_rate: int

    @property
    def voiced_s(self) -> float:
        """Seconds from the first to past the last audible frame."""
        return voiced_duration(self.samples, self.sample_rate)


def as_vad_segment(samples: np.ndarray, rate: int) -> rtc.AudioFrame:
    """Speech with half a second of silence before and after, as Silero's segments reach a recogniser."""
    pad = np.zeros(rate // 2, dtype=np.int16)
    audio = np.concatenate([pad, samples, pad])
    return rtc.AudioFrame(audio.tobytes(), rate, 1, len(audio))


def greeting_agent(agent_id: str = "agent-123") -> AgentDefinition:
    """The agent as the shipped config.toml defines it (the one voicebot and the standard worker run)."""
    agent = load_settings(ROOT / "config.toml", {}).agent(agent_id)
    assert agent is not None, f"config.toml has no agent {agent_id}"
    return agent


async def synthesised_greeting(agent: AgentDefinition, voice: str = "espeak") -> Speech:
    """The agent's greeting as its offline voice (`[models] tts`: "espeak" or "piper") speaks it, at the
    agent's speed."""
    if voice == "piper":
        from voicebot.providers.piper_tts import SAMPLE_RATE, PiperTTS

        async with PiperTTS(speed_wpm=agent.tts.speed_wpm).synthesize(agent.greeting) as stream:
            frames = [np.frombuffer(event.frame.data, dtype=np.int16) async for event in stream]
        return Speech(np.concatenate(frames), SAMPLE_RATE)
    samples, rate = await espeak(agent.greeting, voice=agent.tts.voice or "en-us", wpm=agent.tts.speed_wpm)
    return Speech(samples, rate)


def offline_voice() -> str:
    """The offline voice a voicebot started from config.toml with this environment speaks with."""
    return load_settings(ROOT / "config.toml", os.environ).models.tts


def first_audible(frames: list[tuple[float, np.ndarray]], threshold: float = VOICED_RMS) -> float | None:
    """When the first audible frame of (arrival time, int16 samples) frames arrived; None if none is."""
    return next((at for at, samples in frames if rms(samples) > threshold), None)


def audible_yet(person: VoiceClient) -> Callable[[], bool]:
    """A condition for `person.wait_for`: an audible frame of the agent has arrived (each checked once)."""
    checked = 0

    def audible() -> bool:
        nonlocal checked
        frames = person.agent_audio
        while checked < len(frames):
            if rms(frames[checked][1]) > VOICED_RMS:
                return True
            checked += 1
        return False

    return audible


def greeting_over(person: VoiceClient) -> bool:
    """Whether the agent has spoken, listens again, and its audio has gone quiet at the client."""
    states = person.agent_states
    if "speaking" not in states or states[-1] != "listening":
        return False
    frames = person.agent_audio
    loud = [i for i, (_, samples) in enumerate(frames) if rms(samples) > VOICED_RMS]
    if not loud:
        return False
    quiet = sum(len(samples) for _, samples in frames[loud[-1] + 1 :])
    return quiet >= QUIET_AFTER_S * person.agent_sample_rate


def heard_speech(person: VoiceClient) -> Speech:
    """The agent's audio the client received, from its first to its last audible frame."""
    frames = person.agent_audio
    loud = [i for i, (_, samples) in enumerate(frames) if rms(samples) > VOICED_RMS]
    if not loud:
        return Speech(np.zeros(0, dtype=np.int16), person.agent_sample_rate)
    return Speech(np.concatenate([s for _, s in frames[loud[0] : loud[-1] + 1]]), person.agent_sample_rate)


async def hear_greeting(person: VoiceClient, within_s: float) -> Speech:
    """Wait for the greeting at `person` to its end; the audio from its first to its last audible frame."""
    await person.wait_for(audible_yet(person), within_s, "the greeting's first audible frame")
    await person.wait_for(lambda: greeting_over(person), within_s, "the greeting to end")
    return heard_speech(person)


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Words substituted, dropped or added between two word lists (word-level Levenshtein distance)."""
    previous = list(range(len(hypothesis) + 1))
    for i, said in enumerate(reference, 1):
        current = [i]
        for j, heard in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (said != heard)))
        previous = current
    return previous[-1]
