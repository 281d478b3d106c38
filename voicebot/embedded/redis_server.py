"""The embedded redis-server that livekit-server and livekit-sip share, on 127.0.0.1, behind a password."""

from __future__ import annotations

import secrets
from pathlib import Path

from voicebot.embedded.runner import (
    LOOPBACK,
    EmbeddedProgram,
    find_program,
    refuse_busy,
    tcp_open,
    write_private,
)
from voicebot.redis_address import RedisAddress

REDIS_BINARY = "redis-server"
CONFIG_NAME = "redis.conf"


class EmbeddedRedis:
    """redis-server on 127.0.0.1: it carries LiveKit's and livekit-sip's messages, and voicebot's state.

    It asks every client for a password, generated here unless one is given: loopback is shared with every
    other user and program on the machine, and whoever reaches LiveKit's Redis can steer its rooms.
    """

    def __init__(
        self, port: int, *, binary: str = "", data_dir: Path | None = None, password: str | None = None
    ) -> None:
        self.port = port
        self._binary = binary
        # With a data_dir every write is appended to disk first, so a restart loses nothing.
        self._data_dir = data_dir
        self._password = password if password is not None else secrets.token_urlsafe(32)
        self._program = EmbeddedProgram(REDIS_BINARY, data_dir)

    @property
    def program(self) -> EmbeddedProgram:
        """The child process itself: its pid, its exit, its log."""
        return self._program

    @property
    def address(self) -> RedisAddress:
        """Where it listens and its password, for redis-py, livekit-server and livekit-sip."""
        return RedisAddress(LOOPBACK, self.port, password=self._password)

    @property
    def url(self) -> str:
        """redis:// URL with the password, as redis-py names it."""
        return self.address.url

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
            # The password goes in a file only we can read, not on the command line, where `ps` shows it
            # to every user of the machine.
            config = write_private(workdir / CONFIG_NAME, f"requirepass {self._password}\n")
            base = [str(binary), str(config), "--bind", LOOPBACK, "--port", str(self.port), "--save", ""]
            return [*base, *durability, "--dir", str(workdir)]

        await self._program.launch(argv, tcp_open(self.port), timeout_s)

    async def stop(self) -> None:
        """Stop redis-server."""
        await self._program.stop()
