"""GET /api/ops/history after a real conversation, as documented, and only with a key when keys are set."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests.conftest import changed, eventually
from tests.integration.test_openapi import assert_documented
from tests.voice_client import VoiceClient, espeak
from voicebot.api.app_keys import SUPERVISOR
from voicebot.api.paths import OPS_HISTORY_PATH
from voicebot.app import create_app
from voicebot.config import Settings

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]
QUESTION = "what are your opening hours"
KEY = "ops-test-key-7a91c3"


async def history(client: Client, headers: dict[str, str] | None = None) -> Any:
    response = await client.get(OPS_HISTORY_PATH, headers=headers or {})
    body = await response.json()
    assert_documented(OPS_HISTORY_PATH, "get", response.status, body)
    return body


async def test_after_a_conversation_the_hour_holds_its_first_word_turn_and_ending(client: Client) -> None:
    before = await history(client)
    created = await client.post("/api/livekit/create-room", json={"agent_id": "agent-123"})
    room = await created.json()
    person = VoiceClient(room["livekit_url"], room["access_token"])
    await person.connect()
    try:
        await person.wait_for_greeting()
        speech, rate = await espeak(QUESTION)
        await person.say(speech, rate)
        await person.wait_for(lambda: len(person.finals(agent=True)) >= 2, 30, "the rule's reply")
        during = await history(client)
    finally:
        await person.close()
    supervisor = client.app[SUPERVISOR]
    await eventually(lambda: not supervisor.live(), 15, "the session to end")
    after = await history(client)

    assert during["live_sessions"] == 1
    assert during["buckets"][-1]["live_sessions"] >= 1
    assert after["live_sessions"] == 0
    assert after["hour"]["first_word"]["count"] == before["hour"]["first_word"]["count"] + 1
    assert after["hour"]["turn"]["count"] >= before["hour"]["turn"]["count"] + 1
    newest = after["buckets"][-1]
    # Both happened within the last two minutes, whichever side of a minute's edge.
    recent = [*after["buckets"][-2:]]
    assert sum(b["first_word"]["count"] for b in recent) >= 1
    assert sum(b["turn"]["count"] for b in recent) >= 1
    latencies = [b[k][p] for b in recent for k in ("first_word", "turn") for p in ("p50", "p95")]
    assert all(v is None or 0 < v < 30 for v in latencies), latencies
    assert newest["start"] <= after["now"] < newest["start"] + after["bucket_s"]
    ended = after["ended"][0]
    assert ended["room_name"] == room["room_name"]
    assert ended["agent_id"] == "agent-123"
    assert ended["end_reason"] == "participants_left"
    assert ended["duration_s"] > 1
    assert ended["error"] is None


async def test_with_keys_the_history_needs_one(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    keyed = await aiohttp_client(create_app(changed(settings, "auth", api_keys=(KEY,))))

    anonymous = await keyed.get(OPS_HISTORY_PATH)
    wrong = await keyed.get(OPS_HISTORY_PATH, headers={"Authorization": "Bearer not-the-key"})
    page = await keyed.get("/ops")

    for refused in (anonymous, wrong):
        assert refused.status == 401
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert_documented(OPS_HISTORY_PATH, "get", refused.status, await refused.json())
    body = await history(keyed, {"Authorization": f"Bearer {KEY}"})
    assert body["live_sessions"] == 0
    assert page.status == 200, "the page itself stays open; only its data needs the key"
    await page.read()
