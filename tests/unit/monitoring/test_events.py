"""The session events' plumbing: usage deltas, turn timings, and observers that fail alone."""

from __future__ import annotations

from livekit.agents.metrics.usage import AgentSessionUsage, LLMModelUsage, STTModelUsage, TTSModelUsage
from structlog.testing import capture_logs

from voicebot.monitoring.events import (
    Observers,
    ProviderUsage,
    SessionEnd,
    SessionLabels,
    TurnTiming,
    UsageDeltas,
)

LABELS = SessionLabels("SS_1", "voicebot_a_1", "a", phone_call=False, requested_at=0.0)


def test_usage_deltas_report_only_what_each_update_added() -> None:
    deltas = UsageDeltas()
    first = AgentSessionUsage(
        model_usage=[
            STTModelUsage(provider="sphinx", model="jsgf", audio_duration=1.5),
            TTSModelUsage(provider="espeak", model="en-us", characters_count=40, audio_duration=2.0),
        ]
    )
    assert deltas.update(first) == [
        ProviderUsage("stt", "sphinx/jsgf", audio_s=1.5),
        ProviderUsage("tts", "espeak/en-us", audio_s=2.0, characters=40),
    ]
    second = AgentSessionUsage(
        model_usage=[
            STTModelUsage(provider="sphinx", model="jsgf", audio_duration=1.5),
            TTSModelUsage(provider="espeak", model="en-us", characters_count=50, audio_duration=2.5),
            LLMModelUsage(provider="rules", model="rules", input_tokens=7, output_tokens=3),
        ]
    )
    assert deltas.update(second) == [
        ProviderUsage("tts", "espeak/en-us", audio_s=0.5, characters=10),
        ProviderUsage("llm", "rules/rules", prompt_tokens=7, completion_tokens=3),
    ]


def test_turn_timing_takes_the_callers_side_from_their_message() -> None:
    timing = TurnTiming.from_reports(
        {"end_of_turn_delay": 0.21, "transcription_delay": 0.05},
        {"llm_node_ttft": 0.002, "tts_node_ttfb": 0.02, "e2e_latency": 0.25},
    )
    assert timing == TurnTiming(
        end_of_turn_s=0.21, transcription_s=0.05, llm_ttft_s=0.002, tts_ttfb_s=0.02, e2e_s=0.25
    )
    assert TurnTiming.from_reports(None, {"e2e_latency": 0.3}) == TurnTiming(e2e_s=0.3)


class _Broken:
    def session_ended(self, session: SessionLabels, end: SessionEnd) -> None:
        raise RuntimeError("boom")


class _Recorder:
    def __init__(self) -> None:
        self.ended: list[SessionEnd] = []

    def session_ended(self, session: SessionLabels, end: SessionEnd) -> None:
        self.ended.append(end)


def test_a_failing_observer_is_logged_and_the_others_still_hear() -> None:
    recorder = _Recorder()
    observers = Observers([_Broken(), recorder])  # type: ignore[list-item]  # only session_ended is called
    with capture_logs() as logs:
        observers.session_ended(LABELS, SessionEnd("stopped", 1.0))
    assert recorder.ended == [SessionEnd("stopped", 1.0)]
    assert [entry["event"] for entry in logs] == ["observer_failed"]
    assert logs[0]["observer"] == "_Broken"
