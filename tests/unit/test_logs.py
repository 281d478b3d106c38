"""Logs are key-value events and never carry a secret."""

from __future__ import annotations

import io
import json
import logging

import structlog

from voicebot.logs import configure_logging


def test_events_render_as_json_lines_with_bound_context() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)

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
    configure_logging("info", "json", stream)

    structlog.get_logger("t").info("token_minted", token="eyJsecret", api_secret="hunter2hunter2")

    line = stream.getvalue()
    assert "eyJsecret" not in line
    assert "hunter2" not in line
    assert json.loads(line.splitlines()[-1])["token"] == "[redacted]"


def teardown_function() -> None:
    logging.getLogger().handlers.clear()
