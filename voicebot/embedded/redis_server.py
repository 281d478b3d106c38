"""The embedded redis-server that livekit-server and livekit-sip share, on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from voicebot.embedded.runner import LOOPBACK, EmbeddedProgram, find_program, refuse_busy, tcp_open

REDIS_BINARY = "redis-server"


class EmbeddedRedis:
    """redis-server on 127.0.0.1: it carries LiveKit's and livekit-sip's messages, and voicebot's state."""

    def __init__(self, port: int, *, binary: str = "", data_dir: Path | None = None) -> None:
        self.port = port
        self._binary = binary
        # With a data_dir every write is appended to disk first, so a restart loses nothing.
        self._data_dir = data_dir
        self._program = EmbeddedProgram(REDIS_BINARY, data_dir)

    @property
    def program(self) -> EmbeddedProgram:
        """The child process itself: its pid, its exit, its log."""
        return self._program

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
        refuse_busy(
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
