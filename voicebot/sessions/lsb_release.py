"""`lsb_release -a` run once per process for the LiveKit SDK, which otherwise runs it before every join.

The Rust core of the LiveKit SDK describes the operating system in each join request (the os_info crate), and
on Linux that runs the `lsb_release -a` found on PATH, in the join's path, before the signalling socket opens.
On Debian 12 that is a shell script starting six more programs: 11 ms of every agent's join here (a plain
connect reached the server in 24.8 ms with it, 12.7 without). On Ubuntu it is a Python program, slower still.
Its answer never changes while voicebot runs, so voicebot asks once and puts first on PATH a script of the
same name that prints the same words with the shell's built-in printf.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

PROGRAM = "lsb_release"
# A healthy lsb_release answers in milliseconds; one that hangs must not hold the start.
_ASK_TIMEOUT_S = 5.0


def answering_script(answer: str) -> str:
    """A POSIX shell script that prints `answer` exactly, with no program but the shell."""
    quoted = "'" + answer.replace("'", "'\\''") + "'"
    return f"#!/bin/sh\nprintf '%s' {quoted}\n"


async def ask(program: str) -> str | None:
    """What `program -a` prints, or None if it fails or takes too long."""
    try:
        process = await asyncio.create_subprocess_exec(
            program,
            "-a",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        log.debug("lsb_release_not_run", error=str(exc))
        return None
    try:
        out, _ = await asyncio.wait_for(process.communicate(), _ASK_TIMEOUT_S)
    except TimeoutError:
        log.debug("lsb_release_timed_out", timeout_s=_ASK_TIMEOUT_S)
        return None
    finally:
        # Timed out, or the start cancelled: the program does not outlive the question.
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        log.debug("lsb_release_failed", returncode=process.returncode)
        return None
    return out.decode("utf-8", errors="replace")


@contextlib.asynccontextmanager
async def lsb_release_answered_once() -> AsyncIterator[Path | None]:
    """While inside, `lsb_release` on this process's PATH answers from memory; yields the script, or None
    when there is nothing to save (no such program, or it failed)."""
    program = shutil.which(PROGRAM)
    answer = await ask(program) if program is not None else None
    if answer is None:
        yield None
        return
    # A private directory (mode 0700): no one else can put another program in front of the PATH.
    with tempfile.TemporaryDirectory(prefix="voicebot-lsb-") as directory:
        script = Path(directory) / PROGRAM
        script.write_text(answering_script(answer))
        script.chmod(stat.S_IRWXU)
        had_path = "PATH" in os.environ
        os.environ["PATH"] = os.pathsep.join([directory, *_path_entries()])
        log.debug("lsb_release_answered_once", directory=directory)
        try:
            yield script
        finally:
            # Only our entry is taken out: whatever else changed PATH meanwhile stays.
            remaining = os.pathsep.join(e for e in _path_entries() if e != directory)
            if had_path:
                os.environ["PATH"] = remaining
            else:
                os.environ.pop("PATH", None)


def _path_entries() -> list[str]:
    return [entry for entry in os.environ.get("PATH", os.defpath).split(os.pathsep) if entry]
