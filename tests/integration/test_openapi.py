"""The OpenAPI document is valid, names exactly the routes the app has, and the app answers as it says."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from voicebot.api.openapi import DOCUMENT
from voicebot.api.paths import OPENAPI_PATH, OPS_HISTORY_PATH
from voicebot.app import create_app
from voicebot.config import Settings

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]

DOCUMENT_URI = "urn:voicebot:openapi"
REGISTRY: Registry[Any] = Registry().with_resource(DOCUMENT_URI, DRAFT202012.create_resource(DOCUMENT))


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    validate(DOCUMENT)


def routes_of(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route, without HEAD: aiohttp adds it to each GET by itself."""
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info["formatter"]
        # aiohttp writes a regex-constrained variable as {path:.+}; OpenAPI names it {path}.
        path = path.replace("{path:.+}", "{path}")
        if route.method != "HEAD":
            routes.add((route.method, path))
    return routes


def test_the_document_lists_every_route_the_app_has_and_no_other(settings: Settings) -> None:
    documented = {(method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item}

    assert documented == routes_of(create_app(settings))


def test_every_operation_answers_errors_in_the_shared_shape() -> None:
    """All but the health report's 503, which is the report itself, saying what is down."""
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            for status in operation["responses"]:
                if int(status) >= 400 and (path, status) != ("/api/livekit/health", "503"):
                    schema = response_schema(path, method, int(status))
                    assert "#/components/schemas/Error" in repr(schema), (method, path, status)


def test_open_endpoints_say_so_and_the_rest_need_the_bearer_key() -> None:
    assert DOCUMENT["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": DOCUMENT["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert DOCUMENT["security"] == [{"bearer": []}]
    open_paths = {
        path
        for path, item in DOCUMENT["paths"].items()
        for operation in item.values()
        if {} in operation.get("security", [{"bearer": []}]) or operation.get("security") == []
    }
    assert open_paths == {
        "/",
        "/ops",
        "/static/{path}",
        "/healthz",
        "/readyz",
        "/api/livekit/health",
        "/api/livekit/webhook",
        OPENAPI_PATH,
    }


def response_schema(path: str, method: str, status: int) -> Any:
    """The JSON schema the document gives for this answer."""
    response = DOCUMENT["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = DOCUMENT["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return response["content"]["application/json"]["schema"]


def assert_documented(path: str, method: str, status: int, body: Any) -> None:
    """The answer's status is documented for the operation and its body fits the documented schema."""
    assert str(status) in DOCUMENT["paths"][path][method]["responses"], (method, path, status, body)
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": {}}
    schema |= _rebased(response_schema(path, method, status))
    jsonschema.Draft202012Validator(schema, registry=REGISTRY).validate(body)


def _rebased(schema: Any) -> Any:
    """`schema` with its local $refs pointed into the document held by REGISTRY."""
    if isinstance(schema, dict):
        return {k: (f"{DOCUMENT_URI}{v}" if k == "$ref" else _rebased(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_rebased(v) for v in schema]
    return schema


async def test_the_document_is_served_without_a_key(client: Client) -> None:
    response = await client.get(OPENAPI_PATH)

    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == DOCUMENT


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/api/agents", None),
        ("get", "/api/sessions", None),
        ("get", OPS_HISTORY_PATH, None),
        ("get", "/healthz", None),
        ("get", "/readyz", None),
        ("get", "/api/livekit/health", None),
        ("post", "/api/livekit/health", None),
        ("post", "/api/livekit/create-room", {"agent_id": "agent-123"}),
        ("post", "/api/livekit/create-room", {"agent_id": "nobody"}),
        ("post", "/api/livekit/create-room", {"agent_id": []}),
        ("post", "/api/livekit/job-notification", {"agent_id": "agent-123", "room_name": "no-such-room"}),
        ("post", "/api/calls", {"agent_id": "agent-123", "to": "+15550100"}),
        ("post", "/api/livekit/webhook", {"event": "room_started"}),
        ("delete", "/api/sessions/{room_name}", None),
        ("get", "/api/sessions/{room_name}/transcript", None),
    ],
)
async def test_real_answers_fit_the_documented_schema(
    client: Client, method: str, path: str, body: Any
) -> None:
    url = path.replace("{room_name}", "no-such-room")

    response = await client.request(method.upper(), url, json=body)

    assert response.content_type == "application/json"
    assert_documented(path, method, response.status, await response.json())


async def test_a_live_session_and_its_transcript_fit_the_documented_schema(client: Client) -> None:
    created = await client.post("/api/livekit/create-room", json={"agent_id": "agent-123"})
    room = (await created.json())["room_name"]

    listed = await client.get("/api/sessions")
    assert_documented("/api/sessions", "get", listed.status, await listed.json())
    transcript = await client.get(f"/api/sessions/{room}/transcript")
    assert_documented(
        "/api/sessions/{room_name}/transcript", "get", transcript.status, await transcript.json()
    )
    stopped = await client.delete(f"/api/sessions/{room}")
    assert_documented("/api/sessions/{room_name}", "delete", stopped.status, await stopped.json())
    assert stopped.status == 200
