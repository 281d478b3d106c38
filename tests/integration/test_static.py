"""The landing page is served at / from static/."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

pytestmark = pytest.mark.integration


async def test_root_serves_the_landing_page(client: TestClient[Any, Any]) -> None:
    response = await client.get("/")

    assert response.status == 200
    assert response.content_type == "text/html"
    assert "/api/livekit/create-room" in await response.text()
