"""StopSignals: a stop signal reaches a busy loop; a second one, or a hung stop, ends the process."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from typing import NoReturn

import pytest

from tests.conftest import eventually
from voicebot.shutdown import StopSignals, exit_code_forced


class Exits:
    """Stands in for os._exit and the child killer: records the exit codes instead of exiting."""

    def __init__(self) -> None:
        self.codes: list[int] = []
        self.messages: list[str] = []
        self.kills = 0
        self.called = threading.Event()

    def kill(self) -> list[int]:
        self.kills += 1
        return []

    def exit(self, code: int, message: str) -> NoReturn:
        self.codes.append(code)
        self.messages.append(message)
        self.called.set()
        # SystemExit ends the watchdog thread quietly, and stops the test when raised by a signal handler.
        raise SystemExit(code)


@pytest.fixture
def exits() -> Exits:
    return Exits()


@pytest.fixture
def requested() -> list[signal.Signals]:
    return []


@pytest.fixture
async def stop_signals(exits: Exits, requested: list[signal.Signals]) -> AsyncIterator[StopSignals]:
    signals = StopSignals(
        asyncio.get_running_loop(), requested.append, grace_s=0.3, kill=exits.kill, exit_process=exits.exit
    )
    signals.install()
    yield signals
    signals.stopped()
    signals.uninstall()


async def test_a_signal_lands_while_the_loops_wakeup_socket_is_full(
    stop_signals: StopSignals, requested: list[signal.Signals], exits: Exits
) -> None:
    """Regression: `serve` under load ignored SIGTERM and printed "Exception ignored when trying to write to
    the signal wakeup fd: BlockingIOError": asyncio's add_signal_handler hands the signal over as a byte in
    the loop's self-pipe, which thread-safe callbacks had filled."""
    loop = asyncio.get_running_loop()
    for _ in range(100_000):  # more wake-ups than the socket holds, with the loop kept from reading them
        loop.call_soon_threadsafe(lambda: None)

    signal.raise_signal(signal.SIGTERM)

    await eventually(lambda: requested == [signal.SIGTERM], 2, "the stop request to reach the loop")
    stop_signals.stopped()
    assert exits.codes == []


async def test_a_stop_that_finishes_in_time_ends_nothing(
    stop_signals: StopSignals, requested: list[signal.Signals], exits: Exits
) -> None:
    signal.raise_signal(signal.SIGINT)
    await eventually(lambda: requested == [signal.SIGINT], 2, "the stop request to reach the loop")

    stop_signals.stopped()

    assert not exits.called.wait(0.5)
    assert exits.codes == []


# The watchdog thread ends with the SystemExit that stands in for os._exit.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_a_stop_that_overruns_its_grace_kills_the_children_and_exits(
    stop_signals: StopSignals, exits: Exits
) -> None:
    signal.raise_signal(signal.SIGTERM)

    assert await asyncio.to_thread(exits.called.wait, 5)
    assert exits.codes == [exit_code_forced(signal.SIGTERM)] == [143]
    assert exits.kills == 1
    assert "stop_overran" in exits.messages[0]


async def test_a_second_signal_exits_at_once(stop_signals: StopSignals, exits: Exits) -> None:
    signal.raise_signal(signal.SIGINT)

    with pytest.raises(SystemExit):
        signal.raise_signal(signal.SIGINT)

    assert exits.codes == [exit_code_forced(signal.SIGINT)] == [130]
    assert exits.kills == 1


def test_kill_children_kills_the_direct_children_of_the_process() -> None:
    # In a process of its own: the test run's children (a livekit-server fixture) are not the test's to kill.
    script = (
        "import subprocess\n"
        "from voicebot.shutdown import kill_children\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "killed = kill_children()\n"
        "print(killed == [child.pid], child.wait(10))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert run.stdout.split() == ["True", str(-signal.SIGKILL)]
