"""Debian's headless chromium, driven by Playwright, with a fake microphone that speaks a phrase."""

from __future__ import annotations

import shutil
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import Browser, Playwright, async_playwright

from tests.voice_client import espeak

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
# What the fake microphone says, and the reply of the Reception agent's rule for it.
PHRASE = "what are your opening hours"
# Chromium loops the file. The lead lets the greeting finish before the phrase; the reply fits in the rest.
LEAD_SILENCE_S = 5.5
TRAIL_SILENCE_S = 1.0


def chromium_path() -> str:
    """Debian's chromium; `make test` installs it, so its absence fails the run."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: `make test` installs Debian's chromium package")
    return path


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


@pytest.fixture(scope="session")
async def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WAV of espeak-ng saying PHRASE between stretches of silence."""
    samples, rate = await espeak(PHRASE)
    silence = np.zeros(int(LEAD_SILENCE_S * rate), dtype=np.int16)
    trail = np.zeros(int(TRAIL_SILENCE_S * rate), dtype=np.int16)
    path = tmp_path_factory.mktemp("microphone") / "phrase.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.concatenate([silence, samples, trail]).tobytes())
    return path


@pytest.fixture(scope="session")
async def playwright() -> AsyncIterator[Playwright]:
    """Playwright's driver; it never downloads a browser of its own here."""
    async with async_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
async def browser(playwright: Playwright, microphone_wav: Path) -> AsyncIterator[Browser]:
    """Headless chromium whose microphone says PHRASE, with the permission already granted."""
    browser = await playwright.chromium.launch(
        executable_path=chromium_path(), headless=True, args=chromium_args(microphone_wav)
    )
    yield browser
    await browser.close()


@pytest.fixture
def artifacts() -> Path:
    """Where tests leave files for people to look at (git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
