"""The embedded livekit-server: a child process on 127.0.0.1 for `make run` and the tests."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import yaml

from voicebot.config import LiveKitSettings
from voicebot.embedded.runner import (
    LOOPBACK,
    EmbeddedProgram,
    EmbeddedProgramError,
    find_program,
    http_ok,
    ports_in_use,
    write_private,
)
from voicebot.redis_address import RedisAddress

BINARY_NAME = "livekit-server"

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class LiveKitServerPorts:
    """The three ports a livekit-server listens on."""

    http: int
    tcp: int
    udp: int


def find_binary(configured: str = "") -> Path:
    """The livekit-server to run: the configured path, then PATH, then the project's build cache."""
    return find_program(BINARY_NAME, configured, hint="`make livekit-server` builds it")


def server_config(
    ports: LiveKitServerPorts,
    api_key: str,
    api_secret: str,
    *,
    redis: RedisAddress | None = None,
    webhook_urls: tuple[str, ...] = (),
    auto_create_rooms: bool = False,
    log_level: str = "info",
) -> dict[str, Any]:
    """livekit-server's YAML settings for a server that never leaves this machine."""
    config: dict[str, Any] = {
        "port": ports.http,
        "bind_addresses": [LOOPBACK],
        "rtc": {
            "tcp_port": ports.tcp,
            "udp_port": ports.udp,
            # Discovering a public IP would send STUN requests off the machine.
            "use_external_ip": False,
            # No node_ip and no loopback candidate: the server then offers its interfaces' own addresses,
            # which every client on this machine reaches. WebRTC clients (libwebrtc in the SDKs, browsers)
            # never gather loopback, so a 127.0.0.1 candidate only cost them a failed check first: they pace
            # checks ~50 ms apart, and each agent's and person's connect took ~45 ms longer.
            # Without its own STUN list the server hands clients Google's public STUN servers;
            # pointing them at our own UDP port keeps every ICE packet on loopback.
            "stun_servers": [f"{LOOPBACK}:{ports.udp}"],
        },
        "keys": {api_key: api_secret},
        # A join token alone must not conjure up a room: rooms exist only once voicebot has created them
        # through the API, with its timeouts and its agent on the way. Inbound phone calls are the
        # exception: their dispatch rule names a new room at call time, and the token LiveKit gives
        # livekit-sip has no room-create grant, so with SIP on every call would be refused (486).
        "room": {"auto_create": auto_create_rooms},
        "logging": {"level": log_level},
    }
    if redis is not None:
        # livekit-sip reaches the server only through Redis, so SIP needs the server on it too.
        config["redis"] = redis.livekit_config()
    if webhook_urls:
        config["webhook"] = {"api_key": api_key, "urls": list(webhook_urls)}
    return config


class EmbeddedLiveKitServer:
    """Runs livekit-server as a child process bound to 127.0.0.1 and stops it again."""

    def __init__(
        self,
        binary: Path,
        ports: LiveKitServerPorts,
        api_key: str,
        api_secret: str,
        *,
        startup_timeout_s: float = 20.0,
        workdir: Path | None = None,
        redis: RedisAddress | None = None,
        webhook_urls: tuple[str, ...] = (),
        auto_create_rooms: bool = False,
    ) -> None:
        self.binary = binary
        self.ports = ports
        self._config = server_config(
            ports,
            api_key,
            api_secret,
            redis=redis,
            webhook_urls=webhook_urls,
            auto_create_rooms=auto_create_rooms,
        )
        self._startup_timeout_s = startup_timeout_s
        self._program = EmbeddedProgram(BINARY_NAME, workdir)

    @classmethod
    def from_settings(
        cls,
        settings: LiveKitSettings,
        *,
        redis: RedisAddress | None = None,
        webhook_urls: tuple[str, ...] = (),
        auto_create_rooms: bool = False,
    ) -> EmbeddedLiveKitServer:
        """The embedded server described by the [livekit] section."""
        return cls(
            find_binary(settings.server_bin),
            LiveKitServerPorts(settings.port, settings.tcp_port, settings.udp_port),
            settings.api_key,
            settings.api_secret,
            startup_timeout_s=settings.startup_timeout_s,
            redis=redis,
            webhook_urls=webhook_urls,
            auto_create_rooms=auto_create_rooms,
        )

    @property
    def url(self) -> str:
        """The WebSocket URL clients and the API use."""
        return f"ws://{LOOPBACK}:{self.ports.http}"

    @property
    def program(self) -> EmbeddedProgram:
        """The child process itself: its pid, its exit, its log."""
        return self._program

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._program.pid

    @property
    def log_path(self) -> Path | None:
        """Where the server's output goes."""
        return self._program.log_path

    async def start(self) -> None:
        """Start the server and wait until `GET /` answers 200."""
        # Otherwise the readiness check would be answered by whatever already holds the port.
        busy = ports_in_use([("TCP", self.ports.http), ("TCP", self.ports.tcp), ("UDP", self.ports.udp)])
        if busy:
            raise EmbeddedProgramError(
                BINARY_NAME,
                f"port {', '.join(busy)} on {LOOPBACK} is already in use (another LiveKit server?); "
                "set livekit.url to use that server, or choose other livekit ports",
            )

        def argv(workdir: Path) -> list[str]:
            # The file holds the API secret and Redis password: readable by us alone.
            config_path = write_private(workdir / "livekit.yaml", yaml.safe_dump(self._config))
            return [str(self.binary), "--config", str(config_path)]

        await self._program.launch(
            argv, http_ok(f"http://{LOOPBACK}:{self.ports.http}/", "OK"), self._startup_timeout_s
        )
        log.info("livekit_server_ready", url=self.url)

    async def stop(self, grace_s: float = 1.0, timeout_s: float = 10.0) -> int | None:
        """Stop the server: SIGTERM, a second SIGTERM after `grace_s`, SIGKILL after `timeout_s`.

        livekit-server's first SIGTERM waits for every participant to leave, and one that lands in the
        100 ms between its HTTP port opening and its `running` flag being set is ignored; its second
        SIGTERM stops it at once, closing the rooms.
        """
        return await self._program.stop(((signal.SIGTERM, grace_s), (signal.SIGTERM, timeout_s)))

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the server logged, for error messages."""
        return self._program.log_tail(lines)
