"""One `session_summary` log line at the end of every session: how the call went, in numbers.

No transcript, phone number or key pressed reaches it: only counts, latencies and provider usage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from voicebot.logs import mask_numbers
from voicebot.monitoring.events import ProviderError, ProviderUsage, SessionEnd, SessionLabels, TurnTiming
from voicebot.monitoring.history import latency_stats

log = structlog.get_logger(__name__)


@dataclass
class _Call:
    """What one session has told so far."""

    agent_join_s: float | None = None
    first_word_s: float | None = None
    e2e_s: list[float] = field(default_factory=list)
    turns: int = 0
    stt_audio_s: float = 0.0
    tts_characters: int = 0
    tts_audio_s: float = 0.0
    llm_prompt_tokens: int = 0
    llm_completion_tokens: int = 0
    provider_errors: int = 0
    dtmf_keys: int = 0


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


class SessionSummaries:
    """A SessionObserver that keeps a small tally per live session and logs it once the session ends."""

    def __init__(self) -> None:
        self._calls: dict[str, _Call] = {}

    def _call(self, session: SessionLabels) -> _Call:
        return self._calls.setdefault(session.session_id, _Call())

    def live_sessions(self) -> int:
        """How many sessions are being tallied (ended ones are dropped)."""
        return len(self._calls)

    def session_started(self, session: SessionLabels) -> None:
        self._call(session)

    def agent_joined(self, session: SessionLabels, seconds: float) -> None:
        self._call(session).agent_join_s = seconds

    def first_word(self, session: SessionLabels, seconds: float) -> None:
        self._call(session).first_word_s = seconds

    def turn_measured(self, session: SessionLabels, timing: TurnTiming) -> None:
        call = self._call(session)
        call.turns += 1
        if timing.e2e_s is not None:
            call.e2e_s.append(timing.e2e_s)

    def usage(self, session: SessionLabels, usage: ProviderUsage) -> None:
        call = self._call(session)
        if usage.kind == "stt":
            call.stt_audio_s += usage.audio_s
        elif usage.kind == "tts":
            call.tts_audio_s += usage.audio_s
            call.tts_characters += usage.characters
        else:
            call.llm_prompt_tokens += usage.prompt_tokens
            call.llm_completion_tokens += usage.completion_tokens

    def provider_failed(self, session: SessionLabels, error: ProviderError) -> None:
        self._call(session).provider_errors += 1

    def dtmf_received(self, session: SessionLabels) -> None:
        self._call(session).dtmf_keys += 1

    def session_ended(self, session: SessionLabels, end: SessionEnd) -> None:
        call = self._calls.pop(session.session_id, None) or _Call()
        e2e = latency_stats(call.e2e_s)
        log.info(
            "session_summary",
            session=session.session_id,
            agent=session.agent_id,
            # A room livekit-sip made for a caller carries their number.
            room=mask_numbers(session.room_name),
            phone_call=session.phone_call,
            duration_s=end.duration_s,
            reason=end.reason,
            turns=call.turns,
            agent_join_s=_rounded(call.agent_join_s),
            first_word_s=_rounded(call.first_word_s),
            e2e_p50_s=_rounded(e2e["p50"]),
            e2e_p95_s=_rounded(e2e["p95"]),
            stt_audio_s=round(call.stt_audio_s, 3),
            tts_characters=call.tts_characters,
            tts_audio_s=round(call.tts_audio_s, 3),
            llm_prompt_tokens=call.llm_prompt_tokens,
            llm_completion_tokens=call.llm_completion_tokens,
            provider_errors=call.provider_errors,
            dtmf_keys=call.dtmf_keys,
        )
