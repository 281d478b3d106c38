"""The session_summary line: one per session, its numbers, and nothing personal in it."""

from __future__ import annotations

from structlog.testing import capture_logs

from voicebot.monitoring.events import ProviderError, ProviderUsage, SessionEnd, SessionLabels, TurnTiming
from voicebot.monitoring.history import latency_stats
from voicebot.monitoring.summary import SessionSummaries

ROOM = "voicebot_agent-123_+15550100_5f0c2a9e"
CALL = SessionLabels("SS_3f9a1c2e4b5d", ROOM, "agent-123", phone_call=True, requested_at=0.0)
OTHER = SessionLabels("SS_000000000000", "voicebot_faq_1", "faq", phone_call=False, requested_at=0.0)


def test_percentiles_are_nearest_rank() -> None:
    # The summary's e2e p50/p95 come from the operator page's latency_stats: one nearest-rank percentile.
    assert latency_stats([])["p50"] is None
    assert latency_stats([0.3])["p95"] == 0.3
    assert latency_stats([0.4, 0.1, 0.3, 0.2])["p50"] == 0.2
    assert latency_stats([float(n) for n in range(1, 21)])["p95"] == 19.0


def test_the_summary_tallies_one_session_and_is_logged_once_when_it_ends() -> None:
    summaries = SessionSummaries()
    summaries.session_started(CALL)
    summaries.session_started(OTHER)
    summaries.agent_joined(CALL, 0.41234)
    summaries.first_word(CALL, 1.2)
    for e2e in (0.5, 0.3, 0.9):
        summaries.turn_measured(CALL, TurnTiming(end_of_turn_s=0.2, e2e_s=e2e))
    summaries.turn_measured(CALL, TurnTiming(end_of_turn_s=0.2))
    summaries.usage(CALL, ProviderUsage("stt", "sphinx/jsgf", audio_s=1.5))
    summaries.usage(CALL, ProviderUsage("tts", "espeak/en-us", audio_s=2.0, characters=52))
    summaries.usage(CALL, ProviderUsage("tts", "espeak/en-us", audio_s=3.5, characters=80))
    summaries.usage(CALL, ProviderUsage("llm", "rules/rules", prompt_tokens=7, completion_tokens=3))
    summaries.usage(OTHER, ProviderUsage("tts", "espeak/en-us", characters=1000))
    summaries.provider_failed(CALL, ProviderError("sphinx", "APIConnectionError", recoverable=True))
    summaries.dtmf_received(CALL)

    with capture_logs() as logs:
        summaries.session_ended(CALL, SessionEnd("call_ended", 61.5))

    (summary,) = logs
    assert summary == {
        "event": "session_summary",
        "log_level": "info",
        "session": "SS_3f9a1c2e4b5d",
        "agent": "agent-123",
        "room": "voicebot_agent-123_+155****00_5f0c2a9e",
        "phone_call": True,
        "duration_s": 61.5,
        "reason": "call_ended",
        "turns": 4,
        "agent_join_s": 0.412,
        "first_word_s": 1.2,
        "e2e_p50_s": 0.5,
        "e2e_p95_s": 0.9,
        "stt_audio_s": 1.5,
        "tts_characters": 132,
        "tts_audio_s": 5.5,
        "llm_prompt_tokens": 7,
        "llm_completion_tokens": 3,
        "provider_errors": 1,
        "dtmf_keys": 1,
    }
    # The ended session's tally is gone; the other one's is untouched.
    assert summaries.live_sessions() == 1


def test_a_session_that_never_spoke_is_summarised_with_nothing_measured() -> None:
    summaries = SessionSummaries()
    summaries.session_started(OTHER)

    with capture_logs() as logs:
        summaries.session_ended(OTHER, SessionEnd("nobody_joined", 30.0))

    (summary,) = logs
    assert (summary["reason"], summary["turns"], summary["tts_characters"]) == ("nobody_joined", 0, 0)
    assert summary["first_word_s"] is summary["e2e_p50_s"] is summary["e2e_p95_s"] is None
    assert summaries.live_sessions() == 0
