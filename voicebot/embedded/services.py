"""The embedded programs in start order (redis-server, livekit-server, livekit-sip), stopped in reverse."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from voicebot.config import Settings
from voicebot.embedded.livekit_server import EmbeddedLiveKitServer
from voicebot.embedded.livekit_sip import EmbeddedSipServer
from voicebot.embedded.redis_server import EmbeddedRedis
from voicebot.embedded.runner import EmbeddedProgram, EmbeddedProgramError
from voicebot.redis_address import RedisAddress

RestartHook = Callable[[], Awaitable[object]]

log = structlog.get_logger(__name__)


class Embedded(Protocol):
    """What the supervisor needs of an embedded server: start it, stop it, watch its process."""

    @property
    def program(self) -> EmbeddedProgram: ...

    async def start(self) -> None: ...

    async def stop(self) -> object: ...


@dataclass(frozen=True)
class Backoff:
    """How long to wait before restarting a program that exited: doubling from `initial_s` to `max_s`."""

    initial_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 60.0
    """A program that ran this long before it exited is restarted after `initial_s` again."""


@dataclass(frozen=True)
class ChildStatus:
    """One embedded program as the health report shows it."""

    running: bool
    pid: int | None
    restarts: int
    """How many times voicebot has restarted it."""
    last_exit_code: int | None
    """How it last exited when voicebot had not stopped it (negative: killed by that signal)."""


@dataclass(eq=False)
class _Child:
    server: Embedded
    depends_on: tuple[_Child, ...] = ()
    restarts: int = 0
    last_exit_code: int | None = None
    started_at: float = 0.0
    delay_s: float = 0.0
    hooks: list[RestartHook] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.server.program.name

    def status(self) -> ChildStatus:
        pid = self.server.program.pid
        return ChildStatus(pid is not None, pid, self.restarts, self.last_exit_code)


class EmbeddedServices:
    """The programs voicebot runs when no LiveKit URL is configured, started in order and stopped in reverse.

    redis-server runs only when no [redis] url is configured and SIP is on (livekit-sip reaches
    livekit-server only through Redis) or `shared_state` asks for it (`serve --workers`: the workers share
    their state there); livekit-server sends its webhooks to `webhook_url`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        webhook_url: str,
        backoff: Backoff | None = None,
        shared_state: bool = False,
    ) -> None:
        lk, sip = settings.livekit, settings.sip
        self.redis: EmbeddedRedis | None = None
        redis = settings.redis.address
        if (sip.enabled or shared_state) and not settings.redis.url:
            self.redis = EmbeddedRedis(sip.redis_port)
            redis = self.redis.address
        self.livekit = EmbeddedLiveKitServer.from_settings(
            lk,
            redis=redis if sip.enabled else None,
            webhook_urls=(webhook_url,),
            # Phone calls arrive in rooms their dispatch rule names; see server_config.
            auto_create_rooms=sip.enabled,
        )
        self.sip: EmbeddedSipServer | None = None
        if sip.enabled:
            # config.py refuses SIP with a Redis LiveKit cannot reach (a unix socket), so there is one.
            assert redis is not None
            self.sip = EmbeddedSipServer(
                sip, livekit_url=self.livekit.url, api_key=lk.api_key, api_secret=lk.api_secret, redis=redis
            )
        self._backoff = backoff or Backoff()
        # livekit-server and livekit-sip keep rooms, nodes and SIP trunks in the embedded Redis, which
        # starts empty: when it comes back they are restarted on it, and the trunks provisioned again.
        redis_child = (_Child(self.redis, delay_s=self._backoff.initial_s),) if self.redis is not None else ()
        self._children = [
            *redis_child,
            _Child(self.livekit, depends_on=redis_child, delay_s=self._backoff.initial_s),
        ]
        if self.sip is not None:
            self._children.append(_Child(self.sip, depends_on=redis_child, delay_s=self._backoff.initial_s))
        self._supervisor: asyncio.Task[None] | None = None

    @property
    def redis_address(self) -> RedisAddress | None:
        """The embedded redis-server, password included, or None when none runs."""
        return self.redis.address if self.redis is not None else None

    def after_restart(self, program: str, hook: RestartHook) -> None:
        """Run `hook` each time `program` has been restarted, e.g. provision SIP again on livekit-server."""
        (child,) = (c for c in self._children if c.name == program)
        child.hooks.append(hook)

    def status(self) -> dict[str, ChildStatus]:
        """Each program by name, in start order."""
        return {child.name: child.status() for child in self._children}

    async def start(self) -> None:
        """Start each program in order, then restart any that exits unless stop() stopped it.

        On failure the ones already running are stopped again.
        """
        try:
            for child in self._children:
                await child.server.start()
                child.started_at = time.monotonic()
        except BaseException:
            await self.stop()
            raise
        self._supervisor = asyncio.create_task(self._supervise(), name="embedded-supervisor")
        self._supervisor.add_done_callback(_log_crash)

    async def stop(self) -> None:
        """Stop restarting, then stop livekit-sip, livekit-server, redis-server, in that order."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            # gather: a crash was logged when it happened and must not stop the shutdown.
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        for child in reversed(self._children):
            await child.server.stop()

    async def _supervise(self) -> None:
        while True:
            await self._recover(await self._next_exit())

    async def _next_exit(self) -> _Child:
        waits: dict[asyncio.Task[int], _Child] = {
            asyncio.create_task(child.server.program.wait()): child for child in self._children
        }
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        return waits[next(iter(done))]

    async def _recover(self, first: _Child) -> None:
        """Restart what exited after its backoff, and the programs that depend on it; then run the hooks."""
        # Everything down now, not only `first`: restarting livekit-sip while the Redis it needs
        # is also down would retry for ever and never get to Redis.
        exited = [c for c in self._children if c is first or c.server.program.returncode is not None]
        for child in exited:
            ran_s = time.monotonic() - child.started_at
            child.last_exit_code = child.server.program.returncode
            log.warning(
                "embedded_program_exited",
                program=child.name,
                returncode=child.last_exit_code,
                ran_s=round(ran_s, 3),
            )
            if ran_s >= self._backoff.stable_s:
                child.delay_s = self._backoff.initial_s
        affected = [c for c in self._children if c in exited or set(c.depends_on) & set(exited)]
        for child in reversed(affected):
            await child.server.stop()
        for child in affected:
            await self._restart(child, wait=child in exited)
        for child in affected:
            for hook in child.hooks:
                try:
                    await hook()
                except Exception:
                    log.exception("embedded_restart_hook_failed", program=child.name)

    async def _restart(self, child: _Child, *, wait: bool) -> None:
        """Start `child` again, waiting its backoff first when `wait` and before every retry."""
        while True:
            if wait:
                await asyncio.sleep(child.delay_s)
                child.delay_s = min(child.delay_s * 2, self._backoff.max_s)
            wait = True
            # stop() of an exited program only cleans up after it, ready for a fresh start.
            await child.server.stop()
            try:
                await child.server.start()
            except (EmbeddedProgramError, OSError) as exc:
                log.warning(
                    "embedded_program_restart_failed",
                    program=child.name,
                    reason=str(exc),
                    retry_in_s=child.delay_s,
                )
                continue
            child.restarts += 1
            child.started_at = time.monotonic()
            log.info(
                "embedded_program_restarted",
                program=child.name,
                pid=child.server.program.pid,
                restarts=child.restarts,
            )
            return


def _log_crash(task: asyncio.Task[None]) -> None:
    """A supervisor that stopped other than by stop() would leave crashed programs down unnoticed."""
    if not task.cancelled() and task.exception() is not None:
        log.error("embedded_supervision_failed", exc_info=task.exception())
