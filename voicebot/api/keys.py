"""Typed keys for what the application object holds."""

from __future__ import annotations

from aiohttp import web

from voicebot.config import Settings
from voicebot.livekit import LiveKitGateway
from voicebot.rooms import RoomService

SETTINGS = web.AppKey("settings", Settings)
LIVEKIT = web.AppKey("livekit", LiveKitGateway)
ROOMS = web.AppKey("rooms", RoomService)
STARTED_AT = web.AppKey("started_at", float)
