"""Reading and validating JSON request bodies."""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

from aiohttp import web

from voicebot.api.app_keys import SETTINGS
from voicebot.api.errors import ApiError
from voicebot.config import IDENTIFIER_PATTERN

MAX_DEPTH = 32
"""The deepest nesting of objects and arrays a body may have; the API's own bodies are one level deep."""

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Longest decimal digit string an int64 can need; anything longer is refused before int() sees it, since
# Python's int-from-string limit (4300 digits) would otherwise raise a ValueError nobody expects here.
_INT64_DIGITS = len(str(INT64_MAX))

# The depth scan stops at a quote, a bracket, or an escape with the character after it (so `\"` is skipped).
_DEPTH_TOKENS = re.compile(r'\\.|["\[\]{}]', re.DOTALL)

IDENTIFIER_DESCRIPTION = "1 to 64 letters, digits, '_' or '-'"


class _Refused(Exception):
    """A body json.loads would accept but the API does not; carries the message for people."""


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; 413 over the size limit, 400 for anything that is not an object."""
    limit = request.app[SETTINGS].server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit) from None
    return parse_json_object(raw)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """`raw` as a JSON object of at most MAX_DEPTH levels with numbers a float or an int64 can hold.

    Raises ApiError 400 `invalid_json` for anything else, never RecursionError or ValueError.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("the request body is not UTF-8 text") from None
    if not text.strip():
        raise _invalid("the request body is empty; send a JSON object")
    # Checked before parsing: the parser recurses once per level and would hit Python's recursion limit.
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise _invalid(f"the request body nests {depth} levels deep; at most {MAX_DEPTH} are accepted")
    try:
        body = json.loads(
            text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant
        )
    except json.JSONDecodeError as exc:
        raise _invalid(f"the request body is not valid JSON: {exc.msg}") from None
    except _Refused as exc:
        raise _invalid(f"the request body {exc}") from None
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object")
    return body


def nesting_depth(text: str) -> int:
    """How deeply objects and arrays nest in JSON `text`, counted without recursing.

    Brackets inside strings do not count; for text that is not JSON the count is a guess, which is
    fine, since json.loads refuses such text after.
    """
    depth = deepest = 0
    in_string = False
    for match in _DEPTH_TOKENS.finditer(text):
        char = match.group()
        if char == '"':
            in_string = not in_string
        elif in_string or char.startswith("\\"):
            continue
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _parse_int(literal: str) -> int:
    digits = len(literal.lstrip("-"))
    if digits > _INT64_DIGITS:
        raise _Refused(f"has an integer of {digits} digits; integers must fit in 64 bits")
    value = int(literal)
    if not INT64_MIN <= value <= INT64_MAX:
        raise _Refused(f"has the integer {literal}, outside the 64-bit range")
    return value


def _parse_float(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        shown = literal if len(literal) <= 32 else f"{literal[:32]}..."
        raise _Refused(f"has the number {shown}, too large for a 64-bit float")
    return value


def _refuse_constant(literal: str) -> NoReturn:
    raise _Refused(f"has {literal}, which is not JSON; numbers must be finite")


def require_identifier(body: dict[str, Any], field: str) -> str:
    """A required string field made of 1 to 64 letters, digits, '_' or '-'."""
    return require_string(body, field, IDENTIFIER_PATTERN, IDENTIFIER_DESCRIPTION)


def optional_identifier(body: dict[str, Any], field: str) -> str | None:
    """Like require_identifier, but None when the body lacks the field."""
    return require_identifier(body, field) if field in body else None


def require_string(body: dict[str, Any], field: str, pattern: re.Pattern[str], description: str) -> str:
    """A required string field matching `pattern` whole; `description` says what it should be."""
    if field not in body:
        raise ApiError(400, "missing_field", f"the field {field!r} is required")
    value = body[field]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ApiError(400, "invalid_field", f"the field {field!r} must be {description}")
    return value


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_json", message)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body is larger than {limit} bytes")
