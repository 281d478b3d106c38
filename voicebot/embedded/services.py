"""The embedded programs in start order (redis-server, livekit-server, livekit-sip), stopped in reverse."""

from __future__ import annotations

from urllib.parse import urlsplit

import structlog

from voicebot.config import Settings
from voicebot.embedded.livekit_server import EmbeddedLiveKitServer
from voicebot.embedded.livekit_sip import EmbeddedSipServer
from voicebot.embedded.redis_server import EmbeddedRedis
from voicebot.embedded.runner import LOOPBACK

log = structlog.get_logger(__name__)


class EmbeddedServices:
    """The programs voicebot runs when no LiveKit URL is configured, started in order and stopped in reverse.

    redis-server runs only when SIP is on and no [redis] url is configured (livekit-sip reaches
    livekit-server only through Redis); livekit-server sends its webhooks to `webhook_url`.
    """

    def __init__(self, settings: Settings, *, webhook_url: str) -> None:
        lk, sip = settings.livekit, settings.sip
        self.redis: EmbeddedRedis | None = None
        redis_url = settings.redis.url
        if sip.enabled and not redis_url:
            self.redis = EmbeddedRedis(sip.redis_port)
            redis_url = self.redis.url
        redis_address = redis_address_of(redis_url) if sip.enabled else ""
        self.livekit = EmbeddedLiveKitServer.from_settings(
            lk, redis_address=redis_address, webhook_urls=(webhook_url,)
        )
        self.sip: EmbeddedSipServer | None = None
        if sip.enabled:
            self.sip = EmbeddedSipServer(
                sip,
                livekit_url=self.livekit.url,
                api_key=lk.api_key,
                api_secret=lk.api_secret,
                redis_address=redis_address,
            )

    @property
    def redis_url(self) -> str:
        """The embedded redis-server's URL, or "" when none runs."""
        return self.redis.url if self.redis is not None else ""

    async def start(self) -> None:
        """Start each program in order; on failure the ones already running are stopped again."""
        try:
            if self.redis is not None:
                await self.redis.start()
            await self.livekit.start()
            if self.sip is not None:
                await self.sip.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop livekit-sip, livekit-server, redis-server, in that order; each only if it runs."""
        if self.sip is not None:
            await self.sip.stop()
        await self.livekit.stop()
        if self.redis is not None:
            await self.redis.stop()


def redis_address_of(url: str) -> str:
    """host:port of a redis:// URL, as LiveKit's configs name it."""
    parts = urlsplit(url)
    return f"{parts.hostname or LOOPBACK}:{parts.port or 6379}"
