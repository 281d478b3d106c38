"""Typed keys for what the application object holds."""

from __future__ import annotations

from aiohttp import web

from voicebot.config import Settings
from voicebot.livekit import LiveKitGateway
from voicebot.loop_monitor import LoopMonitor
from voicebot.rooms import RoomService
from voicebot.sessions.supervisor import SessionSupervisor

SETTINGS = web.AppKey("settings", Settings)
LIVEKIT = web.AppKey("livekit", LiveKitGateway)
ROOMS = web.AppKey("rooms", RoomService)
STARTED_AT = web.AppKey("started_at", float)
SUPERVISOR = web.AppKey("supervisor", SessionSupervisor)
LOOP_MONITOR = web.AppKey("loop_monitor", LoopMonitor)
