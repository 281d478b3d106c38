"""The test page holds a conversation on the default offline pipeline: the person says things no rule lists
(Moonshine hears them, the rules answer by meaning) and Piper's voice answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, Playwright, expect
from pytest_aiohttp import AiohttpServer

from tests.e2e.browser import chromium_args, write_microphone_wav
from tests.e2e.conftest import chromium_path
from tests.integration.test_offline_voices import PARAPHRASES
from voicebot.app import create_app
from voicebot.config import Settings
from voicebot.providers.rules_llm import words

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# Milliseconds: the greeting, then each question and its reply, on two cores.
TURN_MS = 45_000


@pytest.fixture(scope="module")
async def paraphrasing_browser(
    playwright: Playwright, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Browser]:
    """Chromium whose microphone asks the paraphrases, one after the other, in espeak-ng's voice."""
    wav = await write_microphone_wav(
        tmp_path_factory.mktemp("paraphrases") / "paraphrases.wav", list(PARAPHRASES)
    )
    browser = await playwright.chromium.launch(
        executable_path=chromium_path(), headless=True, args=chromium_args(wav)
    )
    yield browser
    await browser.close()


@pytest.fixture
async def page(paraphrasing_browser: Browser) -> AsyncIterator[Page]:
    context = await paraphrasing_browser.new_context()
    yield await context.new_page()
    await context.close()


@pytest.fixture
async def server(aiohttp_server: AiohttpServer, settings: Settings) -> TestServer:
    """voicebot on the default offline pipeline (the suite's settings use pocketsphinx and espeak-ng)."""
    offline = replace(settings, models=replace(settings.models, stt="moonshine", tts="piper"))
    return await aiohttp_server(create_app(offline))


async def test_the_page_holds_a_conversation_in_paraphrases_on_the_default_pipeline(
    server: TestServer, page: Page, settings: Settings, artifacts: Path
) -> None:
    agent = settings.agent("agent-123")
    assert agent is not None
    await page.goto(str(server.make_url("/")))
    await page.select_option("#agent", "agent-123")
    await page.click("#connect")

    lines = page.locator('#transcript li[data-speaker="agent"] .text')
    await expect(lines.filter(has_text="through to reception")).to_have_count(1, timeout=TURN_MS)
    for rule in PARAPHRASES.values():
        reply = agent.rules[rule].reply
        await expect(lines.filter(has_text=reply).first).to_be_visible(timeout=TURN_MS)
    agent_lines = page.locator('#transcript li[data-speaker="agent"]')
    await expect(agent_lines.last).to_have_attribute("data-final", "true", timeout=TURN_MS)
    await page.screenshot(path=artifacts / "browser-page-paraphrases.png", full_page=True)
    conversation: list[list[str]] = await page.evaluate(
        """() => [...document.querySelectorAll('#transcript li[data-final="true"]')].map(
            (line) => [line.dataset.speaker, line.querySelector('.text').textContent])"""
    )

    # The microphone's recording loops, so each question is asked again after the last. One asking can be
    # misheard (two clean clones' runs heard "How do my fine do?" on the first asking of "How do I find
    # you?", then the question exactly on the next loop): each must be heard word for word at least once,
    # each asking heard so must get its rule's reply, and the fallback may answer only a misheard one.
    rule_of = {tuple(words(question)): rule for question, rule in PARAPHRASES.items()}
    heard = [tuple(words(text)) for speaker, text in conversation if speaker == "you"]
    unheard = [question for question in PARAPHRASES if tuple(words(question)) not in heard]
    assert not unheard, f"Moonshine should hear what was said: {unheard} never heard, in {conversation}"
    replies = {agent.rules[rule].reply for rule in PARAPHRASES.values()}
    answered = 0
    for (speaker, said), (next_speaker, reply) in pairwise(conversation):
        if speaker != "you" or next_speaker != "agent":
            continue
        answered += 1
        asked = rule_of.get(tuple(words(said)))
        if asked is not None:
            assert reply == agent.rules[asked].reply, f"{said!r} should get its rule's reply, got {reply!r}"
        else:
            assert reply in replies | {agent.fallback}, f"misheard {said!r} got {reply!r}"
    assert answered >= len(PARAPHRASES), f"each question should be answered: {conversation}"
