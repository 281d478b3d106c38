"""POST /api/livekit/create-room: a room with its agent, and a token to join it."""

from __future__ import annotations

from aiohttp import web

from voicebot.api.app_keys import ROOMS, TRACING
from voicebot.api.body import read_json_object, require_identifier
from voicebot.api.paths import CREATE_ROOM_PATH
from voicebot.monitoring.tracing import AGENT_ID, ROOM


async def create_room(request: web.Request) -> web.Response:
    """Create a LiveKit room for an agent and answer with a user's join token."""
    # The root of the room's trace: the agent's session span is its child.
    with request.app[TRACING].server_span(request.method, CREATE_ROOM_PATH) as span:
        body = await read_json_object(request)
        agent_id = require_identifier(body, "agent_id")
        access = await request.app[ROOMS].create_room(agent_id)
        if span is not None:
            span.set_attributes({AGENT_ID: agent_id, ROOM: access.room_name})
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
