"""The pieces of api/auth.py: key matching, fingerprints and the rate limiter's window."""

from __future__ import annotations

from voicebot.api.auth import key_id, matching_key
from voicebot.store.memory import InMemoryStore


def test_a_key_matches_whichever_configured_key_it_equals() -> None:
    keys = ("first-key", "second-key")

    assert matching_key("second-key", keys) == "second-key"
    assert matching_key("second-ke", keys) is None
    assert matching_key("second-key ", keys) is None
    assert matching_key("", keys) is None


def test_a_fingerprint_is_short_stable_and_not_the_key() -> None:
    assert key_id("first-key") == key_id("first-key")
    assert len(key_id("first-key")) == 12
    assert key_id("first-key") != key_id("second-key")


async def test_the_rate_limit_is_a_sliding_minute_per_client() -> None:
    """The anonymous create-room limit is the state store's sliding window (one limit for every process)."""
    now = [1000.0]
    store = InMemoryStore(clock=lambda: now[0])

    async def take(client: str) -> float | None:
        return await store.hit_rate(f"create_room:{client}", 2, 60.0)

    assert await take("a") is None
    now[0] += 10
    assert await take("a") is None
    assert await take("a") == 50
    assert await take("b") is None
    now[0] += 50
    assert await take("a") is None
    assert await take("a") == 10
