"""Child processes voicebot runs beside itself (livekit-server, livekit-sip, redis-server) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp
import structlog

# voicebot/embedded/runner.py: the project is three levels up.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CACHE_BIN = PROJECT_ROOT / ".cache" / "bin"
LOOPBACK = "127.0.0.1"
SETPRIV = shutil.which("setpriv")

ReadyCheck = Callable[[], Awaitable[bool]]
# (signal, seconds to wait for the exit after sending it); SIGKILL follows the last step.
StopSteps = Sequence[tuple[signal.Signals, float]]
_TempDir = tempfile.TemporaryDirectory[str]

log = structlog.get_logger(__name__)


class EmbeddedProgramError(Exception):
    """A child program could not be found or did not start; the message says what to do."""

    def __init__(self, program: str, message: str) -> None:
        super().__init__(message)
        self.program = program


def find_program(name: str, configured: str = "", *, hint: str) -> Path:
    """The program to run: the configured path, then PATH, then the project's build cache."""
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise EmbeddedProgramError(name, f"{configured!r} (configured for {name}) is not a file")
        return path
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    cached = CACHE_BIN / name
    if cached.is_file():
        return cached
    raise EmbeddedProgramError(name, f"{name} not found on PATH or at {cached}; {hint}")


def ports_in_use(ports: Sequence[tuple[str, int]]) -> list[str]:
    """Which of ("TCP"|"UDP", port) cannot be bound on 127.0.0.1 now, as "TCP 7880"."""
    busy = []
    for kind, port in ports:
        sock_type = socket.SOCK_STREAM if kind == "TCP" else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, sock_type) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                busy.append(f"{kind} {port}")
    return busy


def refuse_busy(ports: Sequence[tuple[str, int]], program: str, advice: str) -> None:
    """Raise unless every port can be bound, so a readiness check is never answered by another program."""
    busy = ports_in_use(ports)
    if busy:
        raise EmbeddedProgramError(
            program,
            f"port {', '.join(busy)} on {LOOPBACK} is already in use, so {program} cannot start; {advice}",
        )


def http_ok(url: str, body: str | None = None) -> ReadyCheck:
    """A readiness check: `url` answers 200 (with exactly `body`, when given)."""

    async def check() -> bool:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session,
                session.get(url) as response,
            ):
                text = await response.text()
                return response.status == 200 and (body is None or text.strip() == body)
        except (aiohttp.ClientError, TimeoutError):
            return False

    return check


def write_private(path: Path, text: str) -> Path:
    """Write `text` to `path`, readable and writable by this user alone (it holds a secret)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    os.chmod(path, 0o600)
    return path


def tcp_open(port: int) -> ReadyCheck:
    """A readiness check: something accepts TCP connections on 127.0.0.1:`port`."""

    async def check() -> bool:
        try:
            _, writer = await asyncio.open_connection(LOOPBACK, port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    return check


def orphan_proof(argv: Sequence[str]) -> list[str]:
    """`argv` wrapped so the kernel SIGKILLs the program when voicebot dies, even of SIGKILL.

    PR_SET_PDEATHSIG is set by util-linux's `setpriv` as an exec wrapper rather than by ctypes in a
    `preexec_fn`: Python code run in the forked child of a threaded process (livekit's FFI threads,
    the speech-model executor) can deadlock before exec. Had voicebot died before setpriv ran, the
    child would already belong to init and never get the signal, so a shell checks that its parent
    is still this process before it execs the program. Without setpriv the program runs unwrapped.
    """
    if SETPRIV is None:
        log.warning("child_not_tied_to_parent", program=argv[0], reason="setpriv (util-linux) not found")
        return list(argv)
    check = f'[ "$PPID" = {os.getpid()} ] || exit 1; exec "$@"'
    return [SETPRIV, "--pdeathsig", "KILL", "--", "/bin/sh", "-c", check, "sh", *argv]


class ChildProcess:
    """One program started with its output in a log file, waited for until ready, and stopped again.

    The program runs in a process group of its own, so a Ctrl-C at the terminal reaches only voicebot,
    which then decides the order things stop in; and it dies with voicebot (see `orphan_proof`).
    """

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._process.pid if self._process and self._process.returncode is None else None

    @property
    def returncode(self) -> int | None:
        """How the program exited, once it has."""
        return self._process.returncode if self._process else None

    async def wait(self) -> int:
        """Wait until the program exits, however that happens; its exit code."""
        assert self._process is not None, "wait() before start()"
        return await self._process.wait()

    def kill_group(self) -> None:
        """SIGKILL the program's process group at once, without waiting; for a program nobody stopped."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)

    async def start(self, ready: ReadyCheck, timeout_s: float) -> None:
        """Start the program and wait until `ready()` holds; stops it again and raises if it never does."""
        # The parent-death signal fires when the *thread* that forked the child ends; asyncio forks from
        # the thread running the loop, which for `serve` (web.run_app) and the tests is the main thread.
        with self.log_path.open("wb") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                *orphan_proof(self.argv),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                process_group=0,
            )
        log.info("process_started", program=self.name, pid=self._process.pid)
        try:
            await self._wait_ready(ready, timeout_s)
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self, ready: ReadyCheck, timeout_s: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.returncode is not None:
                raise EmbeddedProgramError(
                    self.name, f"{self.name} exited with code {self._process.returncode}: {self.log_tail()}"
                )
            if await ready():
                log.info("process_ready", program=self.name, pid=self._process.pid)
                return
            await asyncio.sleep(0.05)
        raise EmbeddedProgramError(
            self.name, f"{self.name} was not ready within {timeout_s:g}s: {self.log_tail()}"
        )

    async def stop(self, steps: StopSteps = ((signal.SIGTERM, 10.0),)) -> int | None:
        """Send each step's signal and wait its time for the exit; SIGKILL if it outlives them all."""
        process = self._process
        if process is None or process.returncode is not None:
            return process.returncode if process else None
        returncode: int | None = None
        for signum, wait_s in [*steps, (signal.SIGKILL, 10.0)]:
            process.send_signal(signum)
            try:
                returncode = await asyncio.wait_for(process.wait(), wait_s)
                break
            except TimeoutError:
                continue
        if returncode == -signal.SIGKILL:
            log.warning("process_killed", program=self.name, pid=process.pid)
        log.info("process_stopped", program=self.name, pid=process.pid, returncode=returncode)
        return returncode

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the program logged, for error messages."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class EmbeddedProgram:
    """A child program in a working directory of its own: temporary unless one is given, removed on stop.

    One that is dropped without stop() is killed and its directory (configs with secrets) removed by
    a finalizer, which logs `embedded_program_leaked` so the missing stop() is noticed.
    """

    def __init__(self, name: str, workdir: Path | None = None) -> None:
        self.name = name
        self._workdir = workdir
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._child: ChildProcess | None = None
        self._finalizer: weakref.finalize[[ChildProcess, _TempDir | None], EmbeddedProgram] | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._child.pid if self._child else None

    @property
    def log_path(self) -> Path | None:
        """Where the program's output goes."""
        return self._child.log_path if self._child else None

    @property
    def returncode(self) -> int | None:
        """How the program exited, once it has."""
        return self._child.returncode if self._child else None

    async def wait(self) -> int:
        """Wait until the program exits, through stop() or not; its exit code."""
        assert self._child is not None, "wait() before launch()"
        return await self._child.wait()

    async def launch(
        self, argv: Callable[[Path], Sequence[str]], ready: ReadyCheck, timeout_s: float
    ) -> None:
        """Start `argv(workdir)` and wait until `ready()`; on failure everything is cleaned up again."""
        if self._workdir is not None:
            workdir = self._workdir
        else:
            self._tempdir = tempfile.TemporaryDirectory(prefix=f"voicebot-{self.name}-")
            workdir = Path(self._tempdir.name)
        self._child = ChildProcess(self.name, argv(workdir), workdir / f"{self.name}.log")
        # Made after the TemporaryDirectory, so at interpreter exit this runs before its own finalizer
        # (newest first) and cleans up without the "Implicitly cleaning up" ResourceWarning.
        self._finalizer = weakref.finalize(self, _reap_leaked, self._child, self._tempdir)
        try:
            await self._child.start(ready, timeout_s)
        except BaseException:
            await self.stop()
            raise

    async def stop(self, steps: StopSteps = ((signal.SIGTERM, 10.0),)) -> int | None:
        """Stop the program (see ChildProcess.stop) and remove a temporary working directory."""
        returncode = await self._child.stop(steps) if self._child is not None else None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None
        return returncode

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the program logged, for error messages."""
        return self._child.log_tail(lines) if self._child else "(no log)"


def _reap_leaked(child: ChildProcess, tempdir: tempfile.TemporaryDirectory[str] | None) -> None:
    """What EmbeddedProgram.stop() would have done, for one dropped without it."""
    log.warning("embedded_program_leaked", program=child.name, pid=child.pid)
    child.kill_group()
    if tempdir is not None:
        tempdir.cleanup()
