"""The operator page's data: this process's last hour of sessions (live ones come from GET /api/sessions)."""

from __future__ import annotations

from aiohttp import web

from voicebot.api.app_keys import HISTORY
from voicebot.api.paths import OPS_HISTORY_PATH


async def history(request: web.Request) -> web.Response:
    """Per-minute latencies and live counts over the last hour, and the last ended sessions."""
    return web.json_response(request.app[HISTORY].snapshot())


def add_routes(app: web.Application) -> None:
    """Register the operator page's endpoints."""
    app.router.add_get(OPS_HISTORY_PATH, history)
