"""lsb_release_answered_once: the program run once, then answered by a script that prints its words."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fake_lsb_release import ANSWER, fake_program
from voicebot.sessions.lsb_release import PROGRAM, answering_script, lsb_release_answered_once


async def answer_of(program: str) -> str:
    """What `program -a`, found on PATH, prints."""
    process = await asyncio.create_subprocess_exec(program, "-a", stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    return out.decode()


def run_script(text: str, tmp_path: Path) -> str:
    script = tmp_path / "answer.sh"
    script.write_text(answering_script(text))
    script.chmod(0o755)
    return subprocess.run([str(script)], capture_output=True, check=True, text=True).stdout


@pytest.mark.parametrize(
    "text",
    [ANSWER, "it's 100% \\n not a newline $HOME `date`\n", "no newline at the end", ""],
)
def test_the_script_prints_the_answer_exactly(text: str, tmp_path: Path) -> None:
    assert run_script(text, tmp_path) == text


async def test_inside_the_program_is_run_once_and_answered_from_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "real"
    runs = fake_program(real)
    monkeypatch.setenv("PATH", f"{real}{os.pathsep}/usr/bin{os.pathsep}/bin")
    async with lsb_release_answered_once() as script:
        assert script is not None
        assert shutil.which(PROGRAM) == str(script)
        for _ in range(3):
            assert await answer_of(PROGRAM) == ANSWER
        assert runs.read_text().splitlines() == ["-a"], "the real program should have run once, by us"
    assert os.environ["PATH"] == f"{real}{os.pathsep}/usr/bin{os.pathsep}/bin"
    assert not script.exists()


async def test_a_path_changed_meanwhile_keeps_its_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "real"
    fake_program(real, "echo hi")
    monkeypatch.setenv("PATH", str(real))
    async with lsb_release_answered_once() as script:
        assert script is not None
        os.environ["PATH"] += f"{os.pathsep}/opt/added"
    assert os.environ["PATH"] == f"{real}{os.pathsep}/opt/added"


async def test_without_the_program_nothing_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    async with lsb_release_answered_once() as script:
        assert script is None
        assert os.environ["PATH"] == str(tmp_path)


async def test_a_failing_program_is_left_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real"
    fake_program(real, "exit 3")
    monkeypatch.setenv("PATH", str(real))
    async with lsb_release_answered_once() as script:
        assert script is None
        assert shutil.which(PROGRAM) == str(real / PROGRAM)
