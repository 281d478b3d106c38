"""What the benchmarks share: a real livekit-server, voicebot as its own process, and result files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from tests.servers import API_KEY, API_SECRET, free_livekit_ports, free_port
from voicebot.embedded.livekit_server import EmbeddedLiveKitServer, find_binary

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


# A machine this idle (all cores together) is quiet enough to time a join on.
QUIET_BUSY_FRACTION = 0.2
QUIET_WINDOW_S = 0.1


async def machine_quiet(at_least_s: float, give_up_s: float = 5.0) -> float:
    """Wait `at_least_s`, then until one QUIET_WINDOW_S window of the whole machine's CPU is under
    QUIET_BUSY_FRACTION busy (or `give_up_s` has passed); the seconds waited.

    On two cores, work left by the last trial (a standard worker spawning and warming its next idle
    process takes longer than any fixed pause) otherwise lands in the next trial, of either system.
    """
    started = time.monotonic()
    await asyncio.sleep(at_least_s)
    psutil.cpu_percent(interval=None)  # starts the first window
    while time.monotonic() - started < give_up_s:
        await asyncio.sleep(QUIET_WINDOW_S)
        if psutil.cpu_percent(interval=None) < QUIET_BUSY_FRACTION * 100:
            break
    return time.monotonic() - started


@asynccontextmanager
async def livekit_server() -> AsyncIterator[EmbeddedLiveKitServer]:
    """A livekit-server on free loopback ports."""
    server = EmbeddedLiveKitServer(
        find_binary(os.environ.get("LIVEKIT_SERVER_BIN", "")), free_livekit_ports(), API_KEY, API_SECRET
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def livekit_env(server: EmbeddedLiveKitServer, **extra: str) -> dict[str, str]:
    """The environment that points a process at `server`."""
    # VOICEBOT_MODELS_STT / _TTS pass through: a benchmark can be run again on another offline pipeline.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LIVEKIT_", "VOICEBOT_")) or k.startswith("VOICEBOT_MODELS_")
    }
    return {
        **env,
        "LIVEKIT_URL": server.url,
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
        "VOICEBOT_LOGGING_FORMAT": "json",
        "VOICEBOT_LOGGING_LEVEL": "warning",
        # The machine's CPU is the benchmark's too (its clients, the standard worker): a benchmark about
        # admission (bench/overload.py) turns admission by it back on.
        "VOICEBOT_SESSIONS_ADMISSION_MAX_MACHINE_CPU": "0",
        **extra,
    }


@asynccontextmanager
async def voicebot_process(
    server: EmbeddedLiveKitServer,
    *,
    port: int | None = None,
    log_name: str = "voicebot.log",
    config: Path | str | None = None,
    command: Sequence[str] = ("voicebot", "serve"),
    **env: str,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """`python -m voicebot serve` against `server` on `port` (a free one when not given), with `config`
    (default: the shipped config.toml); yields the process and its base URL. Its log goes to
    bench/results/`log_name`. `command` is the module and arguments run before `--port` (another way to
    serve voicebot, such as bench.scripted_voicebot)."""
    port = port or free_port()
    RESULTS.mkdir(parents=True, exist_ok=True)
    config_args = ["--config", str(config)] if config is not None else []
    # voicebot's own log stays beside the results, for when a number looks wrong.
    with (RESULTS / log_name).open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", *command, *config_args, "--port", str(port),
            cwd=ROOT, env=livekit_env(server, **env), stdout=asyncio.subprocess.PIPE, stderr=log_file,
        )  # fmt: skip
    assert process.stdout is not None
    await asyncio.wait_for(process.stdout.readline(), 60)
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        await _stop(process)


@asynccontextmanager
async def standard_worker(
    server: EmbeddedLiveKitServer, **env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """bench/standard_worker.py registered with `server`: prod mode, process executor, warm idle processes;
    `env` is added to its environment."""
    # A group of its own: livekit-agents' job processes (a forkserver and its resource tracker) outlive the
    # worker's SIGTERM, and were left running after every benchmark until the group was killed as well.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "bench" / "standard_worker.py"),
        cwd=ROOT,
        # It runs as a script (livekit-agents' job processes import it by path): bench/ is importable so.
        env=livekit_env(server, PYTHONPATH=str(ROOT), **env),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        process_group=0,
    )
    try:
        yield process
    finally:
        await _stop(process)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, and SIGKILL after 30 s: a benchmark must not hang on a process that will not go."""
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        print(f"pid {process.pid} ignored SIGTERM for 30 s; killed", file=sys.stderr)
        process.kill()
        await process.wait()


async def post_json(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST JSON and return the JSON answer; raises on an error status."""
    async with session.post(url, json=body) as response:
        response.raise_for_status()
        answer: dict[str, Any] = await response.json()
        return answer


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: list[float]) -> dict[str, float]:
    """p50, p90, p95, mean, min and max of a list of numbers."""
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 2),
        "p90": round(percentile(values, 90), 2),
        "p95": round(percentile(values, 95), 2),
        "mean": round(statistics.fmean(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json with the machine it ran on."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "benchmark": name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        **result,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
