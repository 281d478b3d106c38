"""Typed keys for what the aiohttp application object holds (not API keys: those are in config)."""

from __future__ import annotations

from aiohttp import web
from redis.asyncio import Redis

from voicebot.config import Settings
from voicebot.embedded.services import EmbeddedServices
from voicebot.livekit import LiveKitGateway
from voicebot.loop_monitor import LoopMonitor
from voicebot.monitoring.history import SessionHistory
from voicebot.monitoring.metrics import Metrics
from voicebot.monitoring.tracing import Tracing
from voicebot.rooms import RoomService
from voicebot.sessions.cluster import Cluster
from voicebot.sessions.supervisor import SessionSupervisor
from voicebot.sip.events import WebhookRouter
from voicebot.sip.provisioning import SipProvisioner
from voicebot.store.base import StateStore

SETTINGS = web.AppKey("settings", Settings)
LIVEKIT = web.AppKey("livekit", LiveKitGateway)
ROOMS = web.AppKey("rooms", RoomService)
STARTED_AT = web.AppKey("started_at", float)
SUPERVISOR = web.AppKey("supervisor", SessionSupervisor)
# The last hour of this process's sessions, for the operator page.
HISTORY = web.AppKey("history", SessionHistory)
LOOP_MONITOR = web.AppKey("loop_monitor", LoopMonitor)
SIP = web.AppKey("sip", SipProvisioner)
SIP_HEALTH_URL = web.AppKey("sip_health_url", str)
WEBHOOKS = web.AppKey("webhooks", WebhookRouter)
# Present only for the embedded Redis that LiveKit and livekit-sip share, when state is not in Redis.
REDIS = web.AppKey("redis", Redis)
STATE = web.AppKey("state", StateStore)
# Set when the app is built, before it starts: the request middleware records into it from the first request.
METRICS = web.AppKey("metrics", Metrics)
CLUSTER = web.AppKey("cluster", Cluster)
TRACING = web.AppKey("tracing", Tracing)
# Present only when voicebot runs LiveKit (and SIP, Redis) itself.
EMBEDDED = web.AppKey("embedded", EmbeddedServices)
