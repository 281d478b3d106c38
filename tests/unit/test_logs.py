"""Logs are key-value events and never carry a secret."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from aiohttp.http_exceptions import LineTooLong

from voicebot.logs import configure_logging, mask_numbers, mask_phone
from voicebot.sessions.session import new_session_id


def test_events_render_as_json_lines_with_bound_context() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream, cache_loggers=False)

    structlog.contextvars.bind_contextvars(room="voicebot_a_1")
    try:
        structlog.get_logger("t").info("room_created", agent="a")
    finally:
        structlog.contextvars.clear_contextvars()

    event = json.loads(stream.getvalue().splitlines()[-1])
    assert (event["event"], event["room"], event["agent"], event["level"]) == (
        "room_created",
        "voicebot_a_1",
        "a",
        "info",
    )


def test_tokens_and_secrets_are_redacted() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream, cache_loggers=False)

    structlog.get_logger("t").info("token_minted", token="eyJsecret", api_secret="hunter2hunter2")

    line = stream.getvalue()
    assert "eyJsecret" not in line
    assert "hunter2" not in line
    assert json.loads(line.splitlines()[-1])["token"] == "[redacted]"


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("+15550123", "+155****23"),
        ("+441632960961", "+441****61"),
        ("+4312", "+4****"),
        ("sip_+15550123", "sip_+155****23"),
        ("15550123", "155****23"),
        ("alice", "a****"),
        ("sip_sipp", "sip_s****"),
        ("", ""),
    ],
)
def test_phone_numbers_are_masked_to_a_prefix_and_the_last_two_digits(value: str, masked: str) -> None:
    assert mask_phone(value) == masked


def test_a_number_anywhere_in_a_log_line_is_masked() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream, cache_loggers=False)

    structlog.get_logger("t").info(
        "call_placed",
        room="voicebot_agent-123_+15550123_Ab3x",
        reason="dialled 441632960961",
        id="SS_3f9a1c2e",
    )

    event = json.loads(stream.getvalue().splitlines()[-1])
    assert event["room"] == "voicebot_agent-123_+155****23_Ab3x"
    assert event["reason"] == "dialled 441****61"
    assert event["id"] == "SS_3f9a1c2e"


def teardown_function() -> None:
    logging.getLogger().handlers.clear()
    structlog.reset_defaults()


def test_a_request_aiohttp_cannot_parse_is_one_warning_without_traceback_or_its_bytes() -> None:
    """Regression: an oversized header logged aiohttp's traceback and the header's first 100 bytes."""
    stream = io.StringIO()
    configure_logging("info", "json", stream, cache_loggers=False)
    try:
        raise LineTooLong(b"Authorization: Bearer s3cr3t-key", "8190")
    except LineTooLong as exc:
        # What aiohttp's RequestHandler.handle_error does with a parser error.
        logging.getLogger("aiohttp.server").exception(
            "Error handling request from %s", "127.0.0.1", exc_info=exc
        )

    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert (event["event"], event["level"], event["status"], event["reason"]) == (
        "http_request_rejected",
        "warning",
        400,
        "LineTooLong",
    )
    assert "s3cr3t" not in lines[0]
    assert "Traceback" not in lines[0]


def test_session_ids_are_never_taken_for_phone_numbers() -> None:
    ids = {new_session_id() for _ in range(2000)}

    assert len(ids) == 2000
    assert all(mask_numbers(session_id) == session_id for session_id in ids)
    assert mask_numbers("SS_945692998022") != "SS_945692998022", "the form hex ids could take"
