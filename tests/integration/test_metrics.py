"""GET /metrics after a real conversation: the counts, latencies and usage it tells, and who may read it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import aiohttp
import psutil
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pytest_aiohttp import AiohttpClient
from structlog.testing import capture_logs

from tests.conftest import changed
from tests.integration.test_conversation import QUESTION
from tests.servers import free_port
from tests.voice_client import VoiceClient, espeak
from voicebot.api.app_keys import METRICS, SUPERVISOR
from voicebot.api.openapi import DOCUMENT
from voicebot.api.paths import METRICS_PATH
from voicebot.app import create_app
from voicebot.config import Settings

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]
KEY = "metrics-test-key-7d2e"
AGENT = "agent-123"


def samples(text: str) -> list[Sample]:
    """Every sample of a scrape, parsed by prometheus_client's own parser (which fails on a bad one)."""
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(scraped: Iterable[Sample], name: str, **labels: str) -> float | None:
    """The value of the one sample with this name and exactly these labels, None if there is none."""
    found = [s.value for s in scraped if s.name == name and s.labels == labels]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


async def scrape(client: Client, headers: dict[str, str] | None = None) -> list[Sample]:
    response = await client.get(METRICS_PATH, headers=headers)
    assert response.status == 200, await response.text()
    assert response.content_type in DOCUMENT["paths"][METRICS_PATH]["get"]["responses"]["200"]["content"]
    return samples(await response.text())


async def test_a_conversation_is_counted_timed_and_its_usage_measured(
    client: Client, settings: Settings
) -> None:
    agent = settings.agent(AGENT)
    assert agent is not None
    reply = agent.rules[0].reply
    before = await scrape(client)
    assert value(before, "voicebot_sessions_started_total", agent=AGENT) == 0
    assert value(before, "voicebot_sessions_live", agent=AGENT) == 0

    with capture_logs() as logs:
        created = await client.post("/api/livekit/create-room", json={"agent_id": AGENT})
        assert created.status == 200, await created.text()
        room = await created.json()
        person = VoiceClient(room["livekit_url"], room["access_token"])
        await person.connect()
        try:
            await person.wait_for_greeting()
            await person.wait_until_listening(20, "the agent to listen")
            during = await scrape(client)
            speech, rate = await espeak(QUESTION)
            await person.say(speech, rate)
            await person.wait_for(lambda: reply in person.finals(agent=True), 30, "the rule's reply")
            await person.wait_until_listening(30, "the reply to finish")
            transcript = await client.get(f"/api/sessions/{room['room_name']}/transcript")
            assert transcript.status == 200
            task = next(t for t in asyncio.all_tasks() if t.get_name() == f"session:{room['room_name']}")
            await person.room.disconnect()
            await asyncio.wait_for(asyncio.shield(task), 20)
        finally:
            await person.close()
    after = await scrape(client)

    assert value(during, "voicebot_sessions_live", agent=AGENT) == 1
    assert value(during, "voicebot_sessions_limit") == settings.sessions.max_concurrent
    assert value(after, "voicebot_sessions_live", agent=AGENT) == 0
    assert value(after, "voicebot_sessions_started_total", agent=AGENT) == 1
    assert value(after, "voicebot_sessions_ended_total", agent=AGENT, reason="participants_left") == 1
    assert value(after, "voicebot_sessions_failed_total", agent=AGENT) == 0
    assert value(after, "voicebot_session_duration_seconds_count", agent=AGENT) == 1
    assert value(after, "voicebot_agent_join_seconds_count", agent=AGENT) == 1
    assert value(after, "voicebot_first_word_seconds_count", agent=AGENT) == 1
    # The greeting answers nobody: one question, one turn.
    for stage in ("end_of_turn", "transcription", "llm_ttft", "tts_ttfb", "e2e"):
        assert value(after, f"voicebot_turn_{stage}_seconds_count", agent=AGENT) == 1, stage
    stt = [s for s in after if s.name == "voicebot_stt_audio_seconds_total"]
    assert stt, "no STT usage reported"
    assert all(s.value > 0 for s in stt)
    # The session synthesised nothing: its greeting and the rule's reply are fixed lines, synthesised at
    # startup by no session (agents/spoken_lines.py) and played from memory. (The counter's sums are
    # tests/unit/monitoring's.)
    characters = [s.value for s in after if s.name == "voicebot_tts_characters_total"]
    assert sum(characters) == 0, characters
    assert value(after, "voicebot_create_room_seconds_count", outcome="created") == 1
    http = "voicebot_http_requests_total"
    assert value(after, http, method="POST", route="/api/livekit/create-room", status="200") == 1
    transcript_route = "/api/sessions/{room_name}/transcript"
    assert value(after, http, method="GET", route=transcript_route, status="200") == 1
    assert value(after, http, method="GET", route=METRICS_PATH, status="200") == 2
    assert not [s for s in after if room["room_name"] in str(s.labels)], "a room name became a label"
    (process,) = [s for s in after if s.name == "voicebot_process_info"]
    assert process.labels["process"] == client.app[SUPERVISOR].process_id

    ended = await client.app[SUPERVISOR].state.session(room["room_name"])
    assert ended is not None
    (summary,) = [e for e in logs if e["event"] == "session_summary"]
    assert (summary["session"], summary["agent"], summary["room"]) == (
        ended.session_id,
        AGENT,
        room["room_name"],
    )
    assert (summary["turns"], summary["reason"]) == (1, "participants_left")
    assert summary["tts_characters"] == 0
    assert summary["e2e_p50_s"] == summary["e2e_p95_s"]
    assert summary["e2e_p50_s"] > 0
    assert summary["first_word_s"] > 0
    assert summary["provider_errors"] == 0
    assert QUESTION not in str(summary)
    assert reply not in str(summary)


async def test_with_api_keys_metrics_need_the_key(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    client = await aiohttp_client(create_app(changed(settings, "auth", api_keys=(KEY,))))

    refused = await client.get(METRICS_PATH)
    assert refused.status == 401
    assert (await refused.json())["error"]["code"] == "unauthorized"
    assert (await client.get(METRICS_PATH, headers={"Authorization": "Bearer wrong"})).status == 401

    scraped = await scrape(client, {"Authorization": f"Bearer {KEY}"})
    http = "voicebot_http_requests_total"
    assert value(scraped, http, method="GET", route=METRICS_PATH, status="401") == 2


async def test_the_metrics_port_serves_them_on_loopback_without_a_key(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    port = free_port()
    keyed = changed(changed(settings, "auth", api_keys=(KEY,)), "metrics", port=port)
    client = await aiohttp_client(create_app(keyed))
    assert (await client.get("/api/agents")).status == 401

    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        async with session.get(METRICS_PATH) as response:
            assert response.status == 200, await response.text()
            scraped = samples(await response.text())
        # Only the metrics: the API is not reachable past its key this way.
        async with session.get("/api/agents") as other:
            assert other.status == 404
        # A page that rebinds a DNS name to 127.0.0.1 is refused, as on the API port.
        async with session.get(METRICS_PATH, headers={"Host": "attacker.example"}) as rebound:
            assert rebound.status == 421

    # Both ports read one registry: the API port's refused /api/agents is counted.
    http = "voicebot_http_requests_total"
    assert value(scraped, http, method="GET", route="/api/agents", status="401") == 1
    listening = [
        c.laddr
        for c in psutil.Process().net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    ]
    assert listening
    assert {address.ip for address in listening} == {"127.0.0.1"}


async def test_with_metrics_off_nothing_is_served_or_recorded(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(changed(settings, "metrics", enabled=False, port=free_port())))
    response = await client.get(METRICS_PATH)
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"
    document = await (await client.get("/api/openapi.json")).json()
    assert METRICS_PATH not in document["paths"]
    assert set(document["paths"]) == set(DOCUMENT["paths"]) - {METRICS_PATH}
    # No session observer and no request counting: the registry stays empty of both.
    assert (await client.get("/api/agents")).status == 200
    scraped = samples(generate_latest(client.app[METRICS].registry).decode())
    assert not [s for s in scraped if s.name == "voicebot_http_requests_total"]
