"""The browser pages (test page, operator page): static files with a Content-Security-Policy and caching."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from voicebot.api.app_keys import LIVEKIT

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "static"

# The vendored SDK's file name carries its pinned version, so browsers may keep it for good;
# the page's own files change with every checkout and are revalidated (a 304 when unchanged).
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


def content_security_policy(livekit_url: str) -> str:
    """A policy that lets the page reach only its own origin and the LiveKit server."""
    livekit = _livekit_origins(livekit_url)
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            # LiveKit signals over a WebSocket and, when that fails, asks its HTTP /rtc/validate why.
            f"connect-src 'self' {livekit}",
            "media-src 'self' blob: mediastream:",
            "worker-src 'self' blob:",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ]
    )


def _livekit_origins(livekit_url: str) -> str:
    parts = urlsplit(livekit_url)
    secure = parts.scheme in ("wss", "https")
    ws, http = ("wss", "https") if secure else ("ws", "http")
    return f"{ws}://{parts.netloc} {http}://{parts.netloc}"


async def index(request: web.Request) -> web.FileResponse:
    """The test page, with the policy for this server's LiveKit URL."""
    return _page(request, "index.html")


async def ops(request: web.Request) -> web.FileResponse:
    """The operator page: live and recent sessions and the last hour's latencies, under the same policy."""
    return _page(request, "ops.html")


def _page(request: web.Request, name: str) -> web.FileResponse:
    response = web.FileResponse(STATIC_DIR / name)
    response.headers["Content-Security-Policy"] = content_security_policy(request.app[LIVEKIT].public_url)
    response.headers["Cache-Control"] = REVALIDATE
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def static_file(request: web.Request) -> web.FileResponse:
    """A file under static/, never one outside it."""
    relative = request.match_info["path"]
    root = STATIC_DIR.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file() or path.name.startswith("."):
        # No reason built from the path: aiohttp refuses one holding CR or LF with a ValueError (a 500).
        raise web.HTTPNotFound()
    response = web.FileResponse(path)
    response.headers["Cache-Control"] = IMMUTABLE if relative.startswith("vendor/") else REVALIDATE
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def add_routes(app: web.Application) -> None:
    """Register the page and its files."""
    app.router.add_get("/", index)
    app.router.add_get("/ops", ops)
    app.router.add_get("/static/{path:.+}", static_file)
