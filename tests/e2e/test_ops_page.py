"""The operator page in headless chromium, watching a real conversation from start to end."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, expect
from pytest_aiohttp import AiohttpServer

from tests.conftest import changed, eventually
from tests.e2e.test_browser_page import watch
from tests.voice_client import VoiceClient, espeak
from voicebot.api.app_keys import SUPERVISOR
from voicebot.app import create_app
from voicebot.config import Settings

pytestmark = [pytest.mark.integration, pytest.mark.browser]

KEY = "ops-page-test-key-3be0"
QUESTION = "what are your opening hours"
# Milliseconds: the page reads again every 2 s; a turn runs through STT, the rules and espeak on two cores.
SEEN_MS = 15_000
TURN_MS = 45_000


@pytest.fixture
async def server(aiohttp_server: AiohttpServer, settings: Settings) -> TestServer:
    """voicebot with an API key on a real loopback port, as a browser reaches it."""
    return await aiohttp_server(create_app(changed(settings, "auth", api_keys=(KEY,))))


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    yield page
    await context.close()


async def create_room(server: TestServer) -> dict[str, str]:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as http,
        http.post(server.make_url("/api/livekit/create-room"), json={"agent_id": "agent-123"}) as response,
    ):
        assert response.status == 200, await response.text()
        room: dict[str, str] = await response.json()
        return room


async def test_the_operator_page_follows_a_conversation_and_plots_its_latencies(
    server: TestServer, page: Page, artifacts: Path
) -> None:
    traffic = watch(page)
    supervisor = server.app[SUPERVISOR]
    await page.goto(str(server.make_url("/ops")))
    await expect(page.locator("#status")).to_contain_text("needs an API key")
    await page.get_by_label("API key").fill(KEY)
    await page.click("#use-key")
    await expect(page.locator("#status")).to_contain_text("Updated", timeout=SEEN_MS)
    await expect(page.locator("#no-live")).to_be_visible()

    room = await create_room(server)
    person = VoiceClient(room["livekit_url"], room["access_token"])
    await person.connect()
    try:
        row = page.locator(f'#live-sessions tr[data-room="{room["room_name"]}"]')
        await expect(row).to_have_count(1, timeout=SEEN_MS)
        await expect(row.locator(".agent")).to_have_text("agent-123")
        await person.wait_for_greeting()
        await expect(row.locator(".state")).to_have_attribute("data-state", "listening", timeout=SEEN_MS)
        await expect(row.locator(".state")).to_have_text("listening")
        await expect(page.locator("#live-count")).to_have_text("(1)")
        first = await row.locator(".duration").text_content()
        await expect(row.locator(".duration")).not_to_have_text(first or "", timeout=3000)

        await row.get_by_role("button", name="Transcript").click()
        lines = page.locator("ol.transcript li")
        agent_lines = page.locator('ol.transcript li[data-speaker="agent"] .text')
        await expect(agent_lines.filter(has_text="through to reception")).to_have_count(1, timeout=SEEN_MS)
        speech, rate = await espeak(QUESTION)
        await person.say(speech, rate)
        await expect(
            page.locator('ol.transcript li[data-speaker="user"] .text').filter(has_text=QUESTION)
        ).to_have_count(1, timeout=TURN_MS)
        await expect(agent_lines.filter(has_text="nine in the morning")).to_have_count(1, timeout=TURN_MS)
        await expect(page.locator("#plot-turn circle.point")).not_to_have_count(0, timeout=SEEN_MS)
        await page.screenshot(path=artifacts / "ops-page-live.png", full_page=True)
    finally:
        await person.close()
    await eventually(lambda: not supervisor.live(), 15, "the session to end")

    ended = page.locator(f'#ended-sessions tr[data-room="{room["room_name"]}"]')
    await expect(ended).to_have_count(1, timeout=SEEN_MS)
    await expect(page.locator(f'#live-sessions tr[data-room="{room["room_name"]}"]')).to_have_count(0)
    await expect(page.locator("#no-live")).to_be_visible()
    await expect(ended.locator(".reason-code")).to_have_text("participants_left")
    await expect(ended.locator(".agent")).to_have_text("agent-123")
    # The transcript shown stays open under the ended session, all of it.
    assert await ended.get_by_role("button", name="Transcript").get_attribute("aria-expanded") == "true"
    speakers = [await line.get_attribute("data-speaker") for line in await lines.all()]
    assert speakers == ["agent", "user", "agent"], speakers
    await expect(page.locator("#plot-live rect.bar")).not_to_have_count(0, timeout=SEEN_MS)

    points = {
        plot: await page.locator(f"#plot-{plot} circle.point").count() for plot in ("first-word", "turn")
    }
    bars = await page.locator("#plot-live rect.bar").count()
    print(f"\nops page: points {points}, live bars {bars}")
    # One minute's p50 and p95 each (two if the conversation crossed a minute's edge).
    assert 2 <= points["first-word"] <= 4, points
    assert points["turn"] >= 2, points
    assert 1 <= bars <= 3, bars
    for plot in ("first-word", "turn"):
        assert await page.locator(f"#plot-{plot} .summary").text_content() != ""
    await page.screenshot(path=artifacts / "ops-page.png", full_page=True)

    # On a phone the page still fits: tables scroll inside their cards, the plots redraw at its width.
    await page.set_viewport_size({"width": 360, "height": 740})
    narrow = re.compile(r"^0 0 (2[89]\d|3[0-5]\d) ")
    await expect(page.locator("#plot-live svg")).to_have_attribute("viewBox", narrow)
    widest = await page.evaluate("document.documentElement.scrollWidth")
    assert widest <= 360, f"the page is {widest} px wide on a 360 px screen"
    await page.screenshot(path=artifacts / "ops-page-phone.png", full_page=True)
    assert traffic.hosts() == {f"{server.host}:{server.port}"}, "the page reaches nothing but this server"
    assert traffic.console_errors == []
