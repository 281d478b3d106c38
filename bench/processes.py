"""What a process tree costs, from /proc: CPU seconds (of the tree or of each thread) and resident memory."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024

# /proc/<pid>/stat, after the ")" that ends the command name: field 3 (state) is index 0, so utime (14),
# stime (15), cutime (16) and cstime (17) are 11-14, and rss (24, in pages) is 21.
UTIME, CSTIME, RSS = 11, 14, 21


def _stat(path: str) -> tuple[str, list[str]] | None:
    """A /proc stat file as (command name, the fields after it); None when the process or thread is gone."""
    try:
        text = Path(path).read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()


def tree(pid: int) -> list[int]:
    """`pid` and its live descendants."""
    try:
        return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used by `pid` and its descendants: their own, and that of the children they reaped.

    A child reaped between two readings moves from its own line into its parent's cutime/cstime, so the
    difference of two readings counts it once either way.
    """
    ticks = 0
    for member in tree(pid):
        stat = _stat(f"/proc/{member}/stat")
        if stat is not None:
            ticks += sum(int(value) for value in stat[1][UTIME : CSTIME + 1])
    return ticks / CLK_TCK


def tree_rss_mb(pid: int, without: str | None = None) -> float:
    """Resident memory of `pid` and its descendants, in MiB; without the processes of program `without`."""
    pages = 0
    for member in tree(pid):
        stat = _stat(f"/proc/{member}/stat")
        if stat is not None and stat[0] != without:
            pages += int(stat[1][RSS])
    return pages * PAGE_BYTES / MIB


def thread_cpu_s(pid: int) -> dict[int, tuple[str, float]]:
    """Each thread of `pid`: (its name, its CPU seconds)."""
    threads: dict[int, tuple[str, float]] = {}
    for path in Path(f"/proc/{pid}/task").glob("*/stat"):
        stat = _stat(str(path))
        if stat is not None:
            name, fields = stat
            # The kernel cuts thread names to 15 characters, padding some with a space.
            cpu_s = (int(fields[UTIME]) + int(fields[UTIME + 1])) / CLK_TCK
            threads[int(path.parent.name)] = (name.strip(), cpu_s)
    return threads
