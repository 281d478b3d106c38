"""Tracing set-up from settings: nothing at all without an endpoint; with one, a session's spans, its
events and livekit-agents' spans in one trace, and livekit-agents' tracer given back on close."""

from __future__ import annotations

import threading

from livekit.agents import telemetry as livekit_telemetry
from opentelemetry import context as otel_context
from opentelemetry import trace

from tests.otlp_receiver import otlp_receiver
from voicebot.config import TelemetrySettings, parse_settings
from voicebot.monitoring.events import SessionEnd, SessionLabels
from voicebot.monitoring.tracing import JOIN_SPAN, SESSION_SPAN, Tracing

LABELS = SessionLabels("SS_1", "voicebot_a_1", "a", phone_call=True, requested_at=0.0)
STATUS_ERROR = 2


def telemetry(env: dict[str, str]) -> TelemetrySettings:
    """[telemetry] as config.py reads it from a minimal config.toml and `env`."""
    document = {"livekit": {"api_secret": "s" * 32}, "agents": [{"id": "a", "name": "A"}]}
    return parse_settings(document, env).telemetry


def livekit_records() -> bool:
    """Whether a span livekit-agents starts now would be recorded."""
    span = livekit_telemetry.tracer.start_span("probe")
    span.end()
    return span.is_recording()


async def test_without_an_endpoint_no_provider_exporter_or_thread_exists_and_spans_are_no_ops() -> None:
    threads = set(threading.enumerate())
    tracing = Tracing(telemetry({}), process_id="p1")
    tracing.start()

    with (
        tracing.server_span("POST", "/api/livekit/create-room") as request,
        tracing.session(LABELS, otel_context.get_current()),
        tracing.join(),
    ):
        tracing.first_word(LABELS, 0.5)
        tracing.session_ended(LABELS, SessionEnd("failed", 1.0, "boom"))
        assert not trace.get_current_span().is_recording()
        assert not livekit_records()
    await tracing.aclose()

    assert request is None
    assert tracing.provider is None
    assert not tracing.enabled
    assert set(threading.enumerate()) == threads
    # voicebot never sets OpenTelemetry's process-wide provider, traced or not.
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


async def test_a_session_span_is_the_requests_child_and_the_parent_of_livekit_agents_spans() -> None:
    async with otlp_receiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        tracing = Tracing(telemetry(env), process_id="p1")
        tracing.start()
        with tracing.server_span("POST", "/api/livekit/create-room"):
            parent = otel_context.get_current()
        # As the supervisor does it: the session runs later, in a context of its own, with `parent`.
        with tracing.session(LABELS, parent):
            with tracing.join():
                tracing.agent_joined(LABELS, 0.25)
            with livekit_telemetry.tracer.start_as_current_span("agent_session"):
                tracing.first_word(LABELS, 0.5)
                tracing.dtmf_received(LABELS)
            tracing.session_ended(LABELS, SessionEnd("failed", 1.5, "TTSError: said 'my PIN is 1234'"))
        await tracing.aclose()
        assert not livekit_records()

    assert not receiver.refused
    (request,) = receiver.named("POST /api/livekit/create-room")
    (session,) = receiver.named(SESSION_SPAN)
    (join,) = receiver.named(JOIN_SPAN)
    (agent_session,) = receiver.named("agent_session")
    assert session.parent_span_id == request.span_id
    assert join.parent_span_id == session.span_id
    assert agent_session.parent_span_id == session.span_id
    assert agent_session.scope == "livekit-agents"
    assert session.attributes == {
        "voicebot.room": "voicebot_a_1",
        "voicebot.agent_id": "a",
        "voicebot.session_id": "SS_1",
        "voicebot.channel": "phone",
        "voicebot.end_reason": "failed",
        "voicebot.duration_s": 1.5,
    }
    assert [(e.name, e.attributes) for e in session.events] == [
        ("agent_joined", {"voicebot.since_requested_s": 0.25}),
        ("first_word", {"voicebot.since_requested_s": 0.5}),
        ("dtmf_received", {}),
    ]
    # A failure's text may quote what the caller said: without the opt-in only the status says it failed.
    assert (session.status_code, session.status_message) == (STATUS_ERROR, "")
    assert session.resource["service.instance.id"] == "p1"
