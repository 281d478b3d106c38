"""GET /api/agents: the agents defined in config.toml."""

from __future__ import annotations

from aiohttp import web

from voicebot.api.app_keys import SETTINGS
from voicebot.api.paths import AGENTS_PATH


async def list_agents(request: web.Request) -> web.Response:
    """Every configured agent's id, name and description."""
    agents = request.app[SETTINGS].agents
    return web.json_response(
        {"agents": [{"id": a.id, "name": a.name, "description": a.description} for a in agents]}
    )


def add_routes(app: web.Application) -> None:
    """Register the agent endpoints."""
    app.router.add_get(AGENTS_PATH, list_agents)
