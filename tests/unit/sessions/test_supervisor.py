"""The supervisor's bookkeeping: exact slots, and ended sessions forgotten with their transcripts."""

from __future__ import annotations

import time

import pytest

from voicebot.config import SessionSettings
from voicebot.errors import SessionLimitReached
from voicebot.sessions.session import SessionInfo
from voicebot.sessions.supervisor import SessionSupervisor
from voicebot.store.state import InMemoryStore


def supervisor(limit: int = 2, retention_s: int = 60) -> SessionSupervisor:
    settings = SessionSettings(max_concurrent=limit, transcript_retention_s=retention_s)
    return SessionSupervisor(
        settings,
        livekit=None,  # type: ignore[arg-type]
        pipelines=None,  # type: ignore[arg-type]
        state=InMemoryStore(),
    )


async def test_claims_are_exact_and_a_room_keeps_its_one_slot() -> None:
    sup = supervisor(limit=2)

    first, new_first = sup.claim("room-a")
    again, new_again = sup.claim("room-a")
    sup.claim("room-b")

    assert (new_first, new_again) == (True, False)
    assert again is first
    with pytest.raises(SessionLimitReached):
        sup.claim("room-c")
    sup.release(first)
    assert sup.claim("room-c")[1] is True


async def test_a_released_slot_tells_waiters_why_it_never_started() -> None:
    sup = supervisor()
    slot, _ = sup.claim("room-a")

    sup.release(slot, LookupError("no such room"))

    with pytest.raises(LookupError, match="no such room"):
        await slot.session


def test_ended_sessions_are_forgotten_after_the_retention_period() -> None:
    sup = supervisor(retention_s=60)
    old = SessionInfo("SS_1", "room-old", "a", "agent-a-1", started_at=0, ended_at=time.time() - 120)
    recent = SessionInfo("SS_2", "room-new", "a", "agent-a-2", started_at=0, ended_at=time.time())

    sup._remember_ended(old)
    sup._remember_ended(recent)

    assert sup.ended("room-old") is None
    assert sup.ended("room-new") is recent
