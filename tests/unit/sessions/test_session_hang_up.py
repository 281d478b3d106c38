"""Hanging up a phone call: every caller is removed, however the room's list changes meanwhile."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from livekit import rtc

from tests.conftest import make_settings
from voicebot.livekit import LiveKitGateway
from voicebot.sessions.session import RoomSession
from voicebot.store.memory import InMemoryStore


@dataclass
class Caller:
    identity: str
    kind: int = rtc.ParticipantKind.PARTICIPANT_KIND_SIP


@dataclass
class RoomWithCallers:
    remote_participants: dict[str, Caller] = field(default_factory=dict)


@dataclass
class Gateway:
    """Removing a participant lets the room's events run: the caller leaves the room's dict at once."""

    room: RoomWithCallers
    removed: list[str] = field(default_factory=list)

    async def remove_participant(self, room_name: str, identity: str) -> None:
        self.removed.append(identity)
        del self.room.remote_participants[identity]


async def test_every_caller_is_removed_while_the_room_drops_them() -> None:
    """Regression: `_hang_up` iterated the room's participants while each removal dropped one from them,
    and "dictionary changed size during iteration" skipped the rest of the session's clean-up (its room
    stayed connected, its job's temporary directory leaked)."""
    room = RoomWithCallers({name: Caller(name) for name in ("sip_a", "sip_b")})
    gateway = Gateway(room)
    agent = make_settings("ws://127.0.0.1:1").agents[0]
    session = RoomSession(
        agent,
        "voicebot_x_1",
        livekit=cast(LiveKitGateway, gateway),
        pipeline=cast(Any, None),
        state=InMemoryStore(),
        owns_room=True,
        phone_call=True,
    )
    await session._hang_up(cast(rtc.Room, room))
    assert gateway.removed == ["sip_a", "sip_b"]
