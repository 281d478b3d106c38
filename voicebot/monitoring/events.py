"""What a session tells its observers: typed events for metrics, traces, history and summaries.

The runtime (sessions/) calls one `SessionObserver`; monitoring code implements it. A broken observer must
never end a call, so `Observers` contains each one's failures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

import structlog
from livekit.agents.llm.chat_context import MetricsReport
from livekit.agents.metrics.usage import AgentSessionUsage, LLMModelUsage, STTModelUsage, TTSModelUsage

from voicebot.store.base import EndReason

log = structlog.get_logger(__name__)

ProviderKind = Literal["stt", "llm", "tts"]


@dataclass(frozen=True)
class SessionLabels:
    """Who a session is: ids for traces and logs; only `agent_id` is fit for a metric label."""

    session_id: str
    room_name: str
    agent_id: str
    phone_call: bool
    requested_at: float
    """time.monotonic() when the session was asked for (create-room, job-notification, a call)."""


@dataclass(frozen=True)
class TurnTiming:
    """One agent reply's latencies in seconds as livekit-agents measured them; None where it did not."""

    end_of_turn_s: float | None = None
    """From the end of the caller's speech to the decision that their turn is over."""
    transcription_s: float | None = None
    """From the end of the caller's speech to the final transcript."""
    llm_ttft_s: float | None = None
    tts_ttfb_s: float | None = None
    e2e_s: float | None = None
    """From the end of the caller's speech to the reply's first audio."""

    @classmethod
    def from_reports(cls, user: MetricsReport | None, agent: MetricsReport) -> TurnTiming:
        """The timing of a reply from its message's report and the caller's message before it."""
        user = user or {}
        return cls(
            end_of_turn_s=user.get("end_of_turn_delay"),
            transcription_s=user.get("transcription_delay"),
            llm_ttft_s=agent.get("llm_node_ttft"),
            tts_ttfb_s=agent.get("tts_node_ttfb"),
            e2e_s=agent.get("e2e_latency"),
        )


@dataclass(frozen=True)
class ProviderUsage:
    """What one provider request used, for usage counters; zero where the kind does not apply."""

    kind: ProviderKind
    provider: str
    """provider/model as livekit-agents names them (deepgram/nova-3): low cardinality."""
    audio_s: float = 0.0
    """STT: audio heard; TTS: audio produced."""
    characters: int = 0
    """TTS: characters synthesised."""
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class ProviderError:
    """A provider request that failed; `kind` is the exception's class name (bounded by the code)."""

    provider: str
    kind: str
    recoverable: bool


@dataclass(frozen=True)
class SessionEnd:
    """How a session ended."""

    reason: EndReason
    duration_s: float
    error: str | None = None


class SessionObserver(Protocol):
    """Hears a session's life; every method is called on the event loop and must not block."""

    def session_started(self, session: SessionLabels) -> None:
        """The session task began (before joining the room)."""

    def agent_joined(self, session: SessionLabels, seconds: float) -> None:
        """The agent is in the room, `seconds` after the session was asked for."""

    def first_word(self, session: SessionLabels, seconds: float) -> None:
        """The agent's first audio frame went out, `seconds` after the session was asked for."""

    def turn_measured(self, session: SessionLabels, timing: TurnTiming) -> None:
        """The agent began a reply to the caller; the greeting is not a turn."""

    def usage(self, session: SessionLabels, usage: ProviderUsage) -> None:
        """A provider request finished and reported what it used."""

    def provider_failed(self, session: SessionLabels, error: ProviderError) -> None:
        """A provider request failed."""

    def dtmf_received(self, session: SessionLabels) -> None:
        """The caller pressed a key (which one is personal data, and not passed)."""

    def session_ended(self, session: SessionLabels, end: SessionEnd) -> None:
        """The agent has left and the session is recorded as ended."""


class Observers:
    """Several observers as one; a failing observer is logged and the others still hear the event."""

    def __init__(self, observers: Iterable[SessionObserver] = ()) -> None:
        self._observers = list(observers)

    def add(self, observer: SessionObserver) -> None:
        """Hear sessions started from now on."""
        self._observers.append(observer)

    def _each(self, event: str, call: Callable[[SessionObserver], None]) -> None:
        for observer in self._observers:
            try:
                call(observer)
            except Exception:
                log.exception("observer_failed", observer=type(observer).__name__, event_name=event)

    def session_started(self, session: SessionLabels) -> None:
        self._each("session_started", lambda o: o.session_started(session))

    def agent_joined(self, session: SessionLabels, seconds: float) -> None:
        self._each("agent_joined", lambda o: o.agent_joined(session, seconds))

    def first_word(self, session: SessionLabels, seconds: float) -> None:
        self._each("first_word", lambda o: o.first_word(session, seconds))

    def turn_measured(self, session: SessionLabels, timing: TurnTiming) -> None:
        self._each("turn_measured", lambda o: o.turn_measured(session, timing))

    def usage(self, session: SessionLabels, usage: ProviderUsage) -> None:
        self._each("usage", lambda o: o.usage(session, usage))

    def provider_failed(self, session: SessionLabels, error: ProviderError) -> None:
        self._each("provider_failed", lambda o: o.provider_failed(session, error))

    def dtmf_received(self, session: SessionLabels) -> None:
        self._each("dtmf_received", lambda o: o.dtmf_received(session))

    def session_ended(self, session: SessionLabels, end: SessionEnd) -> None:
        self._each("session_ended", lambda o: o.session_ended(session, end))


class UsageDeltas:
    """Turns livekit-agents' running usage totals per model into what each update added."""

    def __init__(self) -> None:
        self._seen: dict[tuple[ProviderKind, str], ProviderUsage] = {}

    def update(self, usage: AgentSessionUsage) -> list[ProviderUsage]:
        """What changed since the last update, one entry per model that used more."""
        added: list[ProviderUsage] = []
        for model in usage.model_usage:
            total = _as_usage(model)
            if total is None:
                continue
            key = (total.kind, total.provider)
            before = self._seen.get(key, ProviderUsage(total.kind, total.provider))
            self._seen[key] = total
            delta = ProviderUsage(
                total.kind,
                total.provider,
                audio_s=total.audio_s - before.audio_s,
                characters=total.characters - before.characters,
                prompt_tokens=total.prompt_tokens - before.prompt_tokens,
                completion_tokens=total.completion_tokens - before.completion_tokens,
            )
            if delta != ProviderUsage(total.kind, total.provider):
                added.append(delta)
        return added


def _as_usage(model: object) -> ProviderUsage | None:
    if isinstance(model, STTModelUsage):
        return ProviderUsage("stt", f"{model.provider}/{model.model}", audio_s=model.audio_duration)
    if isinstance(model, TTSModelUsage):
        return ProviderUsage(
            "tts",
            f"{model.provider}/{model.model}",
            audio_s=model.audio_duration,
            characters=model.characters_count,
        )
    if isinstance(model, LLMModelUsage):
        return ProviderUsage(
            "llm",
            f"{model.provider}/{model.model}",
            prompt_tokens=model.input_tokens,
            completion_tokens=model.output_tokens,
        )
    # Interruption and end-of-turn models are LiveKit's cloud ones, which voicebot never uses.
    return None
