"""Liveness, readiness and the health report of the process and LiveKit."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict
from typing import Any

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError

from voicebot import __version__
from voicebot.api.app_keys import (
    CLUSTER,
    EMBEDDED,
    LIVEKIT,
    LOOP_MONITOR,
    REDIS,
    SETTINGS,
    SIP_HEALTH_URL,
    STARTED_AT,
    STATE,
    SUPERVISOR,
)
from voicebot.api.auth import is_authenticated
from voicebot.api.errors import error_response
from voicebot.api.paths import HEALTH_PATH
from voicebot.errors import StateUnavailable
from voicebot.store.redis import RedisStore


async def livekit_health(request: web.Request) -> web.Response:
    """The status of this process, LiveKit, SIP, Redis and the embedded programs.

    503 when LiveKit is unreachable; "degraded" while an embedded program is down and being restarted
    (503 too if that is livekit-server), or when only SIP or Redis is unreachable.
    """
    gateway = request.app[LIVEKIT]
    probe, sip, redis = await asyncio.gather(
        gateway.probe(), _sip_report(request.app), _redis_report(request.app)
    )
    livekit: dict[str, Any] = {
        "url": gateway.url,
        "embedded": request.app[SETTINGS].livekit.embedded,
        "reachable": probe.reachable,
        "rtt_ms": probe.rtt_ms,
    }
    if probe.error:
        livekit["error"] = probe.error
    supervisor = request.app[SUPERVISOR]
    embedded = request.app.get(EMBEDDED)
    children = embedded.status() if embedded is not None else {}
    restarting = not all(child.running for child in children.values())
    degraded = sip.get("reachable") is False or redis.get("reachable") is False
    if restarting:
        status = "degraded"
    else:
        status = "unavailable" if not probe.reachable else "degraded" if degraded else "ok"
    http_status = 200 if probe.reachable else 503
    if not is_authenticated(request):
        # Without a key, nothing that maps the deployment: no pid, version, URLs, hosts or errors.
        return web.json_response({"status": status}, status=http_status)
    report = {
        "status": status,
        "process": {
            "pid": os.getpid(),
            "version": __version__,
            "uptime_s": round(time.monotonic() - request.app[STARTED_AT], 3),
            "event_loop": asdict(request.app[LOOP_MONITOR].snapshot()),
        },
        "sessions": {"live": len(supervisor.live()), "limit": supervisor.limit, **supervisor.counters},
        "capacity": request.app[CLUSTER].capacity().to_json(),
        "livekit": livekit,
        "sip": sip,
        "redis": redis,
        "cluster": _cluster_report(request.app),
        "embedded": {name: asdict(child) for name, child in children.items()},
    }
    return web.json_response(report, status=http_status)


def _cluster_report(app: web.Application) -> dict[str, Any]:
    store = app[STATE]
    report: dict[str, Any] = {
        "process_id": app[CLUSTER].process_id,
        "state": "redis" if isinstance(store, RedisStore) else "memory",
    }
    if isinstance(store, RedisStore):
        # Transcript lines and session updates waiting for Redis to come back.
        report["pending_writes"] = store.pending_writes
    return report


async def _sip_report(app: web.Application) -> dict[str, Any]:
    sip = app[SETTINGS].sip
    url = app[SIP_HEALTH_URL]
    if not sip.enabled or not url:
        return {"enabled": sip.enabled}
    report: dict[str, Any] = {"enabled": True, "health_url": url}
    started = time.perf_counter()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(url) as response,
        ):
            await response.read()
            report["reachable"] = response.status == 200
            if response.status != 200:
                report["error"] = f"answered HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        report.update(reachable=False, error=str(exc) or type(exc).__name__)
    if report["reachable"]:
        report["rtt_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return report


async def _redis_report(app: web.Application) -> dict[str, Any]:
    store, client = app[STATE], app.get(REDIS)
    # The state store's own connections are the ones that matter; pinging them also flushes what
    # an outage left waiting.
    ping = store.ping if isinstance(store, RedisStore) else client.ping if client is not None else None
    if ping is None:
        return {"configured": False}
    started = time.perf_counter()
    try:
        await ping()
    except (RedisError, OSError, StateUnavailable) as exc:
        return {"configured": True, "reachable": False, "error": str(exc) or type(exc).__name__}
    return {"configured": True, "reachable": True, "rtt_ms": round((time.perf_counter() - started) * 1000, 2)}


async def healthz(_request: web.Request) -> web.Response:
    """Answers while the process lives."""
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    """Answers 200 only while new rooms can be served: LiveKit reachable, and Redis too when configured."""
    probe = await request.app[LIVEKIT].probe()
    redis = await _redis_report(request.app) if probe.reachable else {}
    if (not probe.reachable or redis.get("reachable") is False) and not is_authenticated(request):
        return web.json_response({"status": "not_ready"}, status=503)
    if not probe.reachable:
        return error_response(503, "not_ready", f"the LiveKit server is unreachable: {probe.error}")
    if redis.get("reachable") is False:
        return error_response(503, "not_ready", f"Redis is unreachable: {redis.get('error')}")
    return web.json_response({"status": "ready"})


def add_routes(app: web.Application) -> None:
    """Register the health endpoints."""
    app.router.add_get(HEALTH_PATH, livekit_health)
    app.router.add_post(HEALTH_PATH, livekit_health)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
