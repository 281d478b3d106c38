"""Liveness, readiness and the health report of the process and LiveKit."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import Any

from aiohttp import web

from voicebot import __version__
from voicebot.api.errors import error_response
from voicebot.api.keys import LIVEKIT, LOOP_MONITOR, SETTINGS, STARTED_AT, SUPERVISOR


async def livekit_health(request: web.Request) -> web.Response:
    """200 with the status of this process and LiveKit; 503 when LiveKit is unreachable."""
    gateway = request.app[LIVEKIT]
    probe = await gateway.probe()
    livekit: dict[str, Any] = {
        "url": gateway.url,
        "embedded": request.app[SETTINGS].livekit.embedded,
        "reachable": probe.reachable,
        "rtt_ms": probe.rtt_ms,
    }
    if probe.error:
        livekit["error"] = probe.error
    supervisor = request.app[SUPERVISOR]
    report = {
        "status": "ok" if probe.reachable else "unavailable",
        "process": {
            "pid": os.getpid(),
            "version": __version__,
            "uptime_s": round(time.monotonic() - request.app[STARTED_AT], 3),
            "event_loop": asdict(request.app[LOOP_MONITOR].snapshot()),
        },
        "sessions": {"live": len(supervisor.live()), "limit": supervisor.limit, **supervisor.counters},
        "livekit": livekit,
        "redis": {"configured": bool(request.app[SETTINGS].redis.url)},
    }
    return web.json_response(report, status=200 if probe.reachable else 503)


async def healthz(_request: web.Request) -> web.Response:
    """Answers while the process lives."""
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    """Answers 200 only while rooms can be served (LiveKit reachable)."""
    probe = await request.app[LIVEKIT].probe()
    if not probe.reachable:
        return error_response(503, "not_ready", f"the LiveKit server is unreachable: {probe.error}")
    return web.json_response({"status": "ready"})


def add_routes(app: web.Application) -> None:
    """Register the health endpoints."""
    app.router.add_get("/api/livekit/health", livekit_health)
    app.router.add_post("/api/livekit/health", livekit_health)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
