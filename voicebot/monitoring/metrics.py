"""Prometheus metrics: one registry per app, the session observer that feeds it, and the HTTP middleware.

Labels are bounded by the code or the config (agent id, provider, outcome, reason, kind, route template):
never a room name, an identity or a phone number, which would make a series per call. The process id
appears once, on `voicebot_process_info`. Gauges that mirror live state are read when Prometheus scrapes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal, get_args

import prometheus_client
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from voicebot import __version__
from voicebot.api.paths import CREATE_ROOM_PATH
from voicebot.errors import DialFailed
from voicebot.monitoring.events import ProviderError, ProviderUsage, SessionEnd, SessionLabels, TurnTiming
from voicebot.sip.events import WebhookOutcome
from voicebot.store.base import EndReason, StateStore
from voicebot.store.redis import RedisStore

if TYPE_CHECKING:
    from voicebot.loop_monitor import LoopMonitor
    from voicebot.sessions.supervisor import SessionSupervisor

# Each counter's `_created` twin doubles the series for a timestamp no dashboard here reads.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream

# Voice latencies: a turn's stages take tens of milliseconds, a whole reply or a first word a second or two.
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
# Calls last from seconds (nobody joined) to sessions.max_duration_s (1800 by default).
DURATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
# The event loop wakes on time within a millisecond or two; 0.1 s is a blocked loop (loop_monitor.py).
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

UNMATCHED_ROUTE = "unmatched"
"""The route label of a request no route took (404, 405): never the raw path, which a client chooses."""
# Any other method aiohttp parses (WebDAV's PROPFIND, ...) is counted as "other", for the same reason.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

CallDirection = Literal["inbound", "outbound"]
CallOutcome = Literal["answered", "busy", "no_answer", "failed"]
# An inbound call is a phone caller LiveKit's webhook announced; only such an event ends in these outcomes
# (sip/events.py, WebhookRouter._phone_caller_joined).
INBOUND_CALL_OUTCOMES: dict[WebhookOutcome, CallOutcome] = {
    "agent_started": "answered",
    # At capacity the caller is hung up at once: the line is busy.
    "refused": "busy",
    "failed": "failed",
}
_DIAL_OUTCOMES: dict[str, CallOutcome] = {"callee_busy": "busy", "no_answer": "no_answer"}


def dial_outcome(error: DialFailed | None) -> CallOutcome:
    """What became of an outbound call: answered, or how the dialled phone refused."""
    return "answered" if error is None else _DIAL_OUTCOMES.get(error.code, "failed")


def route_of(request: web.Request) -> str:
    """The route template that took a request (`/api/sessions/{room_name}`), or UNMATCHED_ROUTE."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


class Metrics:
    """This app's metric families on a registry of its own, and what records into them.

    It is the sessions' observer (supervisor.observers.add(metrics)); the HTTP middleware, the webhook
    and call handlers and the loop monitor record the rest. `watch()` names the live state read at scrape.
    """

    def __init__(self, agent_ids: Sequence[str] = ()) -> None:
        # Not prometheus_client's global registry: several apps in one process (the tests) keep apart.
        self.registry = CollectorRegistry()
        self._live = _LiveState(agent_ids)
        self.registry.register(self._live)
        agent, provider = ["agent"], ["provider"]

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(name, doc, labels, registry=self.registry)

        def histogram(name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=self.registry)

        self.sessions_started = counter("voicebot_sessions_started_total", "Agent sessions started.", agent)
        self.sessions_ended = counter(
            "voicebot_sessions_ended_total", "Agent sessions ended, by end reason.", [*agent, "reason"]
        )
        self.sessions_failed = counter(
            "voicebot_sessions_failed_total", "Agent sessions that ended because something failed.", agent
        )
        self.session_duration = histogram(
            "voicebot_session_duration_seconds", "How long sessions lasted.", agent, DURATION_BUCKETS
        )
        self.create_room = histogram(
            "voicebot_create_room_seconds",
            "Create-room requests, arrival to answer; outcome created (2xx), refused (4xx), failed (5xx).",
            ["outcome"],
            LATENCY_BUCKETS,
        )
        self.agent_join = histogram(
            "voicebot_agent_join_seconds",
            "From the request for a session to its agent being in the room.",
            agent,
            LATENCY_BUCKETS,
        )
        self.first_word_latency = histogram(
            "voicebot_first_word_seconds",
            "From the request for a session to the agent's first audio frame sent.",
            agent,
            LATENCY_BUCKETS,
        )
        self.turn_end_of_turn = histogram(
            "voicebot_turn_end_of_turn_seconds",
            "From the end of the caller's speech to the decision that their turn is over.",
            agent,
            LATENCY_BUCKETS,
        )
        self.turn_transcription = histogram(
            "voicebot_turn_transcription_seconds",
            "From the end of the caller's speech to the final transcript (STT delay).",
            agent,
            LATENCY_BUCKETS,
        )
        self.turn_llm_ttft = histogram(
            "voicebot_turn_llm_ttft_seconds", "The LLM's time to first token.", agent, LATENCY_BUCKETS
        )
        self.turn_tts_ttfb = histogram(
            "voicebot_turn_tts_ttfb_seconds", "The TTS's time to first audio byte.", agent, LATENCY_BUCKETS
        )
        self.turn_e2e = histogram(
            "voicebot_turn_e2e_seconds",
            "From the end of the caller's speech to the reply's first audio.",
            agent,
            LATENCY_BUCKETS,
        )
        self.stt_audio = counter("voicebot_stt_audio_seconds_total", "Audio the STT heard.", provider)
        self.tts_characters = counter(
            "voicebot_tts_characters_total", "Characters the TTS synthesised.", provider
        )
        self.tts_audio = counter("voicebot_tts_audio_seconds_total", "Audio the TTS produced.", provider)
        self.llm_prompt_tokens = counter(
            "voicebot_llm_prompt_tokens_total", "Tokens sent to the LLM.", provider
        )
        self.llm_completion_tokens = counter(
            "voicebot_llm_completion_tokens_total", "Tokens the LLM answered with.", provider
        )
        self.provider_errors = counter(
            "voicebot_provider_errors_total",
            "Failed STT, LLM or TTS requests; kind is the error's class.",
            [*provider, "kind"],
        )
        self.dtmf_keys = counter("voicebot_dtmf_keys_total", "Phone keys pressed (never which).", agent)
        self.webhooks = counter(
            "voicebot_webhooks_total", "Verified LiveKit webhook events, by what was done.", ["outcome"]
        )
        self.sip_calls = counter(
            "voicebot_sip_calls_total",
            "Phone calls: inbound (a caller's session) and outbound (POST /api/calls).",
            ["direction", "outcome"],
        )
        self.http_requests = counter(
            "voicebot_http_requests_total",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
        )
        self.loop_lag = histogram(
            "voicebot_event_loop_lag_seconds",
            "How late the event loop woke a timer: the delay every call in this process shares.",
            [],
            LOOP_LAG_BUCKETS,
        )
        # Series that exist from the start, so rate() sees their first increase.
        for agent_id in agent_ids:
            self.sessions_started.labels(agent_id)
            self.sessions_failed.labels(agent_id)
            for reason in get_args(EndReason):
                self.sessions_ended.labels(agent_id, reason)
        for outcome in get_args(WebhookOutcome):
            self.webhooks.labels(outcome)
        for direction in get_args(CallDirection):
            for call_outcome in get_args(CallOutcome):
                self.sip_calls.labels(direction, call_outcome)

    def watch(self, supervisor: SessionSupervisor, store: StateStore, loop: LoopMonitor) -> None:
        """Read live sessions, the session limit, Redis and the blocked-loop count from these at scrape."""
        self._live.supervisor, self._live.store, self._live.loop = supervisor, store, loop

    # The SessionObserver protocol (monitoring/events.py).

    def session_started(self, session: SessionLabels) -> None:
        self.sessions_started.labels(session.agent_id).inc()

    def agent_joined(self, session: SessionLabels, seconds: float) -> None:
        self.agent_join.labels(session.agent_id).observe(seconds)

    def first_word(self, session: SessionLabels, seconds: float) -> None:
        self.first_word_latency.labels(session.agent_id).observe(seconds)

    def turn_measured(self, session: SessionLabels, timing: TurnTiming) -> None:
        for histogram, seconds in (
            (self.turn_end_of_turn, timing.end_of_turn_s),
            (self.turn_transcription, timing.transcription_s),
            (self.turn_llm_ttft, timing.llm_ttft_s),
            (self.turn_tts_ttfb, timing.tts_ttfb_s),
            (self.turn_e2e, timing.e2e_s),
        ):
            if seconds is not None:
                histogram.labels(session.agent_id).observe(seconds)

    def usage(self, session: SessionLabels, usage: ProviderUsage) -> None:
        for counter, amount in (
            (self.stt_audio if usage.kind == "stt" else self.tts_audio, usage.audio_s),
            (self.tts_characters, usage.characters),
            (self.llm_prompt_tokens, usage.prompt_tokens),
            (self.llm_completion_tokens, usage.completion_tokens),
        ):
            # A counter only goes up; a provider that reported less than before is not taken back.
            if amount > 0:
                counter.labels(usage.provider).inc(amount)

    def provider_failed(self, session: SessionLabels, error: ProviderError) -> None:
        self.provider_errors.labels(error.provider, error.kind).inc()

    def dtmf_received(self, session: SessionLabels) -> None:
        self.dtmf_keys.labels(session.agent_id).inc()

    def session_ended(self, session: SessionLabels, end: SessionEnd) -> None:
        self.sessions_ended.labels(session.agent_id, end.reason).inc()
        self.session_duration.labels(session.agent_id).observe(end.duration_s)
        if end.reason == "failed":
            self.sessions_failed.labels(session.agent_id).inc()

    # Everything else.

    def webhook_handled(self, outcome: WebhookOutcome) -> None:
        """A verified webhook event was acted on (or not); a phone caller's also counts as an inbound call."""
        self.webhooks.labels(outcome).inc()
        if outcome in INBOUND_CALL_OUTCOMES:
            self.sip_calls.labels("inbound", INBOUND_CALL_OUTCOMES[outcome]).inc()

    def call_finished(self, direction: CallDirection, outcome: CallOutcome) -> None:
        """A phone call was answered, or was not."""
        self.sip_calls.labels(direction, outcome).inc()

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """A request was answered; `route` is its template (route_of)."""
        method = method if method in HTTP_METHODS else "other"
        self.http_requests.labels(method, route, str(status)).inc()
        if route == CREATE_ROOM_PATH and method == "POST":
            outcome = "created" if status < 400 else "refused" if status < 500 else "failed"
            self.create_room.labels(outcome).observe(seconds)

    def loop_lagged(self, seconds: float) -> None:
        """One of the loop monitor's measurements."""
        self.loop_lag.observe(seconds)


class _LiveState:
    """What is true now, read at each scrape: live sessions, the limit, Redis, the process."""

    def __init__(self, agent_ids: Sequence[str]) -> None:
        self._agent_ids = tuple(agent_ids)
        self.supervisor: SessionSupervisor | None = None
        self.store: StateStore | None = None
        self.loop: LoopMonitor | None = None

    def collect(self) -> Iterable[Metric]:
        """The families of what is watched; none before `Metrics.watch()`."""
        if self.supervisor is not None:
            yield InfoMetricFamily(
                "voicebot_process",
                "This voicebot process: its id in the cluster (the only metric that names it) and version.",
                value={"process": self.supervisor.process_id, "version": __version__},
            )
            live = GaugeMetricFamily("voicebot_sessions_live", "Sessions running now.", labels=["agent"])
            counts = dict.fromkeys(self._agent_ids, 0)
            for session in self.supervisor.live():
                counts[session.agent_id] = counts.get(session.agent_id, 0) + 1
            for agent_id, count in counts.items():
                live.add_metric([agent_id], count)
            yield live
            yield GaugeMetricFamily(
                "voicebot_sessions_limit", "Sessions this process may run at once.", self.supervisor.limit
            )
        if self.loop is not None:
            yield CounterMetricFamily(
                "voicebot_event_loop_blocked",
                "Times the event loop was blocked for 0.1 s or more.",
                self.loop.snapshot().blocked_count,
            )
        if isinstance(self.store, RedisStore):
            yield GaugeMetricFamily(
                "voicebot_redis_up",
                "1 while the state store's Redis answered its last request, 0 when it did not.",
                int(self.store.reachable),
            )
            yield GaugeMetricFamily(
                "voicebot_redis_buffered_writes",
                "Transcript lines and session updates waiting for Redis to come back.",
                self.store.pending_writes,
            )


def http_metrics_middleware(metrics: Metrics) -> Middleware:
    """Count every request by method, route template and status; time create-room."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            metrics.http_request(request.method, route_of(request), status, time.perf_counter() - started)

    return middleware
