"""The records the stores speak: what they write reads back the same, and nothing else reads at all."""

from __future__ import annotations

import json

import pytest

from voicebot.store.base import InvalidRecord, SessionRecord, StartJob, StopJob, job_from_json

ENDED = SessionRecord(
    session_id="SS_1",
    room_name="room-1",
    agent_id="faq",
    identity="agent-faq-1",
    started_at=1.5,
    process_id="p1",
    state="ended",
    ended_at=2.5,
    end_reason="call_ended",
)


def test_a_session_record_reads_back_from_its_json_unchanged() -> None:
    assert SessionRecord.from_json(json.loads(json.dumps(ENDED.to_json()))) == ENDED


def test_a_session_record_keeps_the_keys_the_api_has_always_shown() -> None:
    assert list(ENDED.to_json()) == [
        "session_id",
        "room_name",
        "agent_id",
        "identity",
        "started_at",
        "process_id",
        "state",
        "ended_at",
        "end_reason",
        "error",
    ]


@pytest.mark.parametrize(
    ("key", "value", "complaint"),
    [
        ("state", "dozing", "unknown session state"),
        ("end_reason", "bored", "unknown end reason"),
        ("started_at", "yesterday", "must be a number"),
        ("started_at", True, "must be a number"),
        ("room_name", None, "must be a string"),
    ],
)
def test_a_session_record_of_another_shape_is_refused(key: str, value: object, complaint: str) -> None:
    with pytest.raises(InvalidRecord, match=complaint):
        SessionRecord.from_json({**ENDED.to_json(), key: value})


def test_jobs_read_back_from_their_json_unchanged() -> None:
    start = StartJob(room_name="a", agent_id="faq", owns_room=True, phone_call=False)
    stop = StopJob(room_name="a", reason="call_not_answered")

    assert [job_from_json(json.loads(json.dumps(job.to_json()))) for job in (start, stop)] == [start, stop]


def test_a_stop_job_without_a_reason_is_a_plain_stop() -> None:
    assert job_from_json({"action": "stop", "room_name": "a"}) == StopJob(room_name="a", reason="stopped")


@pytest.mark.parametrize(
    "job",
    [
        {"action": "stop", "room_name": "a", "reason": "bored"},
        {"action": "restart", "room_name": "a"},
        {"action": "start", "room_name": "a", "agent_id": "faq"},
        ["start"],
    ],
)
def test_a_job_of_another_shape_is_refused(job: object) -> None:
    with pytest.raises(InvalidRecord):
        job_from_json(job)
