"""Creating rooms for agents: the service between the HTTP API and LiveKit."""

from __future__ import annotations

import secrets
from typing import Protocol

import structlog

from voicebot.config import AgentDefinition, Settings
from voicebot.errors import UnknownAgent
from voicebot.livekit import LiveKitGateway, RoomAccess

ROOM_PREFIX = "voicebot_"

log = structlog.get_logger(__name__)


class AgentLauncher(Protocol):
    """Sends an agent into a room; the session runtime implements it."""

    async def launch(self, agent: AgentDefinition, room_name: str) -> None:
        """Start `agent` in `room_name`; raise to refuse (the room is then deleted)."""


def room_name_for(agent_id: str) -> str:
    """A fresh room name for an agent: voicebot_<agent_id>_<8 random hex characters>."""
    return f"{ROOM_PREFIX}{agent_id}_{secrets.token_hex(4)}"


class RoomService:
    """Creates LiveKit rooms for agents and the tokens clients join them with."""

    def __init__(
        self, settings: Settings, livekit: LiveKitGateway, launcher: AgentLauncher | None = None
    ) -> None:
        self._settings = settings
        self._livekit = livekit
        self._launcher = launcher

    def agent(self, agent_id: str) -> AgentDefinition:
        """The agent with this id; raises UnknownAgent."""
        agent = self._settings.agent(agent_id)
        if agent is None:
            raise UnknownAgent(agent_id)
        return agent

    async def create_room(self, agent_id: str) -> RoomAccess:
        """Create a room for `agent_id`, send the agent in, and return a user's way in."""
        agent = self.agent(agent_id)
        lk = self._settings.livekit
        room_name = room_name_for(agent.id)
        await self._livekit.create_room(
            room_name, empty_timeout_s=lk.empty_timeout_s, departure_timeout_s=lk.departure_timeout_s
        )
        if self._launcher is not None:
            try:
                await self._launcher.launch(agent, room_name)
            except BaseException:
                # A room nobody will serve is a leak on the server: take it back down.
                await self._livekit.delete_room(room_name)
                raise
        identity, token = self._livekit.user_token(room_name, ttl_s=lk.token_ttl_s)
        log.info("room_created", room=room_name, agent=agent.id, identity=identity)
        return RoomAccess(room_name, token, self._livekit.public_url, identity)
