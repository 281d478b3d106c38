"""The test page in headless chromium against the real livekit-server and the offline pipeline."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, ConsoleMessage, Page, Playwright, ViewportSize, expect
from pytest_aiohttp import AiohttpServer

from tests.conftest import changed, eventually, make_settings
from tests.e2e.browser import chromium_args, wait_for_latencies
from tests.e2e.conftest import chromium_path
from tests.servers import API_KEY, API_SECRET, free_livekit_ports
from voicebot.api.app_keys import LIVEKIT, SUPERVISOR
from voicebot.app import create_app
from voicebot.config import Settings
from voicebot.embedded.livekit_server import EmbeddedLiveKitServer, find_binary
from voicebot.livekit import LiveKitGateway
from voicebot.sessions.supervisor import SessionSupervisor

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# Milliseconds: a turn runs through STT, the rules and espeak on two cores.
TURN_MS = 45_000


CHROMIUM_NETWORK_NOTES = ("Failed to load resource:", "WebSocket connection to")


@dataclass
class Traffic:
    """Every address the page asked for, and what it printed as errors."""

    urls: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def hosts(self) -> set[str]:
        return {urlsplit(url).netloc for url in self.urls if urlsplit(url).scheme not in ("data", "blob")}


def watch(page: Page) -> Traffic:
    traffic = Traffic()
    page.on("request", lambda request: traffic.urls.append(request.url))
    page.on("websocket", lambda socket: traffic.urls.append(socket.url))

    def on_console(message: ConsoleMessage) -> None:
        # Chromium itself notes every failed request or socket; the page's own errors are what count.
        if message.type == "error" and not message.text.startswith(CHROMIUM_NETWORK_NOTES):
            traffic.console_errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: traffic.console_errors.append(str(error)))
    return traffic


@pytest.fixture
async def server(aiohttp_server: AiohttpServer, settings: Settings) -> TestServer:
    """voicebot on a real loopback port, as a browser reaches it."""
    return await aiohttp_server(create_app(settings))


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()
    page = await context.new_page()
    yield page
    await context.close()


async def open_page(page: Page, server: TestServer) -> None:
    await page.goto(str(server.make_url("/")))
    await expect(page.locator("#agent option")).to_have_count(2)
    # Record every state the indicator shows, however briefly.
    await page.evaluate(
        """() => {
            const state = document.getElementById("agent-state");
            window.seenStates = [];
            new MutationObserver(() => window.seenStates.push(state.dataset.state))
                .observe(state, {attributes: true, attributeFilter: ["data-state"]});
        }"""
    )


async def wait_for_no_sessions(supervisor: SessionSupervisor) -> None:
    await eventually(lambda: not supervisor.live(), 15, "the session to end")


async def test_a_person_talks_to_an_agent_and_reads_the_transcript(
    server: TestServer, page: Page, settings: Settings, artifacts: Path
) -> None:
    traffic = watch(page)
    supervisor = server.app[SUPERVISOR]
    await open_page(page, server)
    assert await page.locator("#agent option").all_text_contents() == ["Reception", "FAQ"]

    await page.select_option("#agent", "agent-123")
    await page.click("#connect")

    await expect(page.locator("#status")).to_contain_text("Connected to", timeout=15_000)
    (session,) = supervisor.live()
    assert session.agent_id == "agent-123"
    you = page.locator('#transcript li[data-speaker="you"] .text')
    agent = page.locator('#transcript li[data-speaker="agent"] .text')
    await expect(agent.filter(has_text="through to reception")).to_have_count(1, timeout=TURN_MS)
    await expect(you.filter(has_text="opening hours").first).to_be_visible(timeout=TURN_MS)
    await expect(agent.filter(has_text="nine in the morning").first).to_be_visible(timeout=TURN_MS)
    latencies = await wait_for_latencies(page, TURN_MS)
    await page.screenshot(path=artifacts / "browser-page-mid-conversation.png", full_page=True)
    (artifacts / "browser-page-latencies.json").write_text(json.dumps(asdict(latencies), indent=2) + "\n")

    agent_peak_rms = float(await page.locator("#agent-level").get_attribute("data-peak") or "0")
    audio: dict[str, Any] = await page.evaluate(
        """() => {
            const audio = document.querySelector("audio");
            return {paused: audio.paused, time: audio.currentTime, muted: audio.muted};
        }"""
    )
    states: list[str] = await page.evaluate("window.seenStates")
    times = await page.locator("#transcript li time").all_text_contents()
    greeting_line = page.locator('#transcript li[data-speaker="agent"]').first
    greeting_line_ms = await greeting_line.get_attribute("data-ms")
    print(
        f"\nbrowser: greeting {latencies.greeting_ms} ms, turn {latencies.turn_ms} ms"
        f" ({latencies.turn_by_reading_ms} ms by the readings), audio path {latencies.audio_path},"
        f" agent peak RMS {agent_peak_rms:.3f}, states {states}"
    )

    assert latencies.greeting_ms > 0
    assert latencies.turn_ms > 0
    assert latencies.reply_at > latencies.voice_ended_at
    assert greeting_line_ms == str(latencies.greeting_ms), "the greeting's line shows its latency"
    assert agent_peak_rms > 0.02, "the agent's audio reached the page silent"
    assert not audio["paused"]
    assert not audio["muted"]
    assert audio["time"] > 1
    assert {"listening", "thinking", "speaking"} <= set(states)
    assert all(t.count(":") == 2 for t in times), times

    await page.click("#disconnect")

    await expect(page.locator("#status")).to_contain_text("Disconnected")
    await wait_for_no_sessions(supervisor)
    ended = await supervisor.state.session(session.room_name)
    assert ended is not None
    assert ended.end_reason == "participants_left"
    assert await page.locator("#agent-state").get_attribute("data-state") == "disconnected"
    livekit_host = urlsplit(server.app[LIVEKIT].public_url).netloc
    assert traffic.hosts() == {f"{server.host}:{server.port}", livekit_host}
    assert traffic.console_errors == []


async def test_at_capacity_connect_says_so_and_leaves_no_room(
    aiohttp_server: AiohttpServer, settings: Settings, page: Page, livekit: LiveKitGateway
) -> None:
    server = await aiohttp_server(create_app(changed(settings, "sessions", max_concurrent=1)))
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.make_url("/api/livekit/create-room"), json={"agent_id": "faq"}) as taken,
    ):
        occupied = (await taken.json())["room_name"]
    rooms_before = await livekit.room_names()
    traffic = watch(page)
    await open_page(page, server)

    await page.click("#connect")

    await expect(page.locator("#status")).to_contain_text("All agents are busy right now")
    assert await page.locator("#status").get_attribute("data-kind") == "error"
    assert await livekit.room_names() - rooms_before == set(), "no new room"
    assert [s.room_name for s in server.app[SUPERVISOR].live()] == [occupied]
    await expect(page.locator("#connect")).to_be_enabled()
    assert traffic.console_errors == []


async def test_a_refused_microphone_is_explained_and_starts_no_call(
    playwright: Playwright, server: TestServer, livekit: LiveKitGateway
) -> None:
    # Without the fake permission prompt, headless chromium refuses the microphone.
    browser = await playwright.chromium.launch(
        executable_path=chromium_path(), headless=True, args=chromium_args(None, grant_microphone=False)
    )
    try:
        page = await browser.new_page()
        traffic = watch(page)
        await open_page(page, server)
        rooms_before = await livekit.room_names()

        await page.click("#connect")

        await expect(page.locator("#status")).to_contain_text("Microphone access was refused")
        assert await livekit.room_names() - rooms_before == set(), "no new room"
        assert server.app[SUPERVISOR].live() == []
        assert not any("/api/livekit/create-room" in url for url in traffic.urls)
        assert traffic.console_errors == []
    finally:
        await browser.close()


async def test_on_a_phone_screen_the_page_fits_and_works_by_keyboard_alone(
    server: TestServer, browser: Browser
) -> None:
    phone = ViewportSize(width=360, height=740)
    context = await browser.new_context(viewport=phone, has_touch=True, is_mobile=True)
    page = await context.new_page()
    try:
        await open_page(page, server)
        for name in ("Connect", "Disconnect"):
            await expect(page.get_by_role("button", name=name, exact=True)).to_be_visible()
        await expect(page.get_by_label("Agent", exact=True)).to_be_visible()
        await expect(page.get_by_label("Your microphone")).to_be_attached()
        widest = await page.evaluate("document.documentElement.scrollWidth")
        assert widest <= 360, f"the page is {widest} px wide on a 360 px screen"

        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "agent"
        await page.keyboard.press("ArrowDown")
        await expect(page.locator("#agent")).to_have_value("faq")
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "connect"
        await page.keyboard.press("Enter")
        await expect(page.locator("#status")).to_contain_text("Connected to FAQ", timeout=15_000)
        await page.locator("#disconnect").focus()
        await page.keyboard.press("Enter")
        await expect(page.locator("#status")).to_contain_text("Disconnected")
        await wait_for_no_sessions(server.app[SUPERVISOR])
    finally:
        await context.close()


async def test_losing_livekit_mid_call_is_shown_as_reconnecting_then_as_a_dropped_call(
    aiohttp_server: AiohttpServer, page: Page
) -> None:
    # A LiveKit of this test's own, since it is taken away in the middle of the call.
    livekit = EmbeddedLiveKitServer(find_binary(), free_livekit_ports(), API_KEY, API_SECRET)
    await livekit.start()
    try:
        server = await aiohttp_server(create_app(make_settings(livekit.url)))
        traffic = watch(page)
        await open_page(page, server)
        await page.click("#connect")
        await expect(page.locator("#status")).to_contain_text("Connected to", timeout=15_000)

        # As if the server's machine vanished: no goodbye to anyone.
        assert livekit.pid is not None
        os.kill(livekit.pid, signal.SIGKILL)

        await expect(page.locator("#status")).to_contain_text("Reconnecting", timeout=15_000)
        assert await page.locator("#status").get_attribute("data-kind") == "warning"
        await expect(page.locator("#status")).to_contain_text("cut off", timeout=60_000)
        await expect(page.locator("#connect")).to_be_enabled()
        assert traffic.console_errors == []
    finally:
        await livekit.stop()


async def test_with_api_keys_the_page_asks_once_for_a_key_then_holds_a_call(
    aiohttp_server: AiohttpServer, settings: Settings, page: Page
) -> None:
    key = "browser-test-key-5c2e81"
    server = await aiohttp_server(create_app(changed(settings, "auth", api_keys=(key,))))
    supervisor = server.app[SUPERVISOR]
    traffic = watch(page)
    await page.goto(str(server.make_url("/")))
    status = page.locator("#status")
    await expect(status).to_contain_text("needs an API key")

    await page.get_by_label("API key").fill("not-the-key")
    await page.click("#use-key")
    await expect(status).to_contain_text("not accepted")
    await page.get_by_label("API key").fill(key)
    await page.click("#use-key")

    await expect(page.locator("#agent option")).to_have_count(2)
    await expect(page.locator("#key-form")).to_be_hidden()
    assert await page.evaluate("sessionStorage.getItem('voicebot.apiKey')") == key
    await page.select_option("#agent", "agent-123")
    await page.click("#connect")
    await expect(status).to_contain_text("Connected to", timeout=15_000)
    agent = page.locator('#transcript li[data-speaker="agent"] .text')
    await expect(agent.filter(has_text="through to reception")).to_have_count(1, timeout=TURN_MS)
    assert [s.agent_id for s in supervisor.live()] == ["agent-123"]
    await page.click("#disconnect")
    await expect(status).to_contain_text("Disconnected")
    await wait_for_no_sessions(supervisor)

    # The tab remembers the key: a reload asks for nothing.
    await page.reload()
    await expect(page.locator("#agent option")).to_have_count(2)
    await expect(page.locator("#key-form")).to_be_hidden()
    assert traffic.console_errors == []
