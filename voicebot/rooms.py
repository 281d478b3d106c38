"""Rooms with agents in them: the service between the HTTP API, LiveKit and the session runtime."""

from __future__ import annotations

import math
import re
import secrets
import time
from contextlib import suppress
from dataclasses import dataclass

import structlog
from livekit import api

from voicebot.config import AgentDefinition, OutboundTrunk, Settings
from voicebot.errors import (
    CallRateLimited,
    DestinationNotAllowed,
    LiveKitUnavailable,
    RoomNotFound,
    StateUnavailable,
    TooManyCalls,
    UnknownAgent,
    UnknownTrunk,
)
from voicebot.livekit import LiveKitGateway, RoomAccess
from voicebot.sessions.cluster import Cluster
from voicebot.sessions.session import OUTBOUND_CALL_POOL
from voicebot.store.base import RoomRecord, SessionRecord, StateStore

ROOM_PREFIX = "voicebot_"
# Callers dialled out to get the same identity shape as livekit-sip gives callers who phone in.
PHONE_IDENTITY_PREFIX = "sip_"
# What a trunk's allowed_prefixes are checked against: "+" and 1 to 15 digits, nothing else. A SIP user
# part ("alice", "100") could reach anything the far PBX routes it to, so it is never dialled.
E164_NUMBER = re.compile(r"\+[0-9]{1,15}")
HOUR_S = 3600
# create-room answers once the agent's voice is published, so the client's join finds the track and
# subscribes in its first negotiation. A track that appears just after a client joined waits out
# livekit-server's debounce of a second negotiation (150 ms, `negotiationFrequency` in pkg/rtc/transport.go).
# Publishing takes 50-150 ms here; past this bound the answer goes out anyway and the client still gets it.
VOICE_PUBLISHED_WITHIN_S = 2.0

log = structlog.get_logger(__name__)


def check_destination(to: str, trunk: OutboundTrunk) -> None:
    """Raise DestinationNotAllowed unless `to` is E.164 and starts with one of the trunk's prefixes."""
    if not E164_NUMBER.fullmatch(to) or not any(to.startswith(p) for p in trunk.allowed_prefixes):
        raise DestinationNotAllowed(to, trunk.name, trunk.allowed_prefixes)


def room_name_for(agent_id: str) -> str:
    """A fresh room name for an agent: voicebot_<agent_id>_<8 random hex characters>."""
    return f"{ROOM_PREFIX}{agent_id}_{secrets.token_hex(4)}"


@dataclass(frozen=True)
class PlacedCall:
    """An answered outbound call: its room, call id, the callee's identity and the agent's session."""

    room_name: str
    call_id: str
    participant_identity: str
    session_id: str


class RoomService:
    """Creates LiveKit rooms for agents, sends agents into rooms, and mints the tokens users join with.

    Where an agent runs is the cluster's choice: this process, or another one with free capacity.
    """

    def __init__(
        self, settings: Settings, livekit: LiveKitGateway, cluster: Cluster, store: StateStore
    ) -> None:
        self._settings = settings
        self._livekit = livekit
        self._cluster = cluster
        self._store = store

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
        # Placed before the room exists, so a refusal (503) leaves nothing on the server.
        placement = await self._cluster.place(room_name)
        try:
            await self._new_room(agent, room_name)
            await self._cluster.run_agent(
                agent,
                room_name,
                placement,
                owns_room=True,
                phone_call=False,
                voice_within_s=VOICE_PUBLISHED_WITHIN_S,
            )
        except BaseException:
            # A room nobody will serve is a leak on the server: take it back down.
            await self._cluster.release(room_name, placement.process_id)
            await self._discard_room(room_name)
            raise
        identity, token = self._livekit.user_token(room_name, ttl_s=lk.token_ttl_s)
        log.info(
            "room_created", room=room_name, agent=agent.id, identity=identity, process=placement.process_id
        )
        return RoomAccess(room_name, token, self._livekit.public_url, identity)

    async def send_agent(
        self, agent_id: str, room_name: str, *, phone_call: bool = False
    ) -> tuple[SessionRecord, bool]:
        """Send an agent into an existing room; returns its session and whether it was started now.

        On a `phone_call` the agent greets once the call is answered, not when it joins.
        """
        agent = self.agent(agent_id)
        placement = await self._cluster.place(room_name)
        if not placement.new:
            return await self._cluster.session_of(room_name, agent.id, placement.process_id), False
        try:
            if not await self._livekit.room_exists(room_name):
                raise RoomNotFound(room_name)
            session = await self._cluster.run_agent(
                agent, room_name, placement, owns_room=False, phone_call=phone_call
            )
        except BaseException:
            await self._cluster.release(room_name, placement.process_id)
            raise
        log.info("agent_sent", room=room_name, agent=agent.id, process=placement.process_id)
        return session, True

    async def place_call(
        self, agent_id: str, to: str, trunk_name: str, trunk_id: str | None, *, api_key_id: str
    ) -> PlacedCall:
        """Create a room, start its agent here and dial `to` into it; a failed dial leaves nothing behind.

        Who may be called and how often is checked first, before anything exists on LiveKit.
        """
        agent = self.agent(agent_id)
        sip = self._settings.sip
        trunk = next((t for t in sip.outbound if t.name == trunk_name), None)
        if trunk is None or trunk_id is None:
            raise UnknownTrunk(trunk_name, [t.name for t in sip.outbound])
        check_destination(to, trunk)
        room_name = room_name_for(agent.id)
        await self._hold_outbound_place(room_name, api_key_id)
        try:
            placement = await self._cluster.place(room_name)
        except BaseException:
            await self._free_outbound_place(room_name)
            raise
        try:
            await self._new_room(agent, room_name)
            session = await self._cluster.run_agent(
                agent, room_name, placement, owns_room=True, phone_call=True
            )
            call = await self._livekit.dial(
                trunk_id,
                to,
                room_name,
                identity=f"{PHONE_IDENTITY_PREFIX}{to}",
                ringing_timeout_s=self._settings.sip.ringing_timeout_s,
            )
        except BaseException:
            # Nobody answered: the agent leaves and the room goes; nothing waits for a call that never came.
            await self._cluster.stop_session(room_name, "call_not_answered")
            await self._cluster.release(room_name, placement.process_id)
            await self._discard_room(room_name)
            await self._free_outbound_place(room_name)
            raise
        log.info("call_placed", room=room_name, agent=agent.id, trunk=trunk_name, call=call.sip_call_id)
        return PlacedCall(room_name, call.sip_call_id, call.participant_identity, session.session_id)

    async def _hold_outbound_place(self, room_name: str, api_key_id: str) -> None:
        """Take a place among the calls in progress, then count the call against the key's hour."""
        sip = self._settings.sip
        # Freed when the call's session ends; should that never happen (a process killed), it lapses
        # once the longest a session may last has passed.
        ttl_s = self._settings.sessions.max_duration_s + sip.ringing_timeout_s + 60
        if not await self._store.take_slot(OUTBOUND_CALL_POOL, room_name, sip.max_outbound_concurrent, ttl_s):
            log.warning("call_refused", reason="too_many_calls", limit=sip.max_outbound_concurrent)
            raise TooManyCalls(sip.max_outbound_concurrent)
        try:
            wait_s = await self._store.hit_rate(f"outbound:{api_key_id}", sip.outbound_per_hour, HOUR_S)
        except BaseException:
            await self._free_outbound_place(room_name)
            raise
        if wait_s is not None:
            await self._free_outbound_place(room_name)
            log.warning(
                "call_refused", reason="rate_limited", api_key=api_key_id, limit=sip.outbound_per_hour
            )
            raise CallRateLimited(sip.outbound_per_hour, max(1, math.ceil(wait_s)))

    async def _free_outbound_place(self, room_name: str) -> None:
        with suppress(StateUnavailable):
            await self._store.free_slot(OUTBOUND_CALL_POOL, room_name)

    async def _discard_room(self, room_name: str) -> None:
        # Cleanup after a failure: the room may never have existed, and the first error is the one to report.
        with suppress(api.TwirpError, LiveKitUnavailable):
            await self._livekit.delete_room(room_name)

    async def _new_room(self, agent: AgentDefinition, room_name: str) -> None:
        """Create the LiveKit room and remember it as voicebot's, so whoever runs it may delete it."""
        lk = self._settings.livekit
        await self._livekit.create_room(
            room_name, empty_timeout_s=lk.empty_timeout_s, departure_timeout_s=lk.departure_timeout_s
        )
        await self._store.save_room(RoomRecord(room_name, agent.id, self._cluster.process_id, time.time()))
