"""Child programs run in a process group of their own, die with their parent, and never leak unnoticed."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import textwrap
from pathlib import Path

import structlog

from tests.voicebot_process import ROOT, process_alive, wait_until
from voicebot.embedded.runner import EmbeddedProgram

SLEEP = ["/bin/sleep", "600"]


async def always_ready() -> bool:
    return True


async def exited(pid: int) -> bool:
    return not process_alive(pid)


async def test_a_child_runs_in_a_process_group_of_its_own() -> None:
    """A Ctrl-C at the terminal must reach only voicebot, which decides the order things stop in."""
    program = EmbeddedProgram("sleep")
    await program.launch(lambda _workdir: SLEEP, always_ready, 5)
    try:
        assert program.pid is not None
        assert os.getpgid(program.pid) == program.pid
        assert os.getpgid(program.pid) != os.getpgrp()
    finally:
        await program.stop()


async def test_a_child_dies_with_its_parent_even_of_sigkill(tmp_path: Path) -> None:
    parent_script = textwrap.dedent(
        """
        import asyncio, sys
        from voicebot.embedded.runner import EmbeddedProgram

        async def main() -> None:
            async def ready() -> bool:
                return True
            program = EmbeddedProgram("sleep")
            await program.launch(lambda _workdir: ["/bin/sleep", "600"], ready, 5)
            print(program.pid, file=sys.stderr, flush=True)
            await asyncio.sleep(600)

        asyncio.run(main())
        """
    )
    parent = await asyncio.create_subprocess_exec(
        # Its log goes to stdout; the child's pid alone to stderr.
        sys.executable,
        "-c",
        parent_script,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert parent.stderr is not None
        child_pid = int(await asyncio.wait_for(parent.stderr.readline(), 30))
        assert process_alive(child_pid)

        parent.send_signal(signal.SIGKILL)
        await parent.wait()

        await wait_until(lambda: exited(child_pid), 10, f"the child {child_pid} to die with its parent")
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()


async def test_a_program_dropped_without_stop_is_killed_cleaned_up_and_logged() -> None:
    """Regression: pytest failed at exit ('Implicitly cleaning up <TemporaryDirectory') if one was leaked."""
    program = EmbeddedProgram("sleep")
    await program.launch(lambda workdir: [*SLEEP, str(workdir)], always_ready, 5)
    pid, log_path = program.pid, program.log_path
    assert pid is not None
    assert log_path is not None

    with structlog.testing.capture_logs() as logs:
        del program
        gc.collect()

    assert {
        "event": "embedded_program_leaked",
        "program": "sleep",
        "pid": pid,
        "log_level": "warning",
    } in logs
    assert not log_path.parent.exists(), "the working directory with the child's config should be removed"
    await wait_until(lambda: exited(pid), 10, f"the leaked child {pid} to be killed")


async def test_stop_detaches_the_leak_finalizer() -> None:
    program = EmbeddedProgram("sleep")
    await program.launch(lambda _workdir: SLEEP, always_ready, 5)
    await program.stop()

    with structlog.testing.capture_logs() as logs:
        del program
        gc.collect()

    assert logs == []
