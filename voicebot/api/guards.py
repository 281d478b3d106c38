"""Browser guards: the Host a request names, the Origin it comes from, and the media type of its body."""

from __future__ import annotations

from urllib.parse import urlsplit

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from voicebot.api.errors import ApiError
from voicebot.api.paths import HEALTH_PATH, WEBHOOK_PATH
from voicebot.config import ServerSettings

log = structlog.get_logger(__name__)

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON_MEDIA_TYPE = "application/json"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_name(host_header: str) -> str:
    """The host name of a Host header, lower case, without its port: "[::1]:8001" -> "::1"."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    name, _, port = host.rpartition(":")
    host = name if name and port.isdigit() else host
    return host.rstrip(".")


def allowed_hosts(server: ServerSettings) -> frozenset[str]:
    """The bind host, localhost, 127.0.0.1, ::1, public_url's host and [server] allowed_hosts."""
    hosts = {server.host.lower(), "localhost", "127.0.0.1", "::1"}
    if server.public_url:
        hosts.add((urlsplit(server.public_url).hostname or "").lower())
    hosts.update(host.lower().rstrip(".") for host in server.allowed_hosts)
    return frozenset(hosts - {""})


def origin_of(url: str) -> str | None:
    """scheme://host[:port] of a URL, lower case, the scheme's default port left out; None if it has none."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    shown_port = f":{port}" if port is not None and port != _DEFAULT_PORTS[parts.scheme] else ""
    return f"{parts.scheme}://{host}{shown_port}"


def host_guard(server: ServerSettings) -> Middleware:
    """421 for a Host this server does not answer for, so a rebound DNS name cannot reach the API."""
    allowed = allowed_hosts(server)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        # LiveKit posts webhooks to whatever name it was given (a compose service name); the
        # signature, not the Host, is what makes them trustworthy.
        if request.path != WEBHOOK_PATH and host_name(request.headers.get(hdrs.HOST, "")) not in allowed:
            log.info("request_refused", reason="misdirected_host")
            raise ApiError(
                421,
                "misdirected_request",
                "this server does not answer for that host name; add it to [server] allowed_hosts",
            )
        return await handler(request)

    return middleware


def origin_guard(server: ServerSettings) -> Middleware:
    """403 for a request a page of another site sends, unless [server] allowed_origins names that site."""
    allowed = {origin for origin in map(origin_of, server.allowed_origins) if origin}
    if server.public_url and (public := origin_of(server.public_url)):
        allowed.add(public)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None:
            own = origin_of(f"{request.scheme}://{request.host}")
            seen = origin_of(origin)
            if seen is None or (seen != own and seen not in allowed):
                log.info("request_refused", reason="forbidden_origin")
                raise ApiError(
                    403,
                    "forbidden_origin",
                    "requests from pages of other sites are refused; "
                    "list the site in [server] allowed_origins",
                )
        return await handler(request)

    return middleware


@web.middleware
async def content_type_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """415 for an API body that is not declared JSON: a form or text/plain is what a foreign page can send
    without asking the browser first (a CORS "simple" request)."""
    if (
        request.method in BODY_METHODS
        and request.path.startswith("/api/")
        # LiveKit sends application/webhook+json, and its signature covers the body; health reads none.
        and request.path not in (WEBHOOK_PATH, HEALTH_PATH)
        and (request.body_exists or hdrs.CONTENT_TYPE in request.headers)
    ):
        media_type = request.headers.get(hdrs.CONTENT_TYPE, "").partition(";")[0].strip().lower()
        if media_type != JSON_MEDIA_TYPE:
            raise ApiError(
                415, "unsupported_media_type", "send the body as JSON, with Content-Type: application/json"
            )
    return await handler(request)
