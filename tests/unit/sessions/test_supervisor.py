"""The supervisor's bookkeeping: exact slots, and what waiters learn when a slot is given back."""

from __future__ import annotations

import pytest

from voicebot.config import SessionSettings
from voicebot.errors import SessionLimitReached
from voicebot.sessions.supervisor import SessionSupervisor
from voicebot.store.memory import InMemoryStore


def supervisor(limit: int = 2, retention_s: int = 60) -> SessionSupervisor:
    settings = SessionSettings(max_concurrent=limit, transcript_retention_s=retention_s)
    return SessionSupervisor(
        settings,
        # Claims and releases never reach LiveKit or build a pipeline; None makes any that did fail loudly.
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
