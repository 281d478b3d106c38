"""A phone caller whom no process can take is hung up on at once, at the count limit or overloaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import pytest
from livekit import api

from voicebot.config import AgentDefinition, Settings
from voicebot.errors import Overloaded, SessionLimitReached
from voicebot.livekit import LiveKitGateway
from voicebot.rooms import RoomService
from voicebot.sip.events import WebhookRouter
from voicebot.store.base import SessionRecord
from voicebot.store.memory import InMemoryStore

FAQ = AgentDefinition(id="faq", name="FAQ")


@dataclass
class RefusingRooms:
    """A room service with no place for the agent."""

    error: SessionLimitReached

    async def send_agent(
        self, agent_id: str, room_name: str, *, phone_call: bool = False
    ) -> tuple[SessionRecord, bool]:
        raise self.error


@dataclass
class RemovingLiveKit:
    removed: list[tuple[str, str]] = field(default_factory=list)

    async def remove_participant(self, room_name: str, identity: str) -> None:
        self.removed.append((room_name, identity))


@pytest.mark.parametrize("error", [SessionLimitReached(4), Overloaded("loop_lag")])
async def test_a_phone_caller_over_capacity_is_removed_rather_than_left_ringing(
    error: SessionLimitReached,
) -> None:
    livekit = RemovingLiveKit()
    router = WebhookRouter(
        Settings(agents=(FAQ,)),
        cast(RoomService, RefusingRooms(error)),
        cast(LiveKitGateway, livekit),
        InMemoryStore(),
    )
    caller = api.ParticipantInfo(identity="sip_+441234567890", kind=api.ParticipantInfo.Kind.SIP)
    event = api.WebhookEvent(
        id="EV_1", event="participant_joined", room=api.Room(name="voicebot_faq_0a1b2c3d"), participant=caller
    )

    outcome = await router.handle(event)

    assert outcome == "refused"
    assert livekit.removed == [("voicebot_faq_0a1b2c3d", "sip_+441234567890")]
