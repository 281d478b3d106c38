"""The embedded livekit-sip: SIP on 127.0.0.1 that reaches LiveKit through Redis."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from voicebot.config import SipSettings
from voicebot.embedded.runner import (
    LOOPBACK,
    EmbeddedProgram,
    find_program,
    http_ok,
    refuse_busy,
    write_private,
)
from voicebot.redis_address import RedisAddress

SIP_BINARY = "livekit-sip"


def sip_config(
    sip: SipSettings, *, livekit_url: str, api_key: str, api_secret: str, redis: RedisAddress
) -> dict[str, Any]:
    """livekit-sip's YAML settings for a SIP server on loopback that reaches LiveKit through Redis."""
    return {
        "api_key": api_key,
        "api_secret": api_secret,
        "ws_url": livekit_url,
        "redis": redis.livekit_config(),
        "sip_port": sip.port,
        "rtp_port": f"{sip.rtp_port_start}-{sip.rtp_port_end}",
        "health_port": sip.health_port,
        # Announce loopback in SDP and Contact headers instead of looking up a public address.
        "use_external_ip": False,
        "nat_1_to_1_ip": LOOPBACK,
        "logging": {"level": "info"},
    }


class EmbeddedSipServer:
    """livekit-sip as a child process: SIP on 127.0.0.1:`sip.port`, media on its RTP range."""

    def __init__(
        self,
        sip: SipSettings,
        *,
        livekit_url: str,
        api_key: str,
        api_secret: str,
        redis: RedisAddress,
        extra_config: Mapping[str, Any] | None = None,
    ):
        self._sip = sip
        self._config = sip_config(
            sip, livekit_url=livekit_url, api_key=api_key, api_secret=api_secret, redis=redis
        ) | dict(extra_config or {})
        self._program = EmbeddedProgram(SIP_BINARY)

    @property
    def program(self) -> EmbeddedProgram:
        """The child process itself: its pid, its exit, its log."""
        return self._program

    @property
    def health_url(self) -> str:
        """livekit-sip's health check: 200 once it is ready for calls."""
        return f"http://{LOOPBACK}:{self._sip.health_port}/"

    @property
    def address(self) -> str:
        """Where phones and SIP clients send their INVITEs."""
        return f"{LOOPBACK}:{self._sip.port}"

    def log_tail(self, lines: int = 30) -> str:
        """The last lines livekit-sip logged."""
        return self._program.log_tail(lines)

    async def start(self, timeout_s: float = 20.0) -> None:
        """Start livekit-sip and wait until its health check answers."""
        binary = find_program(SIP_BINARY, self._sip.server_bin, hint="`make livekit-sip` builds it")
        refuse_busy(
            [("UDP", self._sip.port), ("TCP", self._sip.port), ("TCP", self._sip.health_port)],
            "livekit-sip",
            "choose other sip.port / sip.health_port",
        )

        def argv(workdir: Path) -> list[str]:
            # The file holds the API secret and Redis password: readable by us alone.
            config_path = write_private(workdir / "sip.yaml", yaml.safe_dump(self._config))
            return [str(binary), "--config", str(config_path)]

        await self._program.launch(argv, http_ok(self.health_url), timeout_s)

    async def stop(self) -> None:
        """Stop livekit-sip; calls in progress are hung up."""
        await self._program.stop()
