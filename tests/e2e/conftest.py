"""Debian's headless chromium, driven by Playwright, with a fake microphone that speaks a phrase."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Playwright, async_playwright

from tests.e2e.browser import chromium_args, write_microphone_wav

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def chromium_path() -> str:
    """Debian's chromium; `make test` installs it, so its absence fails the run."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: `make test` installs Debian's chromium package")
    return path


@pytest.fixture(scope="session")
async def microphone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WAV of espeak-ng saying the phrase (tests/e2e/browser.py) between stretches of silence."""
    return await write_microphone_wav(tmp_path_factory.mktemp("microphone") / "phrase.wav")


@pytest.fixture(scope="session")
async def playwright() -> AsyncIterator[Playwright]:
    """Playwright's driver; it never downloads a browser of its own here."""
    async with async_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
async def browser(playwright: Playwright, microphone_wav: Path) -> AsyncIterator[Browser]:
    """Headless chromium whose microphone says the phrase, with the permission already granted."""
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
