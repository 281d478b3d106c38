"""OpenTelemetry traces: one trace per session, livekit-agents' spans inside it, exported over OTLP/HTTP.

Off unless [telemetry] has an endpoint (from OTEL_EXPORTER_OTLP_ENDPOINT): then no provider, exporter or
thread exists and every context manager here is a `nullcontext`.

Process-global state is left alone on purpose. OpenTelemetry's global tracer provider can be set only
once per process, and tests run many apps in one process, each with its own settings; so voicebot never
sets it. Its own spans come from the provider this object owns, and livekit-agents gets that provider
through its hook, `set_tracer_provider`, which swaps the provider behind its module-level tracer and is
put back to the default on `aclose()`. That tracer is still one per process: two apps that both export
traces at the same time in one process would share it (the last one started wins).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

from livekit.agents import telemetry as livekit_telemetry
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import (
    PROCESS_PID,
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
    Resource,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from voicebot import __version__
from voicebot.config import TelemetrySettings
from voicebot.monitoring.events import (
    ProviderError,
    ProviderUsage,
    SessionEnd,
    SessionLabels,
    TurnTiming,
)

SESSION_SPAN = "voicebot.session"
JOIN_SPAN = "voicebot.join"
"""The agent joining the room (rtc.Room.connect)."""

ROOM = "voicebot.room"
AGENT_ID = "voicebot.agent_id"
SESSION_ID = "voicebot.session_id"
CHANNEL = "voicebot.channel"
"""`phone` for a phone call, `web` for everything else."""
END_REASON = "voicebot.end_reason"
DURATION = "voicebot.duration_s"
SINCE_REQUESTED = "voicebot.since_requested_s"
"""On the agent_joined and first_word events: seconds since the session was asked for."""


class Tracing:
    """The app's traces: voicebot's spans, livekit-agents' spans, one exporter; a `SessionObserver` too.

    As an observer it adds a session's events (joined, first word, provider errors, key presses) to its
    span and its end reason when it ends. Turn latencies and usage are not repeated: livekit-agents puts
    them on its own agent_turn, llm_request and tts_request spans.
    """

    def __init__(self, settings: TelemetrySettings, *, process_id: str = "") -> None:
        self.settings = settings
        self.provider: TracerProvider | None = None
        self._tracer: trace.Tracer = trace.NoOpTracer()
        self._sessions: dict[str, Span] = {}
        if not settings.enabled:
            return
        attributes: dict[str, str | int] = {
            SERVICE_NAME: settings.service_name,
            SERVICE_VERSION: __version__,
            PROCESS_PID: os.getpid(),
        }
        if process_id:
            attributes[SERVICE_INSTANCE_ID] = process_id
        # Resource() rather than Resource.create(): the latter reads OTEL_* variables itself, and the
        # configuration is read once, in config.py. Spans end at app clean-up, not at interpreter exit.
        self.provider = TracerProvider(resource=Resource(attributes), shutdown_on_exit=False)
        # The batch processor exports from its own thread, so a slow collector never blocks the loop.
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(settings.traces_endpoint)))
        self._tracer = self.provider.get_tracer("voicebot", __version__)

    @classmethod
    def off(cls) -> Tracing:
        """Tracing that records nothing (for a runtime built without an app)."""
        return cls(TelemetrySettings())

    @property
    def enabled(self) -> bool:
        """True when spans are recorded and exported."""
        return self.provider is not None

    def start(self) -> None:
        """Hand the provider to livekit-agents, whose spans then join voicebot's traces."""
        if self.provider is not None:
            # allow_pii=False installs livekit-agents' filter, which drops its lk.pii.* and GenAI content
            # attributes (transcripts, identities, phone numbers) before any exporter sees them.
            livekit_telemetry.set_tracer_provider(
                self.provider, allow_pii=self.settings.include_personal_data
            )

    async def aclose(self) -> None:
        """Give livekit-agents back its default (non-recording) provider, export what is left, stop."""
        if self.provider is None:
            return
        livekit_telemetry.set_tracer_provider(trace.get_tracer_provider())
        # shutdown() posts the last batch and joins the export thread: blocking, so not on the loop
        # (where, in tests, the collector itself may be listening).
        await asyncio.to_thread(self.provider.shutdown)

    def server_span(self, method: str, route: str) -> AbstractContextManager[Span | None]:
        """A span for handling one HTTP request, current while it runs so what it starts joins its trace."""
        if self.provider is None:
            return nullcontext()
        return self._tracer.start_as_current_span(
            f"{method} {route}",
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route},
        )

    @contextmanager
    def session(self, labels: SessionLabels, parent: Context | None) -> Iterator[None]:
        """The session's span, current for the session's body so that livekit-agents' agent_session span
        (and under it every turn and model request) is its child; `parent` is the context of whatever
        asked for the session (create-room's span), None for a trace of its own."""
        if self.provider is None:
            yield
            return
        span = self._tracer.start_span(
            SESSION_SPAN,
            context=parent,
            attributes={
                ROOM: labels.room_name,
                AGENT_ID: labels.agent_id,
                SESSION_ID: labels.session_id,
                CHANNEL: "phone" if labels.phone_call else "web",
            },
        )
        self._sessions[labels.session_id] = span
        try:
            with trace.use_span(span, end_on_exit=True):
                yield
        finally:
            del self._sessions[labels.session_id]

    def join(self) -> AbstractContextManager[None]:
        """A span for the agent joining the room, a child of the current (session) span."""
        return nullcontext() if self.provider is None else self._join()

    @contextmanager
    def _join(self) -> Iterator[None]:
        # Not made current: connecting starts the room's long-lived tasks, which would inherit it as
        # the parent of whatever they trace for the rest of the session.
        span = self._tracer.start_span(JOIN_SPAN)
        try:
            yield
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            span.end()

    # SessionObserver

    def session_started(self, session: SessionLabels) -> None:
        """The span is already open: `session()` opened it around the session's body."""

    def agent_joined(self, session: SessionLabels, seconds: float) -> None:
        self._event(session, "agent_joined", {SINCE_REQUESTED: seconds})

    def first_word(self, session: SessionLabels, seconds: float) -> None:
        self._event(session, "first_word", {SINCE_REQUESTED: seconds})

    def turn_measured(self, session: SessionLabels, timing: TurnTiming) -> None:
        """On livekit-agents' agent_turn span already (lk.e2e_latency and the stages before it)."""

    def usage(self, session: SessionLabels, usage: ProviderUsage) -> None:
        """On livekit-agents' llm_request and tts_request spans already."""

    def provider_failed(self, session: SessionLabels, error: ProviderError) -> None:
        self._event(
            session,
            "provider_failed",
            {
                "voicebot.provider": error.provider,
                "error.type": error.kind,
                "voicebot.recoverable": error.recoverable,
            },
        )

    def dtmf_received(self, session: SessionLabels) -> None:
        # Which key is personal data (a PIN, an account number) and is never passed here.
        self._event(session, "dtmf_received", {})

    def session_ended(self, session: SessionLabels, end: SessionEnd) -> None:
        span = self._sessions.get(session.session_id)
        if span is None:
            return
        span.set_attributes({END_REASON: end.reason, DURATION: end.duration_s})
        if end.reason == "failed":
            # The error's text may quote what a provider was sent; it is personal data like a transcript.
            detail = end.error if self.settings.include_personal_data else None
            span.set_status(Status(StatusCode.ERROR, detail))

    def _event(self, session: SessionLabels, name: str, attributes: dict[str, str | float | bool]) -> None:
        span = self._sessions.get(session.session_id)
        if span is not None:
            span.add_event(name, attributes)
