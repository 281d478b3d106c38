"""POST /api/livekit/create-room: a room with its agent, and a token to join it."""

from __future__ import annotations

from aiohttp import web

from voicebot.api.app_keys import ROOMS
from voicebot.api.body import read_json_object, require_identifier
from voicebot.api.paths import CREATE_ROOM_PATH


async def create_room(request: web.Request) -> web.Response:
    """Create a LiveKit room for an agent and answer with a user's join token."""
    body = await read_json_object(request)
    agent_id = require_identifier(body, "agent_id")
    access = await request.app[ROOMS].create_room(agent_id)
    return web.json_response(
        {
            "room_name": access.room_name,
            "access_token": access.access_token,
            "livekit_url": access.livekit_url,
        }
    )


def add_routes(app: web.Application) -> None:
    """Register the room endpoints."""
    app.router.add_post(CREATE_ROOM_PATH, create_room)
