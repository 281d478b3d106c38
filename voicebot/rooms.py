"""Rooms with agents in them: the service between the HTTP API, LiveKit and the session runtime."""

from __future__ import annotations

import asyncio
import secrets

import structlog

from voicebot.config import AgentDefinition, Settings
from voicebot.errors import RoomNotFound, UnknownAgent
from voicebot.livekit import LiveKitGateway, RoomAccess
from voicebot.sessions.session import SessionInfo
from voicebot.sessions.supervisor import SessionSupervisor

ROOM_PREFIX = "voicebot_"

log = structlog.get_logger(__name__)


def room_name_for(agent_id: str) -> str:
    """A fresh room name for an agent: voicebot_<agent_id>_<8 random hex characters>."""
    return f"{ROOM_PREFIX}{agent_id}_{secrets.token_hex(4)}"


class RoomService:
    """Creates LiveKit rooms for agents, sends agents into rooms, and mints the tokens users join with."""

    def __init__(self, settings: Settings, livekit: LiveKitGateway, supervisor: SessionSupervisor) -> None:
        self._settings = settings
        self._livekit = livekit
        self._supervisor = supervisor

    def agent(self, agent_id: str) -> AgentDefinition:
        """The agent with this id; raises UnknownAgent."""
        agent = self._settings.agent(agent_id)
        if agent is None:
            raise UnknownAgent(agent_id)
        return agent

    async def create_room(self, agent_id: str) -> RoomAccess:
        """Create a room, start its agent, and return a user's way in; over the limit no room is made."""
        agent = self.agent(agent_id)
        lk = self._settings.livekit
        room_name = room_name_for(agent.id)
        slot, _ = self._supervisor.claim(room_name)
        try:
            await self._livekit.create_room(
                room_name, empty_timeout_s=lk.empty_timeout_s, departure_timeout_s=lk.departure_timeout_s
            )
        except BaseException as exc:
            self._supervisor.release(slot, exc)
            raise
        try:
            await self._supervisor.start(agent, slot, owns_room=True)
        except BaseException:
            # A room nobody will serve is a leak on the server: take it back down.
            await self._livekit.delete_room(room_name)
            raise
        identity, token = self._livekit.user_token(room_name, ttl_s=lk.token_ttl_s)
        log.info("room_created", room=room_name, agent=agent.id, identity=identity)
        return RoomAccess(room_name, token, self._livekit.public_url, identity)

    async def send_agent(self, agent_id: str, room_name: str) -> tuple[SessionInfo, bool]:
        """Send an agent into an existing room; returns its session and whether it was started now."""
        agent = self.agent(agent_id)
        slot, new = self._supervisor.claim(room_name)
        if not new:
            session = await asyncio.shield(slot.session)
            return session.info, False
        try:
            if not await self._livekit.room_exists(room_name):
                raise RoomNotFound(room_name)
        except BaseException as exc:
            self._supervisor.release(slot, exc)
            raise
        session = await self._supervisor.start(agent, slot, owns_room=False)
        log.info("agent_sent", room=room_name, agent=agent.id, session=session.info.session_id)
        return session.info, True
