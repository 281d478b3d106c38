"""A page of another site, open in the same browser, cannot make voicebot create rooms or place calls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page
from pytest_aiohttp import AiohttpServer

from voicebot.api.app_keys import SUPERVISOR
from voicebot.app import create_app
from voicebot.config import Settings
from voicebot.livekit import LiveKitGateway

pytestmark = [pytest.mark.integration, pytest.mark.browser]

# A CORS "simple" request: the browser sends it without asking the server first, and only hides the answer.
NO_CORS_POST = """async ([url, body]) => {
    await fetch(url, {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body});
}"""


async def other_site_page(_request: web.Request) -> web.Response:
    return web.Response(
        text="<!doctype html><title>another site</title><p>hello</p>", content_type="text/html"
    )


@pytest.fixture
async def other_site(aiohttp_server: AiohttpServer) -> TestServer:
    """A site of someone else's, on another port of the same machine: another origin."""
    app = web.Application()
    app.router.add_get("/", other_site_page)
    return await aiohttp_server(app)


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()
    yield await context.new_page()
    await context.close()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/livekit/create-room", {"agent_id": "agent-123"}),
        ("/api/calls", {"agent_id": "agent-123", "to": "+15550100"}),
        ("/api/livekit/job-notification", {"agent_id": "agent-123", "room_name": "someone-elses-room"}),
    ],
    ids=["create-room", "calls", "job-notification"],
)
async def test_a_no_cors_post_from_another_site_is_refused_and_starts_nothing(
    aiohttp_server: AiohttpServer,
    settings: Settings,
    other_site: TestServer,
    page: Page,
    livekit: LiveKitGateway,
    path: str,
    body: dict[str, str],
) -> None:
    voicebot = await aiohttp_server(create_app(settings))
    target = str(voicebot.make_url(path))
    await page.goto(str(other_site.make_url("/")))
    rooms_before = await livekit.room_names()

    async with page.expect_response(target) as answered:
        await page.evaluate(NO_CORS_POST, [target, json.dumps(body)])

    response = await answered.value
    # The browser keeps the answer from the page (and its body from Playwright); 403 is the Origin
    # guard's, where the media-type guard behind it would have said 415.
    assert response.status == 403
    # Only new rooms count: an earlier test's room may close meanwhile.
    assert await livekit.room_names() - rooms_before == set()
    assert voicebot.app[SUPERVISOR].live() == []
