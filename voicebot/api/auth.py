"""API keys: every /api endpoint asks for `Authorization: Bearer <key>` once keys are configured."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from collections.abc import Sequence

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from voicebot.api.app_keys import STATE
from voicebot.api.errors import ApiError
from voicebot.api.paths import (
    AGENTS_PATH,
    CREATE_ROOM_PATH,
    HEALTH_PATH,
    METRICS_PATH,
    OPENAPI_PATH,
    WEBHOOK_PATH,
)
from voicebot.config import Settings

log = structlog.get_logger(__name__)

# The caller's key by its fingerprint (never the key), for per-key limits; ANONYMOUS without one.
API_KEY_ID = web.RequestKey("api_key_id", str)
ANONYMOUS = "anonymous"
# True when no keys are configured or the request carried a valid one: health shows its detail.
AUTHENTICATED = web.RequestKey("authenticated", bool)

# What `[auth] public_create_room` opens to anonymous callers.
PUBLIC_ROUTES = frozenset({("POST", CREATE_ROOM_PATH), ("GET", AGENTS_PATH)})
RATE_WINDOW_S = 60.0
# Clients the rate limiter remembers at once; the least recently seen are forgotten first.
MAX_TRACKED_CLIENTS = 10_000

# Under /api, open to anyone: LiveKit's signed webhook, health (reduced without a key), and the OpenAPI
# document, which says nothing the README does not (clients read it before they hold a key).
OPEN_API_PATHS = frozenset({WEBHOOK_PATH, HEALTH_PATH, OPENAPI_PATH})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def needs_key(path: str) -> bool:
    """Whether a request for `path` needs a valid key once keys are configured (public_create_room aside).

    Besides /api, the metrics: they tell how busy the service is and how it fails, which is for operators.
    """
    return path == METRICS_PATH or (path.startswith("/api/") and path not in OPEN_API_PATHS)


def key_id(key: str) -> str:
    """A short fingerprint that names a key in logs and limits without revealing it."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def matching_key(presented: str, keys: Sequence[str]) -> str | None:
    """The configured key equal to `presented`, compared in constant time against every key."""
    found = None
    for key in keys:
        # No early exit: the time taken says nothing about which key, or how much of one, matched.
        if hmac.compare_digest(presented.encode(), key.encode()):
            found = key
    return found


def bearer_token(request: web.Request) -> str | None:
    """The token of an `Authorization: Bearer` header; "" for another scheme, None with no header."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def is_authenticated(request: web.Request) -> bool:
    """Whether the caller may see detail: no keys are configured, or it sent a valid one."""
    return bool(request.get(AUTHENTICATED, False))


def _in_networks(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_ip(request: web.Request, trusted_proxies: Sequence[Network]) -> str:
    """The caller's address: the peer's, or from X-Forwarded-For when the peer is a trusted proxy.

    X-Forwarded-For is read from the right, past the trusted proxies, since anything to the left of
    them is whatever the client chose to write.
    """
    peer = request.remote or ""
    if not _in_networks(peer, trusted_proxies):
        return peer
    hops = [
        hop.strip()
        for header in request.headers.getall("X-Forwarded-For", [])
        for hop in header.split(",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        if not _in_networks(hop, trusted_proxies):
            return hop
    return hops[0] if hops else peer


def _set_key_id(request: web.Request, value: str) -> None:
    request[API_KEY_ID] = value


def auth_middleware(settings: Settings) -> Middleware:
    """401 without a valid key where needs_key() asks for one: /api (but its open paths) and /metrics."""
    auth = settings.auth
    keys = auth.api_keys
    proxies = [ipaddress.ip_network(proxy, strict=False) for proxy in settings.server.trusted_proxies]

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        _set_key_id(request, ANONYMOUS)
        request[AUTHENTICATED] = not keys
        if not keys:
            # Without keys voicebot refuses to serve anywhere but loopback (exposure.py).
            return await handler(request)
        token = bearer_token(request)
        key = matching_key(token, keys) if token else None
        if key is not None:
            _set_key_id(request, key_id(key))
            request[AUTHENTICATED] = True
            return await handler(request)
        path = request.path
        if not needs_key(path):
            return await handler(request)
        if token is None and auth.public_create_room and (request.method, path) in PUBLIC_ROUTES:
            if path == CREATE_ROOM_PATH:
                # Counted in the shared state, so the limit holds across every voicebot process.
                limit = auth.create_room_per_minute
                wait_s = await request.app[STATE].hit_rate(
                    f"create_room:{client_ip(request, proxies)}", limit, RATE_WINDOW_S
                )
                if wait_s is not None:
                    log.info("request_rate_limited", limit_per_minute=limit)
                    raise ApiError(
                        429,
                        "rate_limited",
                        f"at most {limit} rooms a minute may be created without an API key",
                        headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
                    )
            return await handler(request)
        log.info("request_unauthorized", reason="no_key" if token is None else "wrong_key")
        raise ApiError(
            401,
            "unauthorized",
            "this endpoint needs an API key: send Authorization: Bearer <key>"
            if token is None
            else "the API key was not accepted",
            headers={hdrs.WWW_AUTHENTICATE: "Bearer"},
        )

    return middleware
