"""The metrics: what each session event records, which labels they carry, and the scrape-time gauges."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient

from tests.servers import free_port
from voicebot.config import SessionSettings
from voicebot.errors import DialFailed, StateUnavailable
from voicebot.loop_monitor import LoopMonitor
from voicebot.monitoring.events import ProviderError, ProviderUsage, SessionEnd, SessionLabels, TurnTiming
from voicebot.monitoring.metrics import UNMATCHED_ROUTE, Metrics, dial_outcome, http_metrics_middleware
from voicebot.sessions.supervisor import SessionSupervisor
from voicebot.store.base import SessionRecord
from voicebot.store.memory import InMemoryStore
from voicebot.store.redis import RedisStore

# A phone call's room, as livekit-sip names it after the caller: none of it may become a label.
ROOM = "voicebot_agent-123_+15550100_5f0c2a9e"
LABELS = SessionLabels("SS_3f9a1c2e4b5d", ROOM, "agent-123", phone_call=True, requested_at=0.0)
# Every label name a voicebot metric may carry; `le` is a histogram bucket's.
ALLOWED_LABELS = {"agent", "provider", "kind", "reason", "outcome", "direction", "method", "route", "status"}
ALLOWED_LABELS |= {"process", "version", "le"}


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def a_whole_call(metrics: Metrics) -> None:
    """Every event a phone call with one turn, a key press and a provider error tells its observers."""
    metrics.session_started(LABELS)
    metrics.agent_joined(LABELS, 0.4)
    metrics.first_word(LABELS, 1.2)
    metrics.usage(LABELS, ProviderUsage("tts", "espeak/en-us", audio_s=2.5, characters=52))
    metrics.usage(LABELS, ProviderUsage("stt", "sphinx/jsgf", audio_s=1.75))
    metrics.turn_measured(
        LABELS,
        TurnTiming(end_of_turn_s=0.21, transcription_s=0.05, llm_ttft_s=0.002, tts_ttfb_s=0.02, e2e_s=0.3),
    )
    metrics.usage(LABELS, ProviderUsage("llm", "rules/rules", prompt_tokens=7, completion_tokens=3))
    metrics.usage(LABELS, ProviderUsage("tts", "espeak/en-us", audio_s=4.0, characters=80))
    metrics.dtmf_received(LABELS)
    metrics.provider_failed(LABELS, ProviderError("sphinx", "APIConnectionError", recoverable=True))
    metrics.session_ended(LABELS, SessionEnd("participants_left", 42.0))


def test_a_call_records_its_session_latencies_usage_and_errors() -> None:
    metrics = Metrics(["agent-123", "faq"])

    a_whole_call(metrics)

    agent = {"agent": "agent-123"}
    assert value(metrics, "voicebot_sessions_started_total", **agent) == 1
    assert value(metrics, "voicebot_sessions_ended_total", **agent, reason="participants_left") == 1
    assert value(metrics, "voicebot_sessions_ended_total", **agent, reason="failed") == 0
    assert value(metrics, "voicebot_sessions_failed_total", **agent) == 0
    assert value(metrics, "voicebot_session_duration_seconds_sum", **agent) == 42.0
    assert value(metrics, "voicebot_agent_join_seconds_sum", **agent) == 0.4
    assert value(metrics, "voicebot_first_word_seconds_count", **agent) == 1
    assert value(metrics, "voicebot_first_word_seconds_bucket", **agent, le="1.0") == 0
    assert value(metrics, "voicebot_first_word_seconds_bucket", **agent, le="1.5") == 1
    for stage, seconds in [
        ("end_of_turn", 0.21),
        ("transcription", 0.05),
        ("llm_ttft", 0.002),
        ("tts_ttfb", 0.02),
        ("e2e", 0.3),
    ]:
        assert value(metrics, f"voicebot_turn_{stage}_seconds_count", **agent) == 1, stage
        assert value(metrics, f"voicebot_turn_{stage}_seconds_sum", **agent) == seconds, stage
    assert value(metrics, "voicebot_stt_audio_seconds_total", provider="sphinx/jsgf") == 1.75
    assert value(metrics, "voicebot_tts_characters_total", provider="espeak/en-us") == 132
    assert value(metrics, "voicebot_tts_audio_seconds_total", provider="espeak/en-us") == 6.5
    assert value(metrics, "voicebot_llm_prompt_tokens_total", provider="rules/rules") == 7
    assert value(metrics, "voicebot_llm_completion_tokens_total", provider="rules/rules") == 3
    # What a provider did not do is no series of its own: the STT produced no audio, the TTS heard none.
    assert value(metrics, "voicebot_tts_audio_seconds_total", provider="sphinx/jsgf") is None
    assert value(metrics, "voicebot_stt_audio_seconds_total", provider="espeak/en-us") is None
    assert value(metrics, "voicebot_dtmf_keys_total", **agent) == 1
    assert value(metrics, "voicebot_provider_errors_total", provider="sphinx", kind="APIConnectionError") == 1
    # Series for configured agents exist before their first session, so rate() sees the first one.
    assert value(metrics, "voicebot_sessions_started_total", agent="faq") == 0


def test_a_failed_session_counts_as_failed_and_by_its_end_reason() -> None:
    metrics = Metrics(["agent-123"])

    metrics.session_started(LABELS)
    metrics.session_ended(LABELS, SessionEnd("failed", 3.0, error="RuntimeError: boom"))

    assert value(metrics, "voicebot_sessions_failed_total", agent="agent-123") == 1
    assert value(metrics, "voicebot_sessions_ended_total", agent="agent-123", reason="failed") == 1


def test_no_label_names_a_room_a_session_an_identity_or_a_number() -> None:
    metrics = Metrics(["agent-123"])
    a_whole_call(metrics)
    metrics.http_request("DELETE", "/api/sessions/{room_name}", 200, 0.01)
    metrics.webhook_handled("agent_started")

    text = generate_latest(metrics.registry).decode()

    for secret in (ROOM, LABELS.session_id, "+15550100", "15550100", "5f0c2a9e"):
        assert secret not in text
    label_names = {
        name
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for name in sample.labels
    }
    assert label_names <= ALLOWED_LABELS


def test_every_metric_is_voicebots_and_names_its_unit() -> None:
    metrics = Metrics(["agent-123"])
    a_whole_call(metrics)

    families = list(text_string_to_metric_families(generate_latest(metrics.registry).decode()))

    assert families
    for family in families:
        assert family.name.startswith("voicebot_"), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
        if family.type == "counter":
            # The parser gives a counter's name without `_total`; its samples carry it.
            assert all(s.name.endswith("_total") for s in family.samples), family.name


def test_webhooks_count_their_outcome_and_a_phone_callers_counts_as_an_inbound_call() -> None:
    metrics = Metrics()

    metrics.webhook_handled("agent_started")
    metrics.webhook_handled("refused")
    metrics.webhook_handled("ignored")

    assert value(metrics, "voicebot_webhooks_total", outcome="agent_started") == 1
    assert value(metrics, "voicebot_webhooks_total", outcome="ignored") == 1
    assert value(metrics, "voicebot_webhooks_total", outcome="duplicate") == 0
    assert value(metrics, "voicebot_sip_calls_total", direction="inbound", outcome="answered") == 1
    # Refused at capacity: the caller is hung up at once, as on a busy line.
    assert value(metrics, "voicebot_sip_calls_total", direction="inbound", outcome="busy") == 1
    assert value(metrics, "voicebot_sip_calls_total", direction="inbound", outcome="failed") == 0


def test_an_outbound_calls_outcome_comes_from_the_sip_status_of_the_refusal() -> None:
    assert dial_outcome(None) == "answered"
    assert dial_outcome(DialFailed("+15550100", 486, "Busy Here")) == "busy"
    assert dial_outcome(DialFailed("+15550100", 480, "Temporarily Unavailable")) == "no_answer"
    assert dial_outcome(DialFailed("+15550100", 603, "Decline")) == "failed"
    assert dial_outcome(DialFailed("+15550100", None, "no route")) == "failed"


async def room(request: web.Request) -> web.Response:
    return web.json_response({"room": request.match_info["room_name"]})


async def at_capacity(_request: web.Request) -> web.Response:
    return web.json_response({"error": {"code": "at_capacity", "message": "full"}}, status=503)


async def test_requests_are_counted_by_route_template_never_by_raw_path(
    aiohttp_client: AiohttpClient,
) -> None:
    metrics = Metrics()
    app = web.Application(middlewares=[http_metrics_middleware(metrics)])
    app.router.add_get("/api/sessions/{room_name}", room)
    app.router.add_post("/api/livekit/create-room", at_capacity)
    client: Any = await aiohttp_client(app)

    for path in ("/api/sessions/voicebot_a_1", "/api/sessions/voicebot_a_2", "/no/such/path"):
        async with client.get(path) as response:
            await response.read()
    async with client.request("PROPFIND", "/api/sessions/voicebot_a_3") as response:
        await response.read()
    async with client.post("/api/livekit/create-room") as response:
        await response.read()

    route = "/api/sessions/{room_name}"
    assert value(metrics, "voicebot_http_requests_total", method="GET", route=route, status="200") == 2
    assert value(metrics, "voicebot_http_requests_total", method="GET", route=UNMATCHED_ROUTE, status="404")
    # A method outside the usual ones (WebDAV's, which aiohttp parses) is "other"; no route takes it.
    assert value(metrics, "voicebot_http_requests_total", method="other", route=UNMATCHED_ROUTE, status="405")
    assert value(metrics, "voicebot_create_room_seconds_count", outcome="failed") == 1
    text = generate_latest(metrics.registry).decode()
    assert "voicebot_a_1" not in text
    assert "/no/such/path" not in text


async def test_scrapes_read_live_sessions_the_limit_the_loop_and_the_process_as_they_are_now() -> None:
    metrics = Metrics(["agent-123", "faq"])
    supervisor = SessionSupervisor(
        SessionSettings(max_concurrent=7),
        livekit=None,  # type: ignore[arg-type]
        pipelines=None,  # type: ignore[arg-type]
        state=InMemoryStore(),
        process_id="p-1234abcd",
    )
    monitor = LoopMonitor(interval_s=0.01, on_lag=metrics.loop_lagged)
    assert value(metrics, "voicebot_sessions_limit") is None, "nothing to read before watch()"

    metrics.watch(supervisor, supervisor.state, monitor)
    monitor.start()
    await asyncio.sleep(0.05)
    time.sleep(0.15)  # noqa: ASYNC251 - a blocked loop, for the blocked-loop count
    await asyncio.sleep(0.05)
    await monitor.stop()

    assert value(metrics, "voicebot_sessions_limit") == 7
    assert value(metrics, "voicebot_sessions_live", agent="agent-123") == 0
    assert value(metrics, "voicebot_sessions_live", agent="faq") == 0
    assert value(metrics, "voicebot_process_info", process="p-1234abcd", version="0.1.0") == 1
    assert value(metrics, "voicebot_event_loop_blocked_total") == 1
    lags = value(metrics, "voicebot_event_loop_lag_seconds_count")
    assert lags is not None
    assert lags >= 2
    assert value(metrics, "voicebot_event_loop_lag_seconds_bucket", le="0.1") == lags - 1
    # In-memory state has no Redis to report on.
    assert value(metrics, "voicebot_redis_up") is None


async def test_redis_up_falls_to_zero_when_the_state_stores_redis_stops_answering() -> None:
    metrics = Metrics()
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    supervisor = SessionSupervisor(
        SessionSettings(),
        livekit=None,  # type: ignore[arg-type]
        pipelines=None,  # type: ignore[arg-type]
        state=store,
    )
    metrics.watch(supervisor, store, LoopMonitor())
    assert value(metrics, "voicebot_redis_up") == 1, "innocent until a request fails"

    await store.save_session(
        SessionRecord(room_name="room-a", agent_id="agent-123", started_at=time.time(), process_id="p-1")
    )
    with pytest.raises(StateUnavailable):
        await store.ping()

    assert value(metrics, "voicebot_redis_up") == 0
    assert value(metrics, "voicebot_redis_buffered_writes") == 1
    await store.aclose()
