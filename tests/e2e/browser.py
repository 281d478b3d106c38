"""The test browser, for the e2e tests and bench/browser_latency.py: its flags, microphone and latencies."""

from __future__ import annotations

import re
import wave
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from playwright.async_api import Page, expect

from tests.voice_client import espeak

# What the fake microphone says, and the reply of the Reception agent's rule for it.
PHRASE = "what are your opening hours"
# Chromium loops the file. The lead lets the greeting finish before the phrase; the reply fits in the rest.
LEAD_SILENCE_S = 5.5
TRAIL_SILENCE_S = 1.0


def chromium_args(microphone: Path | None, *, grant_microphone: bool = True) -> list[str]:
    """Flags for a test browser: no background traffic, and a fake microphone that plays a file."""
    args = [
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--no-first-run",
        "--metrics-recording-only",
        "--autoplay-policy=user-gesture-required",
        "--use-fake-device-for-media-stream",
    ]
    if grant_microphone:
        args.append("--use-fake-ui-for-media-stream")
    if microphone is not None:
        args.append(f"--use-file-for-fake-audio-capture={microphone}")
    return args


async def write_microphone_wav(path: Path, phrases: Sequence[str] = (PHRASE,), gap_s: float = 7.0) -> Path:
    """Write a WAV of espeak-ng saying `phrases` between stretches of silence (`gap_s` between two) to
    `path`."""
    parts: list[np.ndarray] = []
    rate = 22050
    for index, phrase in enumerate(phrases):
        samples, rate = await espeak(phrase)
        parts += [np.zeros(int((LEAD_SILENCE_S if index == 0 else gap_s) * rate), dtype=np.int16), samples]
    parts.append(np.zeros(int(TRAIL_SILENCE_S * rate), dtype=np.int16))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.concatenate(parts).tobytes())
    return path


@dataclass
class PageLatencies:
    """What the test page measured of one call, as it shows it (ms; wall-clock times in epoch ms)."""

    greeting_ms: int
    """From pressing Connect to the greeting's first sound."""
    turn_ms: int
    """From the last sample of the person's voice to the first of the reply."""
    turn_by_reading_ms: int
    """The same turn timed at the page's level readings, as the page first did."""
    voice_ended_at: int
    reply_at: int
    audio_path: dict[str, int] = field(default_factory=dict)
    """WebRTC's statistics of the agent's audio: rttMs, jitterBufferMs, jitterTargetMs, playoutMs."""


async def wait_for_latencies(page: Page, timeout_ms: float) -> PageLatencies:
    """The greeting's and the last turn's latency once the page shows both, and the agent's audio path."""
    digits = re.compile(r"^\d+$")
    await expect(page.locator("#greeting-latency")).to_have_attribute("data-ms", digits, timeout=timeout_ms)
    await expect(page.locator("#latency")).to_have_attribute("data-ms", digits, timeout=timeout_ms)
    numbers: dict[str, Any] = await page.evaluate(
        """() => {
            const numbers = (element) => Object.fromEntries(
                Object.entries(element.dataset).map(([key, value]) => [key, Number(value)])
            );
            return {
                greeting: numbers(document.getElementById("greeting-latency")),
                turn: numbers(document.getElementById("latency")),
                path: numbers(document.getElementById("media-stats")),
            };
        }"""
    )
    turn = numbers["turn"]
    return PageLatencies(
        greeting_ms=int(numbers["greeting"]["ms"]),
        turn_ms=int(turn["ms"]),
        turn_by_reading_ms=int(turn["byReadingMs"]),
        voice_ended_at=int(turn["voiceEndedAt"]),
        reply_at=int(turn["replyAt"]),
        audio_path={key: int(value) for key, value in numbers["path"].items() if key != "at"},
    )
