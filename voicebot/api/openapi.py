"""GET /api/openapi.json: the OpenAPI 3.1 document of every endpoint, built from the code it describes."""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any, get_args

from aiohttp import web

from voicebot import __version__
from voicebot.api.app_keys import SETTINGS
from voicebot.api.body import INT64_MAX, INT64_MIN, MAX_DEPTH
from voicebot.api.calls import CALLEE_PATTERN
from voicebot.api.paths import METRICS_PATH, OPENAPI_PATH, OPS_HISTORY_PATH
from voicebot.config import IDENTIFIER_PATTERN
from voicebot.monitoring.history import (
    BUCKETS,
    EndedSession,
    HistorySnapshot,
    HourStats,
    LatencyStats,
    MinuteBucket,
)
from voicebot.sessions.admission import Capacity, RefusalReason
from voicebot.store.base import EndReason, SessionRecord, SessionState

Schema = dict[str, Any]

# Open to anyone, whatever [auth] says: probes, LiveKit's signed webhooks, the page, and this document.
PUBLIC: list[dict[str, list[str]]] = []
# Open, but a caller with a key may get more (the health report is minimal without one).
KEY_OPTIONAL: list[dict[str, list[str]]] = [{}, {"bearer": []}]

JSON = "application/json"


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _schema(name: str) -> Schema:
    return _ref("schemas", name)


def _pattern(compiled: re.Pattern[str]) -> str:
    # The handlers fullmatch; the document anchors instead, as JSON Schema patterns search.
    return f"^{compiled.pattern}$"


def _json(schema: Schema, description: str, headers: dict[str, Schema] | None = None) -> Schema:
    response: Schema = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, codes: list[str], headers: dict[str, Schema] | None = None) -> Schema:
    schema = {
        "allOf": [
            _schema("Error"),
            {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
        ]
    }
    return _json(schema, description, headers)


_RETRY_AFTER: dict[str, Schema] = {
    "Retry-After": {
        "description": "Seconds to wait before trying again, when the failure passes by itself.",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}

IDENTIFIER: Schema = {
    "type": "string",
    "pattern": _pattern(IDENTIFIER_PATTERN),
    "description": "1 to 64 letters, digits, '_' or '-'.",
}

# What an unknown field of a request body may hold: anything JSON, within the bounds body.py enforces.
JSON_VALUE: Schema = {
    "description": (
        f"Any JSON value, nested at most {MAX_DEPTH} levels deep in the whole body, with integers within"
        " 64 bits and finite numbers a 64-bit float holds."
    ),
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "string"},
        {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
        {"type": "number", "minimum": -1.7976931348623157e308, "maximum": 1.7976931348623157e308},
        {"type": "array", "items": _schema("JsonValue")},
        {"type": "object", "additionalProperties": _schema("JsonValue")},
    ],
}


def _body(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """A request body object: these fields; others are allowed and ignored, as the handlers do."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
        "additionalProperties": _schema("JsonValue"),
    }


SESSION_RECORD: Schema = {
    "type": "object",
    # Every field of the record the API returns, named once, where the record is defined.
    "required": [field.name for field in fields(SessionRecord)],
    "properties": {
        "session_id": {"type": "string"},
        "room_name": {"type": "string"},
        "agent_id": {"type": "string"},
        "identity": {"type": "string", "description": "The agent's participant identity in the room."},
        "started_at": {"type": "number", "description": "Unix time."},
        "process_id": {"type": "string", "description": "The voicebot process running the agent."},
        "state": {"enum": list(get_args(SessionState))},
        "ended_at": {"type": ["number", "null"]},
        "end_reason": {"enum": [*get_args(EndReason), None]},
        "error": {"type": ["string", "null"]},
    },
}


def _record(record: type, properties: dict[str, Schema]) -> Schema:
    """An answer's record: exactly the keys of the TypedDict the handler returns, no more."""
    keys = list(record.__annotations__)
    if list(properties) != keys:
        # At import, so a field added to the record without its documentation stops every test run.
        raise TypeError(f"{record.__name__}: documented {list(properties)}, returned {keys}")
    return {"type": "object", "required": keys, "properties": properties, "additionalProperties": False}


SECONDS_OR_NONE: Schema = {
    "type": ["number", "null"],
    "minimum": 0,
    "description": "Seconds; null without samples.",
}

OPS_SCHEMAS: dict[str, Schema] = {
    "LatencyStats": _record(
        LatencyStats,
        {
            "count": {"type": "integer", "minimum": 0},
            "p50": SECONDS_OR_NONE,
            "p95": SECONDS_OR_NONE,
        },
    ),
    "MinuteBucket": _record(
        MinuteBucket,
        {
            "start": {"type": "number", "description": "Unix time of the minute's first second."},
            "first_word": {
                **_schema("LatencyStats"),
                "description": "From asking for a session to its greeting's first audio frame.",
            },
            "turn": {
                **_schema("LatencyStats"),
                "description": "From the end of the caller's speech to the reply's first audio.",
            },
            "live_sessions": {
                "type": "integer",
                "minimum": 0,
                "description": "The most sessions live at once in this process during the minute.",
            },
        },
    ),
    "EndedSession": _record(
        EndedSession,
        {
            "session_id": {"type": "string"},
            "room_name": {"type": "string"},
            "agent_id": {"type": "string"},
            "phone_call": {"type": "boolean"},
            "end_reason": {"enum": list(get_args(EndReason))},
            "ended_at": {"type": "number", "description": "Unix time."},
            "duration_s": {"type": "number", "minimum": 0},
            "error": {"type": ["string", "null"], "description": "What failed, for end reason `failed`."},
        },
    ),
    "OpsHistory": _record(
        HistorySnapshot,
        {
            "now": {"type": "number", "description": "This process's clock, Unix time."},
            "bucket_s": {"type": "integer", "description": "Each bucket's length in seconds."},
            "buckets": {
                "type": "array",
                "items": _schema("MinuteBucket"),
                "minItems": BUCKETS,
                "maxItems": BUCKETS,
                "description": "The last hour, oldest first; the last is the minute under way.",
            },
            "hour": _record(
                HourStats, {"first_word": _schema("LatencyStats"), "turn": _schema("LatencyStats")}
            ),
            "live_sessions": {"type": "integer", "minimum": 0, "description": "Live in this process now."},
            "ended": {
                "type": "array",
                "items": _schema("EndedSession"),
                "description": "The last sessions this process ended, newest first.",
            },
        },
    ),
}

CAPACITY: Schema = _record(
    Capacity,
    {
        "process_id": {"type": "string", "description": "The process that answered."},
        "limit": {"type": "integer", "minimum": 1, "description": "sessions.max_concurrent of this process."},
        "live": {"type": "integer", "minimum": 0, "description": "Sessions live in this process now."},
        "admitting": {"type": "boolean", "description": "Whether this process would take a new session now."},
        "refusing_because": {
            "enum": [*get_args(RefusalReason), "limit", None],
            "description": "Why not: the loop's lag, its CPU, the machine's CPU, the offline models' queue, "
            "or the count limit; null while admitting.",
        },
        "loop_lag_ms": {
            "type": "number",
            "minimum": 0,
            "description": "Event-loop lag, 90th percentile over `window_s`.",
        },
        "loop_cpu": {
            "type": "number",
            "minimum": 0,
            "description": "The loop thread's share of a core over `window_s` (1.0: a whole core).",
        },
        "machine_cpu": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "The busy share of the machine's CPU, every process and core, over `window_s`.",
        },
        "model_wait_ms": {
            "type": "number",
            "minimum": 0,
            "description": "How long the offline models' jobs waited for a thread, 90th percentile over "
            "`window_s` (0 without offline models).",
        },
        "max_loop_lag_ms": {"type": "number", "description": "sessions.admission_max_loop_lag_ms (0: off)."},
        "max_cpu": {"type": "number", "description": "sessions.admission_max_cpu (0: off)."},
        "max_machine_cpu": {"type": "number", "description": "sessions.admission_max_machine_cpu (0: off)."},
        "max_model_wait_ms": {
            "type": "number",
            "description": "sessions.admission_max_model_wait_ms (0: off).",
        },
        "window_s": {"type": "number", "description": "sessions.admission_window_s."},
        "refused_overloaded": {
            "type": "integer",
            "minimum": 0,
            "description": "New sessions refused for the measured load since the process started.",
        },
    },
)

HEALTH_REPORT: Schema = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"enum": ["ok", "degraded", "unavailable"]},
        "process": {"type": "object"},
        "sessions": {"type": "object"},
        "capacity": _schema("Capacity"),
        "livekit": {"type": "object"},
        "sip": {"type": "object"},
        "redis": {"type": "object"},
        "cluster": {"type": "object"},
        "embedded": {"type": "object"},
    },
}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {
                    "code": {"type": "string", "description": "Stable, for programs."},
                    "message": {"type": "string", "description": "For people."},
                },
            }
        },
    },
    "Identifier": IDENTIFIER,
    "JsonValue": JSON_VALUE,
    "CreateRoomRequest": _body({"agent_id": _schema("Identifier")}),
    "CreateRoomResponse": {
        "type": "object",
        "required": ["room_name", "access_token", "livekit_url"],
        "properties": {
            "room_name": {"type": "string"},
            "access_token": {"type": "string", "description": "A LiveKit join token for this room only."},
            "livekit_url": {"type": "string"},
        },
    },
    "JobNotificationRequest": _body({"agent_id": _schema("Identifier"), "room_name": _schema("Identifier")}),
    "SessionRecord": SESSION_RECORD,
    "JobNotificationResponse": {
        "allOf": [
            _schema("SessionRecord"),
            {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"enum": ["started", "already_running"]}},
            },
        ]
    },
    "SessionList": {
        "type": "object",
        "required": ["sessions", "limit", "capacity"],
        "properties": {
            "sessions": {"type": "array", "items": _schema("SessionRecord")},
            "limit": {"type": "integer", "description": "How many sessions this process may run at once."},
            "capacity": _schema("Capacity"),
        },
    },
    "Transcript": {
        "type": "object",
        "required": ["room_name", "live", "session", "lines"],
        "properties": {
            "room_name": {"type": "string"},
            "live": {"type": "boolean"},
            "session": {"anyOf": [_schema("SessionRecord"), {"type": "null"}]},
            "lines": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["speaker", "text", "at", "metrics"],
                    "properties": {
                        "speaker": {"enum": ["user", "agent"]},
                        "text": {"type": "string"},
                        "at": {"type": "number"},
                        "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
                    },
                },
            },
        },
    },
    "AgentList": {
        "type": "object",
        "required": ["agents"],
        "properties": {
            "agents": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "name", "description"],
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "description": {"type": "string"},
                    },
                },
            }
        },
    },
    "CallRequest": _body(
        {
            "agent_id": _schema("Identifier"),
            "to": {
                "type": "string",
                "pattern": _pattern(CALLEE_PATTERN),
                "description": "A phone number such as +15550100, or a SIP user part.",
            },
        },
        {
            "trunk": {
                **IDENTIFIER,
                "description": "An outbound trunk of [[sip.outbound]]; the first by default.",
            }
        },
    ),
    "CallResponse": {
        "type": "object",
        "required": ["room_name", "call_id", "participant_identity", "session_id"],
        "properties": {
            "room_name": {"type": "string"},
            "call_id": {"type": "string"},
            "participant_identity": {"type": "string"},
            "session_id": {"type": "string"},
        },
    },
    "WebhookOutcome": {
        "type": "object",
        "required": ["event", "outcome"],
        "properties": {"event": {"type": "string"}, "outcome": {"type": "string"}},
    },
    "Capacity": CAPACITY,
    "HealthReport": HEALTH_REPORT,
    "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    **OPS_SCHEMAS,
}

# Errors several operations share; an operation lists the ones it can answer with.
RESPONSES: dict[str, Schema] = {
    "BadRequest": _error(
        "The body is not a JSON object within bounds, or a field is missing or malformed.",
        ["invalid_json", "missing_field", "invalid_field"],
    ),
    "InvalidRoomName": _error("The room name in the path is not an identifier.", ["invalid_field"]),
    "Unauthorized": _error(
        "No API key, or a key `[auth] api_keys` does not hold.",
        ["unauthorized"],
        {"WWW-Authenticate": {"description": "`Bearer`.", "schema": {"type": "string"}}},
    ),
    "ForbiddenOrigin": _error("A browser page from another origin sent the request.", ["forbidden_origin"]),
    "BodyTooLarge": _error("The body is over `server.max_body_bytes`.", ["body_too_large"]),
    "UnsupportedMediaType": _error(
        "The body is not sent as `Content-Type: application/json`.", ["unsupported_media_type"]
    ),
    "MisdirectedRequest": _error("The Host header names a server this is not.", ["misdirected_request"]),
    "RateLimited": _error("Too many requests; try again later.", ["rate_limited"], _RETRY_AFTER),
    "Unavailable": _error(
        "LiveKit or the shared state cannot be reached, or every session is in use.",
        ["livekit_unavailable", "state_unavailable", "at_capacity"],
        _RETRY_AFTER,
    ),
    "MethodNotAllowed": _error(
        "The path exists, but not with this method; `Allow` lists the methods it takes.",
        ["method_not_allowed"],
        {"Allow": {"required": True, "schema": {"type": "string"}}},
    ),
}


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Schema],
    *,
    body: str | None = None,
    example: Schema | None = None,
    security: list[dict[str, list[str]]] | None = None,
    parameters: list[Schema] | None = None,
) -> Schema:
    """One operation: `responses`, plus the answers its kind shares unless `responses` says otherwise."""
    shared: dict[str, Schema] = {"421": _ref("responses", "MisdirectedRequest")}
    if security is None or security == KEY_OPTIONAL:
        shared |= {"401": _ref("responses", "Unauthorized"), "429": _ref("responses", "RateLimited")}
    operation: Schema = {"operationId": operation_id, "summary": summary}
    if body is not None:
        media: Schema = {"schema": _schema(body)}
        if example is not None:
            media["example"] = example
        operation["requestBody"] = {"required": True, "content": {JSON: media}}
        shared |= {
            "400": _ref("responses", "BadRequest"),
            "403": _ref("responses", "ForbiddenOrigin"),
            "413": _ref("responses", "BodyTooLarge"),
            "415": _ref("responses", "UnsupportedMediaType"),
        }
    operation["responses"] = dict(sorted({**shared, **responses}.items()))
    if security is not None:
        operation["security"] = security
    if parameters:
        operation["parameters"] = parameters
    return operation


ROOM_NAME_PARAMETER: Schema = {
    "name": "room_name",
    "in": "path",
    "required": True,
    "schema": _schema("Identifier"),
}


NOT_MODIFIED: Schema = {"description": "Unchanged since the request's If-Modified-Since."}

# What a client does next with the room it was given.
ROOM_LINKS: Schema = {
    "Transcript": {"operationId": "getTranscript", "parameters": {"room_name": "$response.body#/room_name"}},
    "StopSession": {"operationId": "stopSession", "parameters": {"room_name": "$response.body#/room_name"}},
    "SendAnotherAgent": {
        "operationId": "sendAgent",
        "requestBody": {"agent_id": "faq", "room_name": "$response.body#/room_name"},
    },
}


def _health(method: str) -> Schema:
    return _operation(
        f"health{method.title()}",
        f"The health of this process, LiveKit, SIP, Redis and the embedded programs ({method})",
        {
            "200": _json(_schema("HealthReport"), "LiveKit answers; `status` is `ok` or `degraded`."),
            "503": _json(_schema("HealthReport"), "LiveKit does not answer (or is being restarted)."),
        },
        security=KEY_OPTIONAL,
    )


def _session_not_found() -> Schema:
    return _error("No session (or kept transcript) for that room.", ["session_not_found"])


PATHS: dict[str, dict[str, Schema]] = {
    "/api/livekit/create-room": {
        "post": _operation(
            "createRoom",
            "Create a room with its agent, and a token to join it",
            {
                "200": _json(_schema("CreateRoomResponse"), "The room; the agent is on its way in.")
                | {"links": ROOM_LINKS},
                "404": _error("No agent has that id.", ["unknown_agent"]),
                "503": _ref("responses", "Unavailable"),
            },
            body="CreateRoomRequest",
            # The shipped config.toml's first agent.
            example={"agent_id": "agent-123"},
        )
    },
    "/api/livekit/job-notification": {
        "post": _operation(
            "sendAgent",
            "Send an agent into a room that exists",
            {
                "200": _json(_schema("JobNotificationResponse"), "The room has that agent already."),
                "202": _json(_schema("JobNotificationResponse"), "The agent was started."),
                "404": _error(
                    "No agent has that id, or LiveKit has no such room.", ["unknown_agent", "room_not_found"]
                ),
                "503": _ref("responses", "Unavailable"),
            },
            body="JobNotificationRequest",
            example={"agent_id": "faq", "room_name": "my-room"},
        )
    },
    "/api/sessions": {
        "get": _operation(
            "listSessions",
            "The live sessions of every process",
            {
                "200": _json(_schema("SessionList"), "The live sessions."),
                "503": _ref("responses", "Unavailable"),
            },
        )
    },
    "/api/sessions/{room_name}": {
        "delete": _operation(
            "stopSession",
            "Stop the agent in a room",
            {
                "200": _json(_schema("SessionRecord"), "The agent has left; the ended session."),
                "400": _ref("responses", "InvalidRoomName"),
                "403": _ref("responses", "ForbiddenOrigin"),
                "404": _session_not_found(),
                "503": _ref("responses", "Unavailable"),
            },
            parameters=[ROOM_NAME_PARAMETER],
        )
    },
    "/api/sessions/{room_name}/transcript": {
        "get": _operation(
            "getTranscript",
            "A session's transcript, live or recently ended",
            {
                "200": _json(_schema("Transcript"), "The transcript so far."),
                "400": _ref("responses", "InvalidRoomName"),
                "404": _session_not_found(),
                "503": _ref("responses", "Unavailable"),
            },
            parameters=[ROOM_NAME_PARAMETER],
        )
    },
    OPS_HISTORY_PATH: {
        "get": _operation(
            "getOpsHistory",
            "This process's last hour of sessions, for the operator page",
            {"200": _json(_schema("OpsHistory"), "Per-minute latencies and live counts; ended sessions.")},
        )
    },
    "/api/agents": {
        "get": _operation(
            "listAgents",
            "The agents config.toml defines",
            {"200": _json(_schema("AgentList"), "Every agent.")},
        )
    },
    "/api/calls": {
        "post": _operation(
            "placeCall",
            "An agent phones someone through an outbound SIP trunk",
            {
                "201": _json(_schema("CallResponse"), "The call was answered; the agent is talking."),
                "403": _error(
                    "A browser page from another origin sent it, or the number is not one calls may go to.",
                    ["forbidden_origin", "destination_not_allowed"],
                ),
                "404": _error("No such agent or outbound trunk.", ["unknown_agent", "unknown_trunk"]),
                "409": _error("Phone calls are off (`[sip] enabled = false`).", ["sip_disabled"]),
                "429": _error(
                    "Too many requests or calls; try again later.",
                    ["rate_limited", "too_many_calls"],
                    _RETRY_AFTER,
                ),
                "502": _error(
                    "The dialled phone refused; no room or session is left.",
                    ["callee_busy", "call_declined", "number_not_found", "call_failed"],
                ),
                "503": _ref("responses", "Unavailable"),
                "504": _error("The dialled phone rang out.", ["no_answer"]),
            },
            body="CallRequest",
            example={"agent_id": "agent-123", "to": "+15550100"},
        )
    },
    "/api/livekit/webhook": {
        "post": _operation(
            "livekitWebhook",
            "LiveKit's webhook events, signed with this server's API key and secret",
            {
                "200": _json(_schema("WebhookOutcome"), "The event was verified and handled."),
                "401": _error(
                    "No LiveKit signature, or one that does not match the body or this server's key.",
                    ["unsigned_webhook", "invalid_signature"],
                ),
                "403": _ref("responses", "ForbiddenOrigin"),
                "413": _ref("responses", "BodyTooLarge"),
            },
            security=PUBLIC,
        )
        | {
            "description": "LiveKit signs each event with a JWT in the `Authorization` header; the API key"
            " plays no part.",
            "requestBody": {
                "required": True,
                "content": {"application/webhook+json": {"schema": {"type": "object"}}},
            },
        }
    },
    "/api/livekit/health": {"get": _health("GET"), "post": _health("POST")},
    "/healthz": {
        "get": _operation(
            "healthz",
            "Liveness: answers while the process lives",
            {"200": _json(_schema("Status"), "Alive.")},
            security=PUBLIC,
        )
    },
    "/readyz": {
        "get": _operation(
            "readyz",
            "Readiness: 200 only while new rooms can be served",
            {
                "200": _json(_schema("Status"), "Ready."),
                "503": _error("LiveKit, or Redis when configured, is unreachable.", ["not_ready"]),
            },
            security=PUBLIC,
        )
    },
    METRICS_PATH: {
        "get": _operation(
            "getMetrics",
            "Prometheus metrics of this process",
            {
                "200": {
                    "description": "Prometheus text format, or OpenMetrics when the Accept header asks.",
                    "content": {
                        "text/plain": {"schema": {"type": "string"}},
                        "application/openmetrics-text": {"schema": {"type": "string"}},
                    },
                }
            },
        )
        | {
            "description": "Needs the API key when keys are configured. `[metrics] port` serves the same on"
            " 127.0.0.1 without a key."
        }
    },
    OPENAPI_PATH: {
        "get": _operation(
            "getOpenApi",
            "This document",
            {"200": _json({"type": "object"}, "The OpenAPI 3.1 document of this API.")},
            security=PUBLIC,
        )
    },
    "/": {
        "get": _operation(
            "getPage",
            "The browser test page",
            {
                "200": {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}},
                "304": NOT_MODIFIED,
            },
            security=PUBLIC,
        )
    },
    "/ops": {
        "get": _operation(
            "getOpsPage",
            "The operator page: live and recent sessions, the last hour's latencies (its data needs a key)",
            {
                "200": {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}},
                "304": NOT_MODIFIED,
            },
            security=PUBLIC,
        )
    },
    "/static/{path}": {
        "get": _operation(
            "getStaticFile",
            "A file of the test page or the operator page",
            {
                "200": {"description": "The file.", "content": {"*/*": {"schema": {}}}},
                "304": NOT_MODIFIED,
                "404": _error("No such file under static/.", ["not_found"]),
            },
            security=PUBLIC,
            parameters=[
                {
                    "name": "path",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "example": "app.js",
                }
            ],
        )
    },
}

DOCUMENT: Schema = {
    "openapi": "3.1.0",
    "info": {
        "title": "voicebot",
        "version": __version__,
        "description": (
            "A self-hosted voice-agent platform on LiveKit. Every error is JSON, "
            '`{"error": {"code": "...", "message": "..."}}`; an unknown path gets 404 `not_found`, a method a'
            " path does not take gets 405 `method_not_allowed` with `Allow`. A request aiohttp's HTTP parser"
            " refuses (a header line over 8190 bytes, over 128 headers) gets aiohttp's own text/plain 400."
        ),
    },
    "security": [{"bearer": []}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "responses": RESPONSES,
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A key of `[auth] api_keys` (or VOICEBOT_AUTH_API_KEYS).",
            }
        },
    },
}


def openapi_document() -> Schema:
    """The OpenAPI 3.1 document of this API."""
    return DOCUMENT


async def openapi_json(request: web.Request) -> web.Response:
    """Serve the OpenAPI document (without /metrics when metrics are off)."""
    if request.app[SETTINGS].metrics.enabled:
        return web.json_response(DOCUMENT)
    paths = {path: item for path, item in DOCUMENT["paths"].items() if path != METRICS_PATH}
    return web.json_response({**DOCUMENT, "paths": paths})


def add_routes(app: web.Application) -> None:
    """Register the document's endpoint."""
    app.router.add_get(OPENAPI_PATH, openapi_json)
