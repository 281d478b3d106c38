"""A Redis URL parsed once: where Redis is and how to log in, for redis-py, livekit-server and livekit-sip."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

DEFAULT_PORT = 6379


class InvalidRedisUrl(ValueError):
    """The URL does not name a Redis server voicebot can pass on."""


@dataclass(frozen=True)
class RedisAddress:
    """One Redis server: host, port, login, TLS and database, from a redis:// or rediss:// URL."""

    host: str
    port: int = DEFAULT_PORT
    password: str = field(default="", repr=False)
    """Never in a log line: `repr` and `safe_url` leave it out."""
    username: str = ""
    tls: bool = False
    db: int = 0

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """The address a redis://[user:password@]host[:port][/db] URL names (rediss:// for TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise InvalidRedisUrl(f"must start with redis:// or rediss://, got {parts.scheme or 'no'} scheme")
        if not parts.hostname:
            raise InvalidRedisUrl("names no host")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise InvalidRedisUrl("has a port that is not a number from 1 to 65535") from None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise InvalidRedisUrl(f"database must be a number, got {path!r}")
        return cls(
            host=parts.hostname,
            port=port,
            password=unquote(parts.password or ""),
            username=unquote(parts.username or ""),
            tls=parts.scheme == "rediss",
            db=int(path or 0),
        )

    @property
    def host_port(self) -> str:
        """host:port, as LiveKit's configs name it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The URL redis-py connects with, password included."""
        login = ""
        if self.username or self.password:
            login = f"{quote(self.username, safe='')}:{quote(self.password, safe='')}@"
        return f"{self._scheme}://{login}{self.host_port}/{self.db}"

    @property
    def safe_url(self) -> str:
        """The URL without its login, for log lines and error messages."""
        return f"{self._scheme}://{self.host_port}/{self.db}"

    def livekit_config(self) -> dict[str, Any]:
        """The `redis:` block of livekit-server's and livekit-sip's YAML (both read LiveKit's RedisConfig)."""
        config: dict[str, Any] = {"address": self.host_port}
        if self.username:
            config["username"] = self.username
        if self.password:
            config["password"] = self.password
        if self.tls:
            config["use_tls"] = True
        if self.db:
            config["db"] = self.db
        return config

    @property
    def _scheme(self) -> str:
        return "rediss" if self.tls else "redis"
