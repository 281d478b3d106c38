"""publish_delay: the agent's voice waits out the newest participant's negotiation window, and no longer."""

from __future__ import annotations

import pytest

from voicebot.sessions.negotiation import NEGOTIATION_INTERVAL_S, publish_delay

NOW = 1_800_000_000.0


def test_an_empty_room_publishes_at_once() -> None:
    assert publish_delay([], NOW) == 0.0


def test_a_person_who_joined_just_now_holds_the_voice_to_the_end_of_their_window() -> None:
    assert publish_delay([NOW - 0.05], NOW) == pytest.approx(NEGOTIATION_INTERVAL_S - 0.05, abs=1e-6)


def test_only_the_newest_join_counts() -> None:
    held = publish_delay([NOW - 30.0, NOW - 0.1, NOW - 2.0], NOW)
    assert held == pytest.approx(NEGOTIATION_INTERVAL_S - 0.1, abs=1e-6)


def test_a_window_that_has_passed_holds_nothing() -> None:
    assert publish_delay([NOW - NEGOTIATION_INTERVAL_S - 0.001], NOW) == 0.0
    assert publish_delay([NOW - 60.0], NOW) == 0.0


def test_a_join_ahead_of_our_clock_holds_one_window_at_most() -> None:
    assert publish_delay([NOW + 5.0], NOW) == NEGOTIATION_INTERVAL_S
