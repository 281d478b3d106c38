"""The session runtime through the API: the limit, one agent per room, and failures kept apart."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient
from livekit.agents import APIStatusError, llm
from pytest_aiohttp import AiohttpClient

from tests.conftest import changed, eventually
from tests.voice_client import VoiceClient, espeak
from voicebot.agents.pipeline import Pipeline, ProviderPipelineFactory
from voicebot.api.app_keys import SUPERVISOR
from voicebot.app import create_app
from voicebot.config import AgentDefinition, Settings
from voicebot.livekit import LiveKitGateway
from voicebot.providers.rules_llm import RulesLLM, RulesStream

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]


async def create_room(client: Client, agent_id: str = "agent-123") -> Any:
    return await client.post("/api/livekit/create-room", json={"agent_id": agent_id})


async def test_over_the_limit_create_room_gets_503_and_leaves_no_room(
    aiohttp_client: AiohttpClient, settings: Settings, livekit: LiveKitGateway
) -> None:
    client = await aiohttp_client(create_app(changed(settings, "sessions", max_concurrent=2)))
    first, second = [await (await create_room(client)).json() for _ in range(2)]
    rooms_before = await livekit.room_names()

    refused = await create_room(client)

    assert refused.status == 503
    assert int(refused.headers["Retry-After"]) > 0
    assert (await refused.json())["error"]["code"] == "at_capacity"
    assert await livekit.room_names() - rooms_before == set(), "no new room"
    assert {first["room_name"], second["room_name"]} <= rooms_before


async def test_concurrent_create_rooms_never_exceed_the_limit(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(changed(settings, "sessions", max_concurrent=3)))

    responses = await asyncio.gather(*(create_room(client) for _ in range(8)))

    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * 3 + [503] * 5
    assert len(client.app[SUPERVISOR].live()) == 3


async def test_a_freed_place_can_be_used_again(aiohttp_client: AiohttpClient, settings: Settings) -> None:
    client = await aiohttp_client(create_app(changed(settings, "sessions", max_concurrent=1)))
    room = await (await create_room(client)).json()
    assert (await create_room(client)).status == 503

    assert (await client.delete(f"/api/sessions/{room['room_name']}")).status == 200

    assert (await create_room(client)).status == 200


async def test_job_notification_starts_one_agent_however_often_it_is_sent(
    client: Client, livekit: LiveKitGateway
) -> None:
    await livekit.create_room("support-desk-1", empty_timeout_s=60, departure_timeout_s=5)
    body = {"agent_id": "faq", "room_name": "support-desk-1"}

    first, second, third = await asyncio.gather(
        *(client.post("/api/livekit/job-notification", json=body) for _ in range(3))
    )

    assert sorted([first.status, second.status, third.status]) == [200, 200, 202]
    sessions = {(await r.json())["session_id"] for r in (first, second, third)}
    assert len(sessions) == 1
    again = await client.post("/api/livekit/job-notification", json=body)
    assert again.status == 200
    assert (await again.json())["status"] == "already_running"
    agents: list[str] = []

    async def agent_joined() -> bool:
        identities = await livekit.participant_identities("support-desk-1")
        agents[:] = [i for i in identities if i.startswith("agent-")]
        return bool(agents)

    await eventually(agent_joined, 15, "the agent to join", state=lambda: agents)
    assert len(agents) == 1
    await client.delete("/api/sessions/support-desk-1")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"agent_id": "nobody", "room_name": "support-desk-2"}, 404, "unknown_agent"),
        ({"agent_id": "faq", "room_name": "no-such-room"}, 404, "room_not_found"),
        ({"agent_id": "faq"}, 400, "missing_field"),
        ({"agent_id": "faq", "room_name": "bad room"}, 400, "invalid_field"),
    ],
)
async def test_job_notification_refusals(
    client: Client, livekit: LiveKitGateway, body: dict[str, str], status: int, code: str
) -> None:
    await livekit.create_room("support-desk-2", empty_timeout_s=60, departure_timeout_s=5)

    response = await client.post("/api/livekit/job-notification", json=body)

    assert response.status == status
    assert (await response.json())["error"]["code"] == code
    assert client.app[SUPERVISOR].session(body.get("room_name", "")) is None


class BrokenLLM(RulesLLM):
    """The rules engine, except that every answer fails mid-stream the way a provider error does."""

    def chat(self, **kwargs: Any) -> llm.LLMStream:
        stream = super().chat(**kwargs)
        stream.__class__ = BrokenStream
        return stream


class BrokenStream(RulesStream):
    async def _run(self) -> None:
        raise APIStatusError("the provider answered 400", status_code=400, retryable=False)


class OneBrokenAgent(ProviderPipelineFactory):
    """Real offline pipelines, but agent `faq` gets an LLM that fails."""

    async def build(self, agent: AgentDefinition) -> Pipeline:
        pipeline = await super().build(agent)
        return replace(pipeline, llm=BrokenLLM(agent)) if agent.id == "faq" else pipeline


async def test_a_failing_provider_ends_its_own_session_and_no_other(
    aiohttp_client: AiohttpClient, settings: Settings
) -> None:
    # The first failure ends the session (the default tolerates three in a row).
    strict = changed(settings, "sessions", max_provider_errors=0)
    pipelines = OneBrokenAgent(settings.providers, settings.models)
    client = await aiohttp_client(create_app(strict, pipelines=pipelines))
    broken = await (await create_room(client, "faq")).json()
    healthy = await (await create_room(client, "agent-123")).json()
    people = [VoiceClient(r["livekit_url"], r["access_token"]) for r in (broken, healthy)]
    for person in people:
        await person.connect()
    supervisor = client.app[SUPERVISOR]
    try:
        for person in people:
            await person.wait_for_greeting()
        speech, rate = await espeak("what are you")
        with structlog.testing.capture_logs() as logs:
            await people[0].say(speech, rate)
            await people[0].wait_for(
                lambda: supervisor.session(broken["room_name"]) is None, 30, "the failure"
            )

        ended = await supervisor.state.session(broken["room_name"])
        assert ended is not None
        assert ended.end_reason == "failed"
        assert "400" in (ended.error or "")
        assert any(e["event"] == "session_ended" and e["log_level"] == "error" for e in logs)
        assert supervisor.counters["failed"] == 1
        assert supervisor.session(healthy["room_name"]) is not None
        question, rate = await espeak("what are your opening hours")
        await people[1].say(question, rate)
        healthy_agent = settings.agent("agent-123")
        assert healthy_agent is not None
        reply = healthy_agent.rules[0].reply
        await people[1].wait_for(lambda: reply in people[1].finals(agent=True), 30, "the healthy reply")
    finally:
        for person in people:
            await person.close()
        # The test's factory is the test's to close: the app closes only one it made itself.
        await pipelines.aclose()


async def test_an_agent_whose_room_nobody_joins_leaves_when_livekit_closes_it(
    aiohttp_client: AiohttpClient, settings: Settings, livekit: LiveKitGateway
) -> None:
    client = await aiohttp_client(create_app(changed(settings, "livekit", empty_timeout_s=1)))
    room = await (await create_room(client)).json()
    supervisor = client.app[SUPERVISOR]
    session = supervisor.session(room["room_name"])
    assert session is not None

    await eventually(lambda: supervisor.session(room["room_name"]) is None, 10, "LiveKit to close the room")

    ended = await supervisor.state.session(room["room_name"])
    assert ended is not None
    assert ended.end_reason == "room_closed"
    assert supervisor.session(room["room_name"]) is None
    assert not await livekit.room_exists(room["room_name"])


async def test_a_session_logs_under_its_own_ids_not_the_request_that_started_it(client: Client) -> None:
    """Regression: session tasks inherited the create-room request's method and path in every log line."""
    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        room = await (await create_room(client)).json()
        await eventually(lambda: any(e["event"] == "agent_joined" for e in logs), 15, "the agent to join")

    (joined,) = [e for e in logs if e["event"] == "agent_joined"]
    assert joined["room"] == room["room_name"]
    assert joined["agent"] == "agent-123"
    assert "path" not in joined
    assert "method" not in joined
