"""The embedded livekit-sip and the redis-server it and livekit-server share, for `make run` and the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from voicebot.config import SipSettings
from voicebot.processes import (
    LOOPBACK,
    ChildProcessError,
    EmbeddedProgram,
    find_program,
    http_ok,
    ports_in_use,
    tcp_open,
)

SIP_BINARY = "livekit-sip"
REDIS_BINARY = "redis-server"


def sip_config(
    sip: SipSettings, *, livekit_url: str, api_key: str, api_secret: str, redis_address: str
) -> dict[str, Any]:
    """livekit-sip's YAML settings for a SIP server on loopback that reaches LiveKit through Redis."""
    return {
        "api_key": api_key,
        "api_secret": api_secret,
        "ws_url": livekit_url,
        "redis": {"address": redis_address},
        "sip_port": sip.port,
        "rtp_port": f"{sip.rtp_port_start}-{sip.rtp_port_end}",
        "health_port": sip.health_port,
        # Announce loopback in SDP and Contact headers instead of looking up a public address.
        "use_external_ip": False,
        "nat_1_to_1_ip": LOOPBACK,
        "logging": {"level": "info"},
    }


class EmbeddedRedis:
    """redis-server on 127.0.0.1: it carries LiveKit's and livekit-sip's messages, and voicebot's state."""

    def __init__(self, port: int, *, binary: str = "", data_dir: Path | None = None) -> None:
        self.port = port
        self._binary = binary
        # With a data_dir every write is appended to disk first, so a restart loses nothing.
        self._data_dir = data_dir
        self._program = EmbeddedProgram(REDIS_BINARY, data_dir)

    @property
    def address(self) -> str:
        """host:port, as LiveKit's configs name it."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """redis:// URL, as redis-py names it."""
        return f"redis://{self.address}/0"

    async def start(self, timeout_s: float = 10.0) -> None:
        """Start redis-server and wait until it accepts connections."""
        binary = find_program(REDIS_BINARY, self._binary, hint="`make test` installs Debian's redis-server")
        _refuse_busy(
            [("TCP", self.port)], "redis-server", "set redis.url to use that Redis, or sip.redis_port"
        )
        if self._data_dir is None:
            durability = ["--appendonly", "no"]
        else:
            durability = ["--appendonly", "yes", "--appendfsync", "always"]

        def argv(workdir: Path) -> list[str]:
            base = [str(binary), "--bind", LOOPBACK, "--port", str(self.port), "--save", ""]
            return [*base, *durability, "--dir", str(workdir)]

        await self._program.launch(argv, tcp_open(self.port), timeout_s)

    async def stop(self) -> None:
        """Stop redis-server."""
        await self._program.stop()


class EmbeddedSipServer:
    """livekit-sip as a child process: SIP on 127.0.0.1:`sip.port`, media on its RTP range."""

    def __init__(
        self, sip: SipSettings, *, livekit_url: str, api_key: str, api_secret: str, redis_address: str
    ):
        self._sip = sip
        self._config = sip_config(
            sip, livekit_url=livekit_url, api_key=api_key, api_secret=api_secret, redis_address=redis_address
        )
        self._program = EmbeddedProgram(SIP_BINARY)

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
        _refuse_busy(
            [("UDP", self._sip.port), ("TCP", self._sip.port), ("TCP", self._sip.health_port)],
            "livekit-sip",
            "choose other sip.port / sip.health_port",
        )

        def argv(workdir: Path) -> list[str]:
            config_path = workdir / "sip.yaml"
            config_path.write_text(yaml.safe_dump(self._config), encoding="utf-8")
            return [str(binary), "--config", str(config_path)]

        await self._program.launch(argv, http_ok(self.health_url), timeout_s)

    async def stop(self) -> None:
        """Stop livekit-sip; calls in progress are hung up."""
        await self._program.stop()


def _refuse_busy(ports: list[tuple[str, int]], program: str, advice: str) -> None:
    busy = ports_in_use(ports)
    if busy:
        raise ChildProcessError(
            f"port {', '.join(busy)} on {LOOPBACK} is already in use, so {program} cannot start; {advice}"
        )
