"""`serve --workers N`: N voicebot processes behind one port, and the embedded programs they share."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from voicebot.api.paths import WEBHOOK_PATH
from voicebot.config import ConfigError, Settings
from voicebot.embedded.redis_server import EmbeddedRedis
from voicebot.embedded.runner import LOOPBACK, orphan_proof
from voicebot.embedded.services import Backoff, EmbeddedServices
from voicebot.livekit import LiveKitGateway
from voicebot.shutdown import StopSignals

# What a worker prints on stdout once it listens; the parent reads nothing else from it.
READY_LINE = "voicebot worker serving"
WORKER_READY_TIMEOUT_S = 60.0

log = structlog.get_logger(__name__)


def worker_count(text: str) -> int:
    """`--workers`: a positive number, or `auto` for one per core."""
    if text == "auto":
        return os.cpu_count() or 1
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"--workers must be a number or auto, got {text!r}") from None
    if count < 1:
        raise ValueError(f"--workers must be at least 1, got {count}")
    return count


def shares(total: int, workers: int) -> list[int]:
    """`sessions.max_concurrent` shared out among the workers, exactly: their sum is `total`."""
    base, extra = divmod(total, workers)
    return [base + (1 if index < extra else 0) for index in range(workers)]


def check_workers(settings: Settings, workers: int) -> None:
    """Raise ConfigError for what `serve --workers` cannot do with these settings."""
    if settings.sessions.max_concurrent < workers:
        raise ConfigError(
            "sessions.max_concurrent",
            f"must be at least --workers ({workers}), so that every worker may run a session",
        )
    if settings.sip.enabled:
        # Every worker would provision the trunks at once; one owner of provisioning is still to come.
        raise ConfigError("sip.enabled", "serve --workers does not run phone calls yet: use --workers 1")


def refuse_taken_port(host: str, port: int) -> None:
    """Raise OSError if something listens on host:port already: with SO_REUSEPORT, another voicebot of
    this user could share it silently and take half of the requests."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


@dataclass(eq=False)
class Worker:
    """One `python -m voicebot serve --worker` child, tied to this process so it dies with it."""

    index: int
    argv: list[str]
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    delay_s: float = field(default_factory=lambda: Backoff().initial_s)

    @property
    def pid(self) -> int | None:
        """The worker's pid while it runs."""
        running = self.process is not None and self.process.returncode is None
        return self.process.pid if running and self.process is not None else None

    async def start(self) -> None:
        """Start the worker and wait until it listens; raises RuntimeError if it exits or never does."""
        self.process = await asyncio.create_subprocess_exec(
            *orphan_proof(self.argv),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            env=self.env,
            # Its own group: a Ctrl-C at the terminal reaches the parent alone, which forwards it.
            process_group=0,
        )
        self.started_at = time.monotonic()
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(WORKER_READY_TIMEOUT_S):
                while True:
                    line = await self.process.stdout.readline()
                    if not line:
                        code = await self.process.wait()
                        raise RuntimeError(f"worker {self.index} exited with code {code} before it listened")
                    if line.decode(errors="replace").startswith(READY_LINE):
                        break
        except BaseException:
            await self.stop(0.0)
            raise
        log.info("worker_started", worker=self.index, pid=self.process.pid)

    async def stop(self, within_s: float) -> int | None:
        """SIGTERM, and SIGKILL if it has not exited within `within_s`; its exit code."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM if within_s > 0 else signal.SIGKILL)
            try:
                await asyncio.wait_for(process.wait(), within_s if within_s > 0 else None)
            except TimeoutError:
                log.warning("worker_killed", worker=self.index, pid=process.pid)
                process.kill()
                await process.wait()
        return process.returncode


class Workers:
    """The parent of `serve --workers N`: starts the embedded programs (redis-server for the shared state,
    livekit-server sending webhooks to the shared port) and N workers on the same port (SO_REUSEPORT),
    restarts a worker that dies (its rooms are taken over by the others meanwhile), and stops them all."""

    def __init__(self, settings: Settings, count: int, config_path: Path, stop_within_s: float) -> None:
        self._settings = settings
        self._count = count
        self._config_path = config_path
        self._stop_within_s = stop_within_s
        self._backoff = Backoff()
        self.embedded: EmbeddedServices | None = None
        self._redis: EmbeddedRedis | None = None
        self.workers: list[Worker] = []
        self._stopping = False

    async def start(self) -> None:
        """Start the embedded programs, then every worker; on failure stop what was started."""
        settings = self._settings
        lk = settings.livekit
        host, port = settings.server.host, settings.server.port
        refuse_taken_port(host, port)
        livekit_url, redis_url = lk.url, settings.redis.url
        try:
            if lk.embedded:
                # Any worker the kernel hands the connection to will do: webhooks go through the store.
                webhook = f"http://{LOOPBACK}:{port}{WEBHOOK_PATH}"
                self.embedded = EmbeddedServices(settings, webhook_url=webhook, shared_state=True)
                await self.embedded.start()
                livekit_url = self.embedded.livekit.url
                if self.embedded.redis_address is not None:
                    redis_url = self.embedded.redis_address.url
            elif not redis_url:
                self._redis = EmbeddedRedis(settings.sip.redis_port)
                await self._redis.start()
                redis_url = self._redis.url
            env = {
                **os.environ,
                "LIVEKIT_URL": livekit_url,
                "LIVEKIT_API_KEY": lk.api_key,
                "LIVEKIT_API_SECRET": lk.api_secret,
                "VOICEBOT_REDIS_URL": redis_url,
            }
            argv = [sys.executable, "-m", "voicebot", "serve", "--worker", "--config", str(self._config_path)]
            argv += ["--host", host, "--port", str(port)]
            for index, share in enumerate(shares(settings.sessions.max_concurrent, self._count)):
                worker_env = {**env, "VOICEBOT_SESSIONS_MAX_CONCURRENT": str(share)}
                self.workers.append(Worker(index, argv, worker_env))
            await asyncio.gather(*(worker.start() for worker in self.workers))
        except BaseException:
            await self.stop()
            raise

    async def supervise(self) -> None:
        """Restart each worker that exits, after a backoff, until stop()."""
        async with asyncio.TaskGroup() as group:
            for worker in self.workers:
                group.create_task(self._keep_running(worker), name=f"worker-{worker.index}")

    async def _keep_running(self, worker: Worker) -> None:
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            if self._stopping:
                return
            ran_s = time.monotonic() - worker.started_at
            log.warning("worker_exited", worker=worker.index, returncode=code, ran_s=round(ran_s, 3))
            if ran_s >= self._backoff.stable_s:
                worker.delay_s = self._backoff.initial_s
            while True:
                await asyncio.sleep(worker.delay_s)
                worker.delay_s = min(worker.delay_s * 2, self._backoff.max_s)
                try:
                    await worker.start()
                except RuntimeError as exc:
                    log.warning("worker_restart_failed", worker=worker.index, reason=str(exc))
                    continue
                break
            worker.restarts += 1
            log.info("worker_restarted", worker=worker.index, pid=worker.pid, restarts=worker.restarts)

    async def stop(self) -> None:
        """SIGTERM every worker and wait for them (each drains its sessions), then close the embedded
        server's rooms and stop the embedded programs."""
        self._stopping = True
        await asyncio.gather(*(worker.stop(self._stop_within_s) for worker in self.workers))
        if self.embedded is not None:
            await self._close_rooms(self.embedded.livekit.url)
            await self.embedded.stop()
        if self._redis is not None:
            await self._redis.stop()

    async def _close_rooms(self, url: str) -> None:
        """As a single process does: people see the call end, not a reconnecting client."""
        lk = self._settings.livekit
        gateway = LiveKitGateway(url, lk.api_key, lk.api_secret, request_timeout_s=lk.request_timeout_s)
        try:
            await gateway.close_every_room()
        finally:
            await gateway.close()


async def run_workers(settings: Settings, count: int, config_path: Path, grace_s: float) -> int:
    """Serve with `count` workers until SIGTERM or SIGINT, which is forwarded to them; the exit code."""
    stop_requested = asyncio.Event()

    def request_stop(sig: signal.Signals) -> None:
        log.info("stop_requested", signal=sig.name)
        stop_requested.set()

    signals = StopSignals(asyncio.get_running_loop(), request_stop, grace_s + 2.0)
    signals.install()
    # Each worker gets its own stop's whole grace; they stop side by side.
    workers = Workers(settings, count, config_path, stop_within_s=grace_s)
    try:
        await workers.start()
        supervising = asyncio.create_task(workers.supervise(), name="workers")
        try:
            if not stop_requested.is_set():
                host, port = settings.server.host, settings.server.port
                pids = [worker.pid for worker in workers.workers]
                print(f"voicebot serving on http://{host}:{port}  ({count} workers: {pids}; Ctrl-C to stop)")
                sys.stdout.flush()
                await stop_requested.wait()
        finally:
            # First no more restarts, then the stop: a worker in its backoff must not start again now.
            supervising.cancel()
            await asyncio.gather(supervising, return_exceptions=True)
            await workers.stop()
    finally:
        signals.stopped()
        signals.uninstall()
    log.info("stopped", signal=signals.received.name if signals.received else None)
    return 0
