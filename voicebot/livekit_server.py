"""The embedded livekit-server: a child process on 127.0.0.1 for `make run` and the tests."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog
import yaml

from voicebot.config import LiveKitSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHED_BINARY = PROJECT_ROOT / ".cache" / "bin" / "livekit-server"
BINARY_NAME = "livekit-server"
LOOPBACK = "127.0.0.1"

log = structlog.get_logger(__name__)


class LiveKitServerError(Exception):
    """The embedded livekit-server could not be found or did not start."""


@dataclass(frozen=True)
class LiveKitServerPorts:
    """The three ports a livekit-server listens on."""

    http: int
    tcp: int
    udp: int


def find_binary(configured: str = "") -> Path:
    """The livekit-server to run: the configured path, then PATH, then the project's build cache."""
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise LiveKitServerError(f"livekit.server_bin {configured!r} is not a file")
        return path
    on_path = shutil.which(BINARY_NAME)
    if on_path:
        return Path(on_path)
    if CACHED_BINARY.is_file():
        return CACHED_BINARY
    raise LiveKitServerError(
        f"{BINARY_NAME} not found on PATH or at {CACHED_BINARY}; `make livekit-server` builds it"
    )


def server_config(
    ports: LiveKitServerPorts, api_key: str, api_secret: str, *, log_level: str = "info"
) -> dict[str, Any]:
    """livekit-server's YAML settings for a server that never leaves this machine."""
    return {
        "port": ports.http,
        "bind_addresses": [LOOPBACK],
        "rtc": {
            "tcp_port": ports.tcp,
            "udp_port": ports.udp,
            # Discovering a public IP would send STUN requests off the machine.
            "use_external_ip": False,
            "node_ip": LOOPBACK,
            "enable_loopback_candidate": True,
            # Without its own STUN list the server hands clients Google's public STUN servers;
            # pointing them at our own UDP port keeps every ICE packet on loopback.
            "stun_servers": [f"{LOOPBACK}:{ports.udp}"],
        },
        "keys": {api_key: api_secret},
        "logging": {"level": log_level},
    }


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
    ) -> None:
        self.binary = binary
        self.ports = ports
        self._api_key = api_key
        self._api_secret = api_secret
        self._startup_timeout_s = startup_timeout_s
        self._workdir = workdir
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self.log_path: Path | None = None

    @classmethod
    def from_settings(cls, settings: LiveKitSettings) -> EmbeddedLiveKitServer:
        """The embedded server described by the [livekit] section."""
        return cls(
            find_binary(settings.server_bin),
            LiveKitServerPorts(settings.port, settings.tcp_port, settings.udp_port),
            settings.api_key,
            settings.api_secret,
            startup_timeout_s=settings.startup_timeout_s,
        )

    @property
    def url(self) -> str:
        """The WebSocket URL clients and the API use."""
        return f"ws://{LOOPBACK}:{self.ports.http}"

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._process.pid if self._process and self._process.returncode is None else None

    async def start(self) -> None:
        """Start the server and wait until `GET /` answers 200."""
        # Otherwise the readiness check would be answered by whatever already holds the port.
        busy = [f"{kind} {port}" for kind, port in self._ports_in_use()]
        if busy:
            raise LiveKitServerError(
                f"port {', '.join(busy)} on {LOOPBACK} is already in use (another LiveKit server?); "
                "set livekit.url to use that server, or choose other livekit ports"
            )
        if self._workdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="voicebot-livekit-")
            workdir = Path(self._tempdir.name)
        else:
            workdir = self._workdir
        config_path = workdir / "livekit.yaml"
        config = server_config(self.ports, self._api_key, self._api_secret)
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = workdir / "livekit-server.log"
        with self.log_path.open("wb") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                str(self.binary),
                "--config",
                str(config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            )
        log.info("livekit_server_started", pid=self._process.pid, url=self.url, binary=str(self.binary))
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    def _ports_in_use(self) -> list[tuple[str, int]]:
        wanted = [
            ("TCP", self.ports.http, socket.SOCK_STREAM),
            ("TCP", self.ports.tcp, socket.SOCK_STREAM),
            ("UDP", self.ports.udp, socket.SOCK_DGRAM),
        ]
        busy = []
        for kind, port, sock_type in wanted:
            with socket.socket(socket.AF_INET, sock_type) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((LOOPBACK, port))
                except OSError:
                    busy.append((kind, port))
        return busy

    async def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._startup_timeout_s
        url = f"http://{LOOPBACK}:{self.ports.http}/"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while time.monotonic() < deadline:
                if self._process.returncode is not None:
                    raise LiveKitServerError(
                        f"livekit-server exited with code {self._process.returncode}: {self.log_tail()}"
                    )
                try:
                    async with session.get(url) as response:
                        if response.status == 200 and (await response.text()).strip() == "OK":
                            log.info("livekit_server_ready", url=self.url)
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        raise LiveKitServerError(
            f"livekit-server did not answer on {url} within {self._startup_timeout_s:g}s: {self.log_tail()}"
        )

    async def stop(self, grace_s: float = 1.0, timeout_s: float = 10.0) -> None:
        """Stop the server: SIGTERM, a second SIGTERM after `grace_s`, SIGKILL after `timeout_s`.

        livekit-server's first SIGTERM waits for every participant to leave, and one that lands in the
        100 ms between its HTTP port opening and its `running` flag being set is ignored; its second
        SIGTERM stops it at once, closing the rooms.
        """
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            steps = ((signal.SIGTERM, grace_s), (signal.SIGTERM, timeout_s), (signal.SIGKILL, None))
            for signum, wait_s in steps:
                process.send_signal(signum)
                try:
                    returncode = await asyncio.wait_for(process.wait(), wait_s)
                    break
                except TimeoutError:
                    continue
            if returncode == -signal.SIGKILL:
                log.warning("livekit_server_killed", pid=process.pid, after_s=grace_s + timeout_s)
            log.info("livekit_server_stopped", pid=process.pid, returncode=returncode)
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the server logged, for error messages."""
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
