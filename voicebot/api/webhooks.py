"""POST /api/livekit/webhook: LiveKit's signed webhook events."""

from __future__ import annotations

from aiohttp import web
from livekit import api

from voicebot.api.app_keys import METRICS, SETTINGS, WEBHOOKS
from voicebot.api.errors import ApiError
from voicebot.api.paths import WEBHOOK_PATH


async def livekit_webhook(request: web.Request) -> web.Response:
    """Verify the event's signature against the exact bytes received, then act on it."""
    token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not token:
        raise ApiError(
            401, "unsigned_webhook", "the webhook has no Authorization header; LiveKit signs each one"
        )
    body = await request.read()
    lk = request.app[SETTINGS].livekit
    receiver = api.WebhookReceiver(api.TokenVerifier(lk.api_key, lk.api_secret))
    try:
        event = receiver.receive(body.decode("utf-8"), token)
    # The receiver raises bare Exceptions (bad JWT, wrong key, body hash mismatch): all mean "not LiveKit".
    except Exception:
        raise ApiError(
            401,
            "invalid_signature",
            "the webhook's signature does not match its body or this server's API key",
        ) from None
    outcome = await request.app[WEBHOOKS].handle(event)
    request.app[METRICS].webhook_handled(outcome)
    return web.json_response({"event": event.event, "outcome": outcome})


def add_routes(app: web.Application) -> None:
    """Register the webhook endpoint."""
    app.router.add_post(WEBHOOK_PATH, livekit_webhook)
