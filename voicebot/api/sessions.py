"""Agent sessions: send an agent into a room, list live sessions, stop one, read a transcript."""

from __future__ import annotations

from aiohttp import web

from voicebot.api.app_keys import CLUSTER, ROOMS, STATE, SUPERVISOR
from voicebot.api.body import read_json_object, require_identifier
from voicebot.api.errors import ApiError
from voicebot.config import IDENTIFIER_PATTERN
from voicebot.errors import SessionNotFound


async def job_notification(request: web.Request) -> web.Response:
    """Send an agent into an existing room: 202 when started now, 200 when it is already there."""
    body = await read_json_object(request)
    agent_id = require_identifier(body, "agent_id")
    room_name = require_identifier(body, "room_name")
    info, started = await request.app[ROOMS].send_agent(agent_id, room_name)
    payload = {**info.to_json(), "status": "started" if started else "already_running"}
    return web.json_response(payload, status=202 if started else 200)


async def list_sessions(request: web.Request) -> web.Response:
    """Every live session, of whichever process runs it, and the capacity of the process that answers."""
    sessions = await request.app[STATE].live_sessions()
    return web.json_response(
        {
            "sessions": [s.to_json() for s in sessions],
            "limit": request.app[SUPERVISOR].limit,
            "capacity": request.app[CLUSTER].capacity().to_json(),
        }
    )


async def stop_session(request: web.Request) -> web.Response:
    """Stop the agent in a room and answer once it has left."""
    room_name = _room_name(request)
    info = await request.app[CLUSTER].stop_session(room_name)
    if info is None:
        raise SessionNotFound(room_name)
    return web.json_response(info.to_json())


async def transcript(request: web.Request) -> web.Response:
    """A session's transcript, live or recently ended."""
    room_name = _room_name(request)
    state = request.app[STATE]
    lines = await state.lines(room_name)
    if lines is None:
        raise SessionNotFound(room_name)
    session = await state.session(room_name)
    return web.json_response(
        {
            "room_name": room_name,
            "live": session is not None and session.live,
            "session": session.to_json() if session is not None else None,
            "lines": [line.as_json() for line in lines],
        }
    )


def _room_name(request: web.Request) -> str:
    room_name = request.match_info["room_name"]
    if not IDENTIFIER_PATTERN.fullmatch(room_name):
        raise ApiError(400, "invalid_field", "the room name must be 1 to 64 letters, digits, '_' or '-'")
    return room_name


def add_routes(app: web.Application) -> None:
    """Register the session endpoints."""
    app.router.add_post("/api/livekit/job-notification", job_notification)
    app.router.add_get("/api/sessions", list_sessions)
    app.router.add_delete("/api/sessions/{room_name}", stop_session)
    app.router.add_get("/api/sessions/{room_name}/transcript", transcript)
