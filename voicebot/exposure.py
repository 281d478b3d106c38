"""Refusals to serve where a default would be unsafe: the API off loopback with no key, the shipped secret."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from voicebot.config import ConfigError, Settings

# config.toml, compose.yaml and deploy/ ship this secret so one machine works out of the box.
SHIPPED_SECRET_PREFIX = "voicebot-dev-secret-change-me-"  # noqa: S105 (the known one, to refuse it)


def is_loopback(host: str) -> bool:
    """Whether a host name or address stays on this machine; an empty host means all interfaces."""
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """Raise ConfigError when `serve` would be reachable from other machines without protection."""
    server, lk = settings.server, settings.livekit
    if not settings.auth.api_keys and not is_loopback(server.host):
        raise ConfigError(
            "auth.api_keys",
            f"serving on {server.host or 'all interfaces'} needs an API key, or anyone who reaches the port "
            "can use the API: set VOICEBOT_AUTH_API_KEYS (`python -m voicebot keys` prints one) "
            "or [auth] api_keys, or serve on 127.0.0.1",
        )
    livekit_hosts = [urlsplit(url).hostname or "" for url in (lk.url, lk.public_url) if url]
    exposed = not is_loopback(server.host) or not all(is_loopback(host) for host in livekit_hosts)
    if lk.api_secret.startswith(SHIPPED_SECRET_PREFIX) and exposed:
        raise ConfigError(
            "livekit.api_secret",
            "is the example shipped in config.toml, which anyone can read, and this setup is reachable "
            "from other machines: set LIVEKIT_API_KEY and LIVEKIT_API_SECRET (`python -m voicebot keys` "
            "prints a pair) and give LiveKit the same",
        )
