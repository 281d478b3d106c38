"""The aiohttp application: routes, start-up and clean-up in one place."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from voicebot.agents.pipeline import PipelineFactory, ProviderPipelineFactory
from voicebot.api import agents, health, page, rooms, sessions
from voicebot.api.errors import error_middleware, request_log_middleware
from voicebot.api.keys import LIVEKIT, LOOP_MONITOR, ROOMS, SETTINGS, STARTED_AT, SUPERVISOR
from voicebot.config import Settings
from voicebot.errors import LiveKitUnavailable
from voicebot.livekit import LiveKitGateway
from voicebot.livekit_server import EmbeddedLiveKitServer
from voicebot.loop_monitor import LoopMonitor
from voicebot.rooms import RoomService
from voicebot.sessions.supervisor import SessionSupervisor
from voicebot.store.transcripts import InMemoryTranscriptStore

log = structlog.get_logger(__name__)


def create_app(settings: Settings, *, pipelines: PipelineFactory | None = None) -> web.Application:
    """Build the application; LiveKit (embedded or external) is reached when it starts.

    `pipelines` chooses each session's models; by default the providers named in config.toml.
    """
    # The body limit sits in front of every handler; errors.py turns a breach into a JSON 413.
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[request_log_middleware, error_middleware],
    )
    app[SETTINGS] = settings
    app[STARTED_AT] = time.monotonic()

    async def livekit_context(app: web.Application) -> AsyncIterator[None]:
        lk = settings.livekit
        embedded = EmbeddedLiveKitServer.from_settings(lk) if lk.embedded else None
        if embedded is not None:
            await embedded.start()
        url = embedded.url if embedded is not None else lk.url
        gateway = LiveKitGateway(
            url, lk.api_key, lk.api_secret, public_url=lk.public_url, request_timeout_s=lk.request_timeout_s
        )
        supervisor = SessionSupervisor(
            settings.sessions,
            livekit=gateway,
            pipelines=pipelines or ProviderPipelineFactory(settings.providers),
            transcripts=InMemoryTranscriptStore(settings.sessions.transcript_retention_s),
        )
        monitor = LoopMonitor()
        monitor.start()
        app[LIVEKIT] = gateway
        app[SUPERVISOR] = supervisor
        app[LOOP_MONITOR] = monitor
        app[ROOMS] = RoomService(settings, gateway, supervisor)
        log.info("app_started", livekit_url=url, embedded_livekit=embedded is not None)
        try:
            yield
        finally:
            await supervisor.shutdown()
            await monitor.stop()
            if embedded is not None:
                await _close_rooms(gateway)
            await gateway.close()
            if embedded is not None:
                await embedded.stop()

    app.cleanup_ctx.append(livekit_context)
    rooms.add_routes(app)
    agents.add_routes(app)
    health.add_routes(app)
    sessions.add_routes(app)
    page.add_routes(app)
    return app


async def _close_rooms(gateway: LiveKitGateway) -> None:
    """Close every room of an embedded server about to stop, so people see the call end, not a reconnect."""
    try:
        for name in await gateway.room_names():
            await gateway.delete_room(name)
    except LiveKitUnavailable as exc:
        log.warning("rooms_not_closed", reason=str(exc))
