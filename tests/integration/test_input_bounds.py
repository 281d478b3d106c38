"""Hostile input gets a 4xx, never a 500: deep or huge JSON, odd numbers, wrong field types, huge headers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestClient

from tests.integration.test_api_errors import expect_error
from tests.servers import free_livekit_ports
from tests.voicebot_process import VoicebotProcess, serve_env, start_voicebot
from voicebot.livekit import LiveKitGateway

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]

CREATE_ROOM = "/api/livekit/create-room"
JOB_NOTIFICATION = "/api/livekit/job-notification"
CALLS = "/api/calls"


def deep(levels: int) -> bytes:
    """A create-room body nested `levels` deep, with a valid agent id."""
    return b'{"agent_id": "agent-123", "x": ' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    """Fails the test if anything logged an exception, through structlog or the standard library."""
    return _no_tracebacks(caplog)


async def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    with structlog.testing.capture_logs() as events:
        yield
    crashed = [e for e in events if e.get("exc_info") or e["log_level"] in ("error", "critical")]
    assert not crashed, crashed
    with_traceback = [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not with_traceback, with_traceback


@pytest.mark.usefixtures("no_tracebacks")
@pytest.mark.parametrize(
    ("raw_body", "says"),
    [
        pytest.param(deep(33), "33 levels", id="nested-33-levels"),
        pytest.param(deep(5000), "5000 levels", id="nested-5000-levels"),
        pytest.param(b'{"agent_id": "agent-123", "n": ' + b"1" * 10_000 + b"}", "64 bits", id="10000-digits"),
        pytest.param(b'{"agent_id": "agent-123", "n": 1e400}', "64-bit float", id="1e400"),
        pytest.param(b'{"agent_id": "agent-123", "n": NaN}', "NaN", id="nan"),
        pytest.param(b'{"agent_id": "agent-123", "n": -Infinity}', "-Infinity", id="minus-infinity"),
        pytest.param(b'{"agent_id": "agent-123", "n": 18446744073709551616}', "64 bits", id="2-to-the-64"),
    ],
)
async def test_bodies_out_of_bounds_get_400_invalid_json_and_no_room(
    client: Client, livekit: LiveKitGateway, raw_body: bytes, says: str
) -> None:
    """Regression: a deeply nested body or a 10,000-digit number got a 500 with a stack trace in the log."""
    rooms_before = await livekit.room_names()

    response = await client.post(CREATE_ROOM, data=raw_body, headers={"Content-Type": "application/json"})

    body = await expect_error(response, 400, "invalid_json")
    assert says in body["error"]["message"]
    assert await livekit.room_names() - rooms_before == set(), "no new room"


@pytest.mark.usefixtures("no_tracebacks")
@pytest.mark.parametrize(
    ("path", "body", "code", "field"),
    [
        (CREATE_ROOM, {"agent_id": []}, "invalid_field", "agent_id"),
        (CREATE_ROOM, {"agent_id": {"id": "agent-123"}}, "invalid_field", "agent_id"),
        (CREATE_ROOM, {"agent_id": None}, "invalid_field", "agent_id"),
        (CREATE_ROOM, {"agent_id": True}, "invalid_field", "agent_id"),
        (CREATE_ROOM, {"agent_id": 1.5}, "invalid_field", "agent_id"),
        (JOB_NOTIFICATION, {"agent_id": [], "room_name": "r"}, "invalid_field", "agent_id"),
        (JOB_NOTIFICATION, {"agent_id": "agent-123", "room_name": 5}, "invalid_field", "room_name"),
        (JOB_NOTIFICATION, {"agent_id": "agent-123", "room_name": ["r"]}, "invalid_field", "room_name"),
        (JOB_NOTIFICATION, {"agent_id": "agent-123"}, "missing_field", "room_name"),
        (CALLS, {"agent_id": "agent-123", "to": 5}, "invalid_field", "to"),
        (CALLS, {"agent_id": "agent-123", "to": ["+15550100"]}, "invalid_field", "to"),
        (CALLS, {"agent_id": [], "to": "+15550100"}, "invalid_field", "agent_id"),
        (CALLS, {"agent_id": "agent-123", "to": "+15550100", "trunk": []}, "invalid_field", "trunk"),
        (CALLS, {"agent_id": "agent-123", "to": "+15550100", "trunk": None}, "invalid_field", "trunk"),
        (CALLS, {"agent_id": "agent-123"}, "missing_field", "to"),
    ],
)
async def test_fields_of_the_wrong_type_get_400_naming_the_field(
    client: Client, path: str, body: dict[str, Any], code: str, field: str
) -> None:
    """`POST /api/calls` checks its whole body before saying SIP is off, so these are 400s, not 409s."""
    response = await client.post(path, json=body)

    error = await expect_error(response, 400, code)
    assert repr(field) in error["error"]["message"]


@pytest.fixture(scope="module")
async def served() -> AsyncIterator[VoicebotProcess]:
    """`python -m voicebot serve` with its own LiveKit: the HTTP parser and logging a user really gets."""
    bot = await start_voicebot(**serve_env(free_livekit_ports()))
    yield bot
    await bot.stop()


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"X-Padding": "a" * 9000}, id="one-9000-byte-header"),
        pytest.param({"Authorization": "Bearer " + "k" * 9000}, id="9000-byte-authorization"),
        pytest.param({f"X-H{i}": "1" for i in range(200)}, id="200-headers"),
    ],
)
async def test_oversized_headers_get_400_and_one_log_line_without_traceback(
    served: VoicebotProcess, headers: dict[str, str]
) -> None:
    """aiohttp answers these itself, before any middleware: a text/plain 400 is all it allows (see README)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{served.base}/api/agents", headers=headers) as response,
    ):
        await response.read()
        assert response.status == 400

    log_text = served.log_path.read_text(errors="replace")
    assert "Traceback" not in log_text
    assert "k" * 100 not in log_text
    rejected = [e for e in served.log_events() if e["event"] == "http_request_rejected"]
    assert rejected
    assert all(e["level"] == "warning" for e in rejected)


async def test_an_oversized_url_gets_400(served: VoicebotProcess) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{served.base}/api/sessions/{'r' * 9000}/transcript") as response,
    ):
        await response.read()
        assert response.status == 400
    assert "Traceback" not in served.log_path.read_text(errors="replace")
