"""LiveKit's webhook events, acted on: a phone caller in a voicebot room gets that room's agent."""

from __future__ import annotations

from typing import Literal

import structlog
from livekit import api

from voicebot.config import Settings
from voicebot.errors import SessionLimitReached, VoicebotError
from voicebot.livekit import LiveKitGateway
from voicebot.logs import mask_phone
from voicebot.rooms import ROOM_PREFIX, RoomService
from voicebot.sip.provisioning import AGENT_ATTRIBUTE
from voicebot.store.base import StateStore

# LiveKit retries a webhook it got no answer to for minutes at most; ids are remembered for an hour.
EVENT_MEMORY_S = 3600

log = structlog.get_logger(__name__)

WebhookOutcome = Literal["duplicate", "ignored", "refused", "failed", "agent_started", "agent_present"]
"""What was done with an event: the webhook response's `outcome`."""


class WebhookRouter:
    """Acts on verified webhook events once each, however often LiveKit delivers them."""

    def __init__(
        self, settings: Settings, rooms: RoomService, livekit: LiveKitGateway, state: StateStore
    ) -> None:
        self._settings = settings
        self._rooms = rooms
        self._livekit = livekit
        self._state = state

    async def handle(self, event: api.WebhookEvent) -> WebhookOutcome:
        """Act on one event; returns what was done, for the response and the log."""
        # Whichever process LiveKit delivers (or redelivers) the event to, only the first acts on it.
        if event.id and not await self._state.first_delivery(event.id, EVENT_MEMORY_S):
            return "duplicate"
        if event.event == "participant_joined" and event.participant.kind == api.ParticipantInfo.Kind.SIP:
            return await self._phone_caller_joined(event.room.name, event.participant)
        return "ignored"

    async def _phone_caller_joined(self, room_name: str, caller: api.ParticipantInfo) -> WebhookOutcome:
        agent_id = caller.attributes.get(AGENT_ATTRIBUTE) or self._agent_of(room_name)
        bound = log.bind(room=room_name, caller=mask_phone(caller.identity), agent=agent_id)
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
