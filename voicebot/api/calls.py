"""POST /api/calls: an agent phones someone through an outbound SIP trunk."""

from __future__ import annotations

import re

from aiohttp import web

from voicebot.api.app_keys import METRICS, ROOMS, SETTINGS, SIP
from voicebot.api.auth import ANONYMOUS, API_KEY_ID
from voicebot.api.body import optional_identifier, read_json_object, require_identifier, require_string
from voicebot.api.errors import ApiError
from voicebot.errors import DialFailed
from voicebot.monitoring.metrics import dial_outcome

# A phone number (+15550100) or a SIP user part; nothing that could smuggle a URI parameter.
CALLEE_PATTERN = re.compile(r"\+?[0-9A-Za-z*#._-]{1,64}")


async def place_call(request: web.Request) -> web.Response:
    """Create a room, start the agent, dial; 201 once the call is answered."""
    body = await read_json_object(request)
    agent_id = require_identifier(body, "agent_id")
    to = require_string(body, "to", CALLEE_PATTERN, "a phone number such as +15550100")
    named_trunk = optional_identifier(body, "trunk")
    # The body is checked whole first, so a malformed request gets the same 400 whether SIP is on or not.
    sip = request.app[SETTINGS].sip
    if not sip.enabled:
        raise ApiError(409, "sip_disabled", "phone calls are off: set enabled = true in the [sip] section")
    trunk = named_trunk or (sip.outbound[0].name if sip.outbound else "")
    trunk_id = request.app[SIP].outbound_trunk_ids.get(trunk)
    # Set by the auth middleware: a fingerprint of the caller's key, never the key itself.
    api_key_id = request.get(API_KEY_ID, ANONYMOUS)
    metrics = request.app[METRICS]
    try:
        call = await request.app[ROOMS].place_call(agent_id, to, trunk, trunk_id, api_key_id=api_key_id)
    except DialFailed as exc:
        # Only a call that was dialled counts; a refusal before dialling (limits, prefixes) is no call.
        metrics.call_finished("outbound", dial_outcome(exc))
        raise
    metrics.call_finished("outbound", dial_outcome(None))
    return web.json_response(
        {
            "room_name": call.room_name,
            "call_id": call.call_id,
            "participant_identity": call.participant_identity,
            "session_id": call.session_id,
        },
        status=201,
    )


def add_routes(app: web.Application) -> None:
    """Register the call endpoints."""
    app.router.add_post("/api/calls", place_call)
