"""SIGTERM and SIGINT that always stop the process: gracefully on the loop, or by force when that hangs."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import NoReturn

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_code_forced(signum: int) -> int:
    """The exit code of a stop that did not finish gracefully: 128 + the signal, as a shell reports it."""
    return 128 + signum


def kill_children() -> list[int]:
    """SIGKILL every direct child of this process (livekit-server, livekit-sip, redis-server); their pids."""
    me = os.getpid()
    killed = []
    # /proc, not a registry of our own: whatever started a child, it must not outlive a forced exit.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name in parentheses may hold spaces; the parent pid is the 2nd field after it.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != me:
                continue
            pid = int(stat.parent.name)
            os.kill(pid, signal.SIGKILL)
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile, or not ours to read
        killed.append(pid)
    return killed


def _exit_now(code: int, message: str) -> NoReturn:
    # Straight to the file descriptor, which must not block: the main thread may hold stderr's lock.
    try:
        os.set_blocking(2, False)
        os.write(2, message.encode())
    except OSError:
        pass
    os._exit(code)


class StopSignals:
    """SIGTERM/SIGINT call `request_stop()` on the loop; the process is ended if stopping overruns `grace_s`.

    asyncio's `loop.add_signal_handler` (which aiohttp's `run_app` uses) leaves the signal to a byte the C
    handler writes into the loop's non-blocking self-pipe, which every `call_soon_threadsafe` (each executor
    job that finishes) also writes to. On a saturated loop that socket fills up, the write fails with
    "Exception ignored when trying to write to the signal wakeup fd: BlockingIOError", and the signal is lost.
    A Python-level handler needs no wakeup fd: the interpreter runs it in the main thread at the next
    bytecode, so it lands however busy the loop is, and the callback it queues stays queued even if waking
    the loop fails. The watchdog thread covers a graceful stop that hangs; a second signal means stop now.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        request_stop: Callable[[signal.Signals], None],
        grace_s: float,
        *,
        kill: Callable[[], list[int]] = kill_children,
        exit_process: Callable[[int, str], NoReturn] = _exit_now,
    ) -> None:
        self._loop = loop
        self._request_stop = request_stop
        self._grace_s = grace_s
        self._kill = kill
        self._exit = exit_process
        self._first: signal.Signals | None = None
        self._stopped = threading.Event()
        self._watchdog: threading.Thread | None = None
        # typeshed's name for what signal.signal() returns and takes.
        self._previous: dict[signal.Signals, signal._HANDLER] = {}

    @property
    def received(self) -> signal.Signals | None:
        """The first stop signal received, if any."""
        return self._first

    def install(self) -> None:
        """Handle SIGTERM and SIGINT from now on; must be called in the main thread."""
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def uninstall(self) -> None:
        """Give the signals back to their previous handlers."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def stopped(self) -> None:
        """The graceful stop has finished: the watchdog stands down."""
        self._stopped.set()
        if self._watchdog is not None:
            self._watchdog.join()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Runs in the main thread between two bytecodes, maybe inside the loop's own code: it only queues
        # work and starts a thread, and logs nothing (the code it interrupted may hold the logger's lock).
        sig = signal.Signals(signum)
        if self._first is not None or self._loop.is_closed():
            self._force(sig, "second_signal")
        self._first = sig
        self._watchdog = threading.Thread(target=self._watch, args=(sig,), name="stop-watchdog", daemon=True)
        self._watchdog.start()
        self._loop.call_soon_threadsafe(self._request_stop, sig)

    def _watch(self, sig: signal.Signals) -> None:
        if not self._stopped.wait(self._grace_s):
            self._force(sig, "stop_overran")

    def _force(self, sig: signal.Signals, reason: str) -> NoReturn:
        killed = self._kill()
        message = f"voicebot: stopped by force ({reason}, {sig.name}); killed children {killed}\n"
        self._exit(exit_code_forced(sig), message)
