"""LiveKit's webhook events, acted on: a phone caller in a voicebot room gets that room's agent."""

from __future__ import annotations

from collections import OrderedDict

import structlog
from livekit import api

from voicebot.config import Settings
from voicebot.errors import SessionLimitReached, VoicebotError
from voicebot.livekit import LiveKitGateway
from voicebot.rooms import ROOM_PREFIX, RoomService
from voicebot.sip_provisioning import AGENT_ATTRIBUTE

# LiveKit retries a webhook it got no answer to; this many recent event ids are remembered.
SEEN_EVENTS = 4096

log = structlog.get_logger(__name__)


class WebhookRouter:
    """Acts on verified webhook events once each, however often LiveKit delivers them."""

    def __init__(self, settings: Settings, rooms: RoomService, livekit: LiveKitGateway) -> None:
        self._settings = settings
        self._rooms = rooms
        self._livekit = livekit
        self._seen: OrderedDict[str, None] = OrderedDict()

    async def handle(self, event: api.WebhookEvent) -> str:
        """Act on one event; returns what was done, for the response and the log."""
        if event.id and event.id in self._seen:
            return "duplicate"
        if event.id:
            self._seen[event.id] = None
            if len(self._seen) > SEEN_EVENTS:
                self._seen.popitem(last=False)
        if event.event == "participant_joined" and event.participant.kind == api.ParticipantInfo.Kind.SIP:
            return await self._phone_caller_joined(event.room.name, event.participant)
        return "ignored"

    async def _phone_caller_joined(self, room_name: str, caller: api.ParticipantInfo) -> str:
        agent_id = caller.attributes.get(AGENT_ATTRIBUTE) or self._agent_of(room_name)
        bound = log.bind(room=room_name, caller=caller.identity, agent=agent_id)
        if agent_id is None:
            bound.info("phone_caller_not_ours")
            return "ignored"
        try:
            info, started = await self._rooms.send_agent(agent_id, room_name, phone_call=True)
        except SessionLimitReached:
            # Better a prompt hang-up than a phone that rings until it times out.
            bound.warning("phone_call_refused", reason="at_capacity")
            await self._livekit.remove_participant(room_name, caller.identity)
            return "refused"
        except VoicebotError as exc:
            bound.warning("phone_call_not_served", reason=str(exc))
            return "failed"
        bound.info("phone_caller_joined", session=info.session_id, started=started)
        return "agent_started" if started else "agent_present"

    def _agent_of(self, room_name: str) -> str | None:
        """The agent a voicebot_<agent_id>_... room belongs to; the longest matching id wins."""
        if not room_name.startswith(ROOM_PREFIX):
            return None
        ids = [a.id for a in self._settings.agents if room_name.startswith(f"{ROOM_PREFIX}{a.id}_")]
        return max(ids, key=len, default=None)
