"""The aiohttp application: routes, start-up and clean-up in one place."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import structlog
from aiohttp import web
from redis.asyncio import Redis

from voicebot.agents.pipeline import PipelineFactory, ProviderPipelineFactory
from voicebot.agents.spoken_lines import cache_offline_lines
from voicebot.api import agents, calls, health, metrics, openapi, ops, page, rooms, sessions, webhooks
from voicebot.api.app_keys import (
    CLUSTER,
    EMBEDDED,
    HISTORY,
    LIVEKIT,
    LOOP_MONITOR,
    METRICS,
    REDIS,
    ROOMS,
    SETTINGS,
    SIP,
    SIP_HEALTH_URL,
    STARTED_AT,
    STATE,
    SUPERVISOR,
    TRACING,
    WEBHOOKS,
)
from voicebot.api.auth import auth_middleware
from voicebot.api.errors import error_middleware, request_log_middleware
from voicebot.api.guards import content_type_guard, host_guard, origin_guard
from voicebot.api.paths import WEBHOOK_PATH
from voicebot.config import Settings
from voicebot.embedded.runner import LOOPBACK
from voicebot.embedded.services import EmbeddedServices
from voicebot.livekit import LiveKitGateway
from voicebot.loop_monitor import LoopMonitor
from voicebot.monitoring.history import SessionHistory
from voicebot.monitoring.metrics import Metrics, http_metrics_middleware
from voicebot.monitoring.summary import SessionSummaries
from voicebot.monitoring.tracing import Tracing
from voicebot.rooms import RoomService
from voicebot.sessions.admission import Admission
from voicebot.sessions.cluster import Cluster, new_process_id
from voicebot.sessions.lsb_release import lsb_release_answered_once
from voicebot.sessions.speaking_rate import estimate_in_one_call
from voicebot.sessions.supervisor import SessionSupervisor
from voicebot.sip.events import WebhookRouter
from voicebot.sip.provisioning import SipProvisioner
from voicebot.store.base import StateStore
from voicebot.store.memory import InMemoryStore
from voicebot.store.redis import RedisStore

log = structlog.get_logger(__name__)


def create_app(settings: Settings, *, pipelines: PipelineFactory | None = None) -> web.Application:
    """Build the application; LiveKit (embedded or external) is reached when it starts.

    `pipelines` chooses each session's models; by default the providers named in config.toml.
    """
    # The body limit sits in front of every handler; errors.py turns a breach into a JSON 413.
    # The guards run in this order: Host, Origin, API key, then the body's media type.
    app_metrics = Metrics([agent.id for agent in settings.agents])
    # Outside the error middleware: it counts the status the client got, errors included.
    counting = [http_metrics_middleware(app_metrics)] if settings.metrics.enabled else []
    app = web.Application(
        client_max_size=settings.server.max_body_bytes,
        middlewares=[
            request_log_middleware,
            *counting,
            error_middleware,
            host_guard(settings.server),
            origin_guard(settings.server),
            auth_middleware(settings),
            content_type_guard,
        ],
    )
    app[SETTINGS] = settings
    app[STARTED_AT] = time.monotonic()
    app[METRICS] = app_metrics

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
    ops.add_routes(app)
    page.add_routes(app)
    openapi.add_routes(app)
    if settings.metrics.enabled:
        metrics.add_routes(app)
    return app


async def _start_services(
    app: web.Application, settings: Settings, pipelines: PipelineFactory | None, stack: AsyncExitStack
) -> None:
    """Start what the app runs on, each stopped again in reverse order when `stack` closes.

    With the embedded LiveKit: the programs of embedded/services.py (with SIP on: redis-server,
    livekit-server on it sending webhooks here, livekit-sip). Then the API client, the session
    runtime, and the SIP trunks from config.toml.
    """
    lk, sip = settings.livekit, settings.sip
    offline_voices: ProviderPipelineFactory | None = None
    if pipelines is None:
        provider_pipelines = ProviderPipelineFactory(settings.providers, settings.models)
        # Ours to close, after the sessions (whose shutdown is pushed later, so it runs first).
        stack.push_async_callback(provider_pipelines.aclose)
        # First of all: a missing model stops the start before any child program runs, and loading (seconds
        # of CPU on both cores) is over before livekit-sip measures its load (it answers 429 under load).
        await provider_pipelines.prepare(settings.agents)
        pipelines = offline_voices = provider_pipelines
    embedded: EmbeddedServices | None = None
    if lk.embedded:
        webhook = f"http://{LOOPBACK}:{settings.server.port}{WEBHOOK_PATH}"
        embedded = EmbeddedServices(settings, webhook_url=webhook)
        await embedded.start()
        stack.push_async_callback(embedded.stop)
    url = embedded.livekit.url if embedded is not None else lk.url
    gateway = LiveKitGateway(
        url, lk.api_key, lk.api_secret, public_url=lk.public_url, request_timeout_s=lk.request_timeout_s
    )
    stack.push_async_callback(gateway.close)
    if embedded is not None:
        stack.push_async_callback(gateway.close_every_room)
    sip_server = embedded.sip if embedded is not None else None
    embedded_redis = embedded.redis_address if embedded is not None else None
    if embedded_redis is not None:
        # Only the Redis that LiveKit and livekit-sip share; a state store in Redis is checked through itself.
        redis_client = Redis.from_url(embedded_redis.url, socket_timeout=lk.request_timeout_s)
        stack.push_async_callback(redis_client.aclose)
        app[REDIS] = redis_client
    # [redis] url shares state with other processes; otherwise it lives in this one.
    max_lines = settings.sessions.max_transcript_lines
    store: StateStore = (
        RedisStore(settings.redis.url, max_transcript_lines=max_lines)
        if settings.redis.url
        else InMemoryStore(max_transcript_lines=max_lines)
    )
    stack.push_async_callback(store.aclose)
    process_id = new_process_id()
    # Closed after the sessions have ended, so their last spans are exported.
    tracing = Tracing(settings.telemetry, process_id=process_id)
    tracing.start()
    stack.push_async_callback(tracing.aclose)
    # Before any session joins, and undone only after the last has left (the stack unwinds in reverse).
    await stack.enter_async_context(lsb_release_answered_once())
    # livekit-agents' speaking-rate numbers for the captions' pacing, one numpy call a window: its Python
    # loops took a fifth of the loop's time at six sessions.
    estimate_in_one_call()
    supervisor = SessionSupervisor(
        settings.sessions,
        livekit=gateway,
        pipelines=pipelines,
        state=store,
        process_id=process_id,
        tracing=tracing,
    )
    if offline_voices is not None:
        await cache_offline_lines(supervisor.lines, settings.agents, offline_voices.offline_voice)
    if tracing.enabled:
        supervisor.observers.add(tracing)
    # Before the cluster starts, so the operator page also hears of sessions it adopts at start.
    history = SessionHistory()
    supervisor.observers.add(history)
    app_metrics = app[METRICS]
    if settings.metrics.enabled:
        supervisor.observers.add(app_metrics)
    supervisor.observers.add(SessionSummaries())
    # Before the cluster, whose heartbeats advertise no capacity while the loop is overloaded.
    monitor = LoopMonitor(on_lag=app_metrics.loop_lagged if settings.metrics.enabled else None)
    monitor.start()
    stack.push_async_callback(monitor.stop)
    if settings.metrics.enabled:
        app_metrics.watch(supervisor, store, monitor)
    admission = Admission(settings.sessions, monitor.recent)
    cluster = Cluster(
        settings, store, supervisor, gateway, takes_over=isinstance(store, RedisStore), admission=admission
    )
    await cluster.start()
    stack.push_async_callback(cluster.stop)
    # Sessions leave before anything they use stops.
    stack.push_async_callback(supervisor.shutdown)
    provisioner = SipProvisioner(gateway, lk.api_secret)
    if sip.enabled:
        await provisioner.apply(sip)
        if embedded is not None:
            # A restarted livekit-server has forgotten the trunks and dispatch rules.
            embedded.after_restart(embedded.livekit.program.name, lambda: provisioner.apply(sip))
    if embedded is not None:
        app[EMBEDDED] = embedded
    app[LIVEKIT] = gateway
    app[SUPERVISOR] = supervisor
    app[HISTORY] = history
    app[LOOP_MONITOR] = monitor
    app[ROOMS] = RoomService(settings, gateway, cluster, store)
    app[STATE] = store
    app[CLUSTER] = cluster
    app[TRACING] = tracing
    app[SIP] = provisioner
    app[SIP_HEALTH_URL] = sip_server.health_url if sip_server else sip.health_url
    app[WEBHOOKS] = WebhookRouter(settings, app[ROOMS], gateway, store)
    if settings.metrics.enabled and settings.metrics.port:
        runner = await metrics.serve_on_loopback(settings, app_metrics)
        stack.push_async_callback(runner.cleanup)
    log.info(
        "app_started",
        livekit_url=url,
        embedded_livekit=embedded is not None,
        sip=sip_server.address if sip_server else sip.enabled,
        process=cluster.process_id,
        state="redis" if isinstance(store, RedisStore) else "memory",
    )
