"""Reading and validating JSON request bodies."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from voicebot.api.app_keys import SETTINGS
from voicebot.api.errors import ApiError
from voicebot.config import IDENTIFIER_PATTERN


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; 413 over the size limit, 400 for anything that is not an object."""
    limit = request.app[SETTINGS].server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit) from None
    if not raw.strip():
        raise ApiError(400, "invalid_json", "the request body is empty; send a JSON object")
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc.msg}") from None
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "the request body is not UTF-8 text") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    return body


def require_identifier(body: dict[str, Any], field: str) -> str:
    """A required string field made of 1 to 64 letters, digits, '_' or '-'."""
    if field not in body:
        raise ApiError(400, "missing_field", f"the field {field!r} is required")
    value = body[field]
    if not isinstance(value, str) or not IDENTIFIER_PATTERN.fullmatch(value):
        raise ApiError(
            400,
            "invalid_field",
            f"the field {field!r} must be 1 to 64 letters, digits, '_' or '-'",
        )
    return value


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body is larger than {limit} bytes")
