"""GET /metrics: Prometheus text format, on the API port and on `[metrics] port` (loopback, no key)."""

from __future__ import annotations

import structlog
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from voicebot.api.app_keys import METRICS, SETTINGS
from voicebot.api.errors import error_middleware
from voicebot.api.guards import host_guard
from voicebot.api.paths import METRICS_PATH
from voicebot.config import Settings
from voicebot.embedded.runner import LOOPBACK
from voicebot.monitoring.metrics import Metrics

log = structlog.get_logger(__name__)


def add_routes(app: web.Application) -> None:
    """Register /metrics for the app's own registry (app[METRICS])."""
    app.router.add_get(METRICS_PATH, make_aiohttp_handler(app[METRICS].registry))


async def serve_on_loopback(settings: Settings, metrics: Metrics) -> web.AppRunner:
    """Serve /metrics alone on 127.0.0.1:`[metrics] port`, without a key; cleanup() stops it.

    Only processes on this machine reach it. The Host check stays: a web page that rebinds a DNS name
    to 127.0.0.1 must not read it either.
    """
    app = web.Application(middlewares=[error_middleware, host_guard(settings.server)])
    app[SETTINGS] = settings
    app[METRICS] = metrics
    add_routes(app)
    # No access log: Prometheus asks every few seconds, and the API port's request log is enough.
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, LOOPBACK, settings.metrics.port).start()
    except BaseException:
        await runner.cleanup()
        raise
    log.info("metrics_port_opened", address=f"{LOOPBACK}:{settings.metrics.port}")
    return runner
