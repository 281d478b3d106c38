"""The aiohttp application: routes, start-up and clean-up in one place."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from urllib.parse import urlsplit

import structlog
from aiohttp import web
from redis.asyncio import Redis

from voicebot.agents.pipeline import PipelineFactory, ProviderPipelineFactory
from voicebot.api import agents, calls, health, page, rooms, sessions, webhooks
from voicebot.api.errors import error_middleware, request_log_middleware
from voicebot.api.keys import (
    CLUSTER,
    LIVEKIT,
    LOOP_MONITOR,
    REDIS,
    ROOMS,
    SETTINGS,
    SIP,
    SIP_HEALTH_URL,
    STARTED_AT,
    STATE,
    SUPERVISOR,
    WEBHOOKS,
)
from voicebot.api.webhooks import WEBHOOK_PATH
from voicebot.config import Settings
from voicebot.errors import LiveKitUnavailable
from voicebot.livekit import LiveKitGateway
from voicebot.livekit_server import EmbeddedLiveKitServer
from voicebot.loop_monitor import LoopMonitor
from voicebot.processes import LOOPBACK
from voicebot.rooms import RoomService
from voicebot.sessions.cluster import Cluster, new_process_id
from voicebot.sessions.supervisor import SessionSupervisor
from voicebot.sip_provisioning import SipProvisioner
from voicebot.sip_server import EmbeddedRedis, EmbeddedSipServer
from voicebot.store.base import StateStore
from voicebot.store.memory import InMemoryStore
from voicebot.store.redis import RedisStore
from voicebot.webhooks import WebhookRouter

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
        async with AsyncExitStack() as stack:
            await _start_services(app, settings, pipelines, stack)
            yield

    app.cleanup_ctx.append(livekit_context)
    rooms.add_routes(app)
    calls.add_routes(app)
    webhooks.add_routes(app)
    agents.add_routes(app)
    health.add_routes(app)
    sessions.add_routes(app)
    page.add_routes(app)
    return app


async def _start_services(
    app: web.Application, settings: Settings, pipelines: PipelineFactory | None, stack: AsyncExitStack
) -> None:
    """Start what the app runs on, each stopped again in reverse order when `stack` closes.

    With the embedded LiveKit and SIP on: redis-server, livekit-server (on Redis, sending webhooks
    here), livekit-sip. Then the API client, the session runtime, and the SIP trunks from config.toml.
    """
    lk, sip = settings.livekit, settings.sip
    redis_url = settings.redis.url
    embedded: EmbeddedLiveKitServer | None = None
    sip_server: EmbeddedSipServer | None = None
    if lk.embedded:
        if sip.enabled and not redis_url:
            redis_server = EmbeddedRedis(sip.redis_port)
            await redis_server.start()
            stack.push_async_callback(redis_server.stop)
            redis_url = redis_server.url
        webhook = f"http://{LOOPBACK}:{settings.server.port}{WEBHOOK_PATH}"
        embedded = EmbeddedLiveKitServer.from_settings(
            lk, redis_address=_redis_address(redis_url) if sip.enabled else "", webhook_urls=(webhook,)
        )
        await embedded.start()
        stack.push_async_callback(embedded.stop)
    url = embedded.url if embedded is not None else lk.url
    gateway = LiveKitGateway(
        url, lk.api_key, lk.api_secret, public_url=lk.public_url, request_timeout_s=lk.request_timeout_s
    )
    stack.push_async_callback(gateway.close)
    if embedded is not None:
        stack.push_async_callback(_close_rooms, gateway)
    if embedded is not None and sip.enabled:
        sip_server = EmbeddedSipServer(
            sip,
            livekit_url=url,
            api_key=lk.api_key,
            api_secret=lk.api_secret,
            redis_address=_redis_address(redis_url),
        )
        await sip_server.start()
        stack.push_async_callback(sip_server.stop)
    if redis_url and not settings.redis.url:
        # Only the Redis that LiveKit and livekit-sip share; a state store in Redis is checked through itself.
        redis_client = Redis.from_url(redis_url, socket_timeout=lk.request_timeout_s)
        stack.push_async_callback(redis_client.aclose)
        app[REDIS] = redis_client
    # [redis] url shares state with other processes; otherwise it lives in this one.
    store: StateStore = RedisStore(settings.redis.url) if settings.redis.url else InMemoryStore()
    stack.push_async_callback(store.aclose)
    supervisor = SessionSupervisor(
        settings.sessions,
        livekit=gateway,
        pipelines=pipelines or ProviderPipelineFactory(settings.providers),
        state=store,
        process_id=new_process_id(),
    )
    cluster = Cluster(settings, store, supervisor, gateway, takes_over=isinstance(store, RedisStore))
    await cluster.start()
    stack.push_async_callback(cluster.stop)
    monitor = LoopMonitor()
    monitor.start()
    stack.push_async_callback(monitor.stop)
    # Sessions leave before anything they use stops.
    stack.push_async_callback(supervisor.shutdown)
    provisioner = SipProvisioner(gateway)
    if sip.enabled:
        await provisioner.apply(sip)
    app[LIVEKIT] = gateway
    app[SUPERVISOR] = supervisor
    app[LOOP_MONITOR] = monitor
    app[ROOMS] = RoomService(settings, gateway, cluster, store)
    app[STATE] = store
    app[CLUSTER] = cluster
    app[SIP] = provisioner
    app[SIP_HEALTH_URL] = sip_server.health_url if sip_server else sip.health_url
    app[WEBHOOKS] = WebhookRouter(settings, app[ROOMS], gateway, store)
    log.info(
        "app_started",
        livekit_url=url,
        embedded_livekit=embedded is not None,
        sip=sip_server.address if sip_server else sip.enabled,
        process=cluster.process_id,
        state="redis" if isinstance(store, RedisStore) else "memory",
    )


def _redis_address(url: str) -> str:
    """host:port of a redis:// URL, as LiveKit's configs name it."""
    parts = urlsplit(url)
    return f"{parts.hostname or LOOPBACK}:{parts.port or 6379}"


async def _close_rooms(gateway: LiveKitGateway) -> None:
    """Close every room of an embedded server about to stop, so people see the call end, not a reconnect."""
    try:
        for name in await gateway.room_names():
            await gateway.delete_room(name)
    except LiveKitUnavailable as exc:
        log.warning("rooms_not_closed", reason=str(exc))
