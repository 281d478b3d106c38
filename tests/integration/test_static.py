"""The pages (/ and /ops) are served with their files, a Content-Security-Policy and caching to suit."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from voicebot.api.app_keys import LIVEKIT
from voicebot.api.page import STATIC_DIR

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]


async def test_root_serves_the_page_with_a_policy_naming_only_this_origin_and_livekit(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/")

    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.headers["Cache-Control"] == "no-cache"
    directives = response.headers["Content-Security-Policy"].split("; ")
    policy = dict(directive.split(" ", 1) for directive in directives)
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    livekit_host = client.app[LIVEKIT].public_url.split("://", 1)[1]
    assert policy["connect-src"] == f"'self' ws://{livekit_host} http://{livekit_host}"
    assert '<select id="agent"' in await response.text()


async def test_the_operator_page_has_the_same_policy_as_the_test_page(client: Client) -> None:
    test_page = await client.get("/")
    ops = await client.get("/ops")

    assert ops.status == 200
    assert ops.content_type == "text/html"
    assert ops.headers["Cache-Control"] == "no-cache"
    assert ops.headers["Content-Security-Policy"] == test_page.headers["Content-Security-Policy"]
    assert 'id="live-sessions"' in await ops.text()
    await test_page.read()


@pytest.mark.parametrize("page", ["/", "/ops"])
async def test_every_script_the_page_names_is_served_from_this_server(client: Client, page: str) -> None:
    html = await (await client.get(page)).text()
    # A module's imports are files of the page too: `import ... from "./api-key.js"`.
    sources = re.findall(r'<(?:script|link)[^>]* (?:src|href)="([^"]+)"', html)
    for script in [s for s in sources if s.endswith(".js") and "/vendor/" not in s]:
        code = await (await client.get(script)).text()
        sources += [f"/static/{name}" for name in re.findall(r'from "\./([^"]+)"', code)]

    assert sources, "the page names no scripts or styles"
    for source in sources:
        assert source.startswith("/static/"), f"{source} is not served by voicebot"
        response = await client.get(source)
        assert response.status == 200, f"{source}: {response.status} (run `make vendor`)"
        expected = "public, max-age=31536000, immutable" if "/vendor/" in source else "no-cache"
        assert response.headers["Cache-Control"] == expected
        await response.read()


async def test_an_unchanged_file_is_answered_with_304(client: TestClient[Any, Any]) -> None:
    first = await client.get("/static/app.js")
    await first.read()

    again = await client.get("/static/app.js", headers={"If-Modified-Since": first.headers["Last-Modified"]})

    assert again.status == 304


@pytest.mark.parametrize(
    "path",
    [
        "/static/../config.toml",
        "/static/%2e%2e/pyproject.toml",
        "/static/x.js",
        "/static/%C3%A3%0D",
        "/static/a%0Ab",
    ],
)
async def test_files_outside_static_or_missing_are_a_json_404(client: Client, path: str) -> None:
    """Regression (found by schemathesis): a path with CR or LF got a 500, aiohttp refusing it as a reason."""
    response = await client.get(path)

    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
    assert (STATIC_DIR / "index.html").is_file()
