"""JSON errors for every failure, and one log event per request."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from voicebot.api.app_keys import SETTINGS
from voicebot.errors import VoicebotError

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A request the API refuses, with its HTTP status, a stable code and a message for people."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The one shape every error takes: {"error": {"code", "message"}}."""
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


_HTTP_CODES = {
    404: ("not_found", "no such endpoint"),
    405: ("method_not_allowed", "this endpoint does not accept that method"),
    413: ("body_too_large", "the request body is too large"),
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error; a stack trace never leaves the process."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except VoicebotError as exc:
        log.warning("request_failed", code=exc.code, reason=exc.log_reason)
        retry_after_s = exc.retry_after_s or request.app[SETTINGS].sessions.retry_after_s
        headers = {"Retry-After": str(retry_after_s)} if exc.retry_later or exc.retry_after_s else None
        return error_response(exc.status, exc.code, str(exc), headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _HTTP_CODES.get(exc.status, ("http_error", exc.reason))
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, code, message, headers)
    except Exception:
        log.exception("request_crashed")
        return error_response(500, "internal_error", "the server failed to handle this request")


@web.middleware
async def request_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One event per request, with its status and duration."""
    started = time.perf_counter()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(method=request.method, path=request.path)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        log.info("request_handled", status=status, duration_ms=duration_ms)
        structlog.contextvars.clear_contextvars()
