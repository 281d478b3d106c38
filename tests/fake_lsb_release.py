"""A stand-in `lsb_release` for tests: prints a fixed answer and logs each run, to count who runs it."""

from __future__ import annotations

from pathlib import Path

from voicebot.sessions.lsb_release import PROGRAM

ANSWER = "Distributor ID:\tDebian\nDescription:\tDebian GNU/Linux 12 (bookworm)\nRelease:\t12\n"


def fake_program(directory: Path, body: str = f"printf '{ANSWER}'") -> Path:
    """An executable `lsb_release` in `directory` running `body` (sh); returns the file each run logs to."""
    directory.mkdir(parents=True, exist_ok=True)
    runs = directory / "runs.log"
    runs.write_text("")
    program = directory / PROGRAM
    program.write_text(f'#!/bin/sh\necho "$@" >> "{runs}"\n{body}\n')
    program.chmod(0o755)
    return runs
