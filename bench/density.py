"""Density (issue 14): what each concurrent talking session costs, voicebot against the standard worker.

For each K (0, 2, 4, 6, 8 by default) and each system, in one run, alternating system by system at each K:
a fresh livekit-server, a fresh system (`voicebot serve` with room for K sessions and measured admission off,
so that all K are admitted; or bench/standard_worker.py, livekit-agents' process executor, running the same
agent), K rooms (create-room; or CreateRoom + CreateAgentDispatch), and K clients in one process of their
own (bench/density_clients.py), each asking "what are your opening hours" (espeak-ng, 48 kHz) at the start
of every 7 s cycle and listening for the reply. After the settle time, a window is measured:

- CPU, in % of one core, from /proc/<pid>/stat (user + system, with the reaped children's, summed over the
  process and its descendants: espeak-ng's syntheses, and the standard worker's job processes) for the system,
  livekit-server and the clients' process; for voicebot also per thread (/proc/<pid>/task/*/stat);
- voicebot's event loop from /api/livekit/health: p99 and max lag (over the monitor's last minute, which
  includes the settle time), and the blocked count in the window; also the buckets of /metrics' lag
  histogram that hold the window's own p99 and max;
- questions asked and replies heard in the window, and RSS at its start and end (MB; the process tree
  without espeak-ng's short-lived syntheses).

Then the CPU each added session costs: the least-squares slope of CPU % over the K measured.

`--providers offline` (the default) runs both systems on the offline pipeline config.toml chooses;
`--providers scripted` runs both on bench/scripted_providers.py's cloud-style stand-ins (no local model but
the VAD), so that the runtime's own cost per session shows (voicebot is then bench.scripted_voicebot).

    .venv/bin/python -m bench.density [--ks 0,2,4,6,8] [--settle-s 15] [--window-s 30] [--providers scripted]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil
from livekit import api

from bench.common import (
    RESULTS,
    ROOT,
    livekit_server,
    post_json,
    standard_worker,
    voicebot_process,
    write_result,
)
from bench.processes import thread_cpu_s, tree, tree_cpu_s, tree_rss_mb
from bench.standard_worker import AGENT_NAME
from tests.servers import API_KEY, API_SECRET
from voicebot.embedded.livekit_server import EmbeddedLiveKitServer
from voicebot.livekit import LiveKitGateway

VOICEBOT = "voicebot_in_process"
STANDARD = "standard_worker_process_executor"
LABELS = {VOICEBOT: "voicebot", STANDARD: "standard worker"}
PHRASE = "what are your opening hours"
CYCLE_S = 7.0
TTS_PROGRAM = "espeak-ng"
"""The TTS's synthesis processes: their CPU is the session's, but they live for milliseconds, so their memory
would only add noise to RSS readings seconds apart."""
READY_TIMEOUT_S = 120.0
WORKER_REGISTERED_TIMEOUT_S = 60.0
LOOP_LAG_BUCKETS = "voicebot_event_loop_lag_seconds_bucket{"
MAIN_THREAD = "event loop (main thread)"

TARGETS = {
    "voicebot_cpu_percent_per_session_at_most": 5.0,
    "voicebot_cpu_percent_per_session_at_most_scripted": 2.0,
    "standard_over_voicebot_per_session_at_least": 3.0,
    "voicebot_loop_p99_ms_under_at_6": 50.0,
    "voicebot_rss_flat_within_mb_over_60_s": 5.0,
}

Open = Callable[[], Awaitable[tuple[str, str]]]


@dataclass
class Running:
    """A system under test: its main process, how to open a session, and voicebot's HTTP base."""

    pid: int
    open_session: Open
    base: str = ""


def lag_buckets(metrics: str) -> dict[float, float]:
    """voicebot's loop-lag histogram from /metrics: cumulative count by upper bound (s)."""
    buckets: dict[float, float] = {}
    for line in metrics.splitlines():
        if line.startswith(LOOP_LAG_BUCKETS):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def window_lag_ms(start: dict[float, float], end: dict[float, float]) -> tuple[float, float] | None:
    """The upper bounds (ms) of the histogram buckets holding the p99 and the max of the lags observed
    between two reads of it; None when none were."""
    total = end.get(math.inf, 0.0) - start.get(math.inf, 0.0)
    if total <= 0:
        return None
    bounds = sorted(end)
    p99 = next(b for b in bounds if end[b] - start.get(b, 0.0) >= 0.99 * total)
    top = next(b for b in bounds if end[b] - start.get(b, 0.0) >= total)
    return p99 * 1000, top * 1000


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None with fewer than two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return numerator / sum((x - mean_x) ** 2 for x, _ in points)


class Callers:
    """The clients' process (bench/density_clients.py), spoken to over its stdin and stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def event(self, name: str, timeout_s: float) -> dict[str, Any]:
        """The next JSON line it prints, which must be event `name`."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        if not line:
            raise RuntimeError(f"the clients' process exited (code {await self.process.wait()}); see its log")
        answer: dict[str, Any] = json.loads(line)
        if answer.get("event") != name:
            raise RuntimeError(f"the clients' process said {answer}, not {name}")
        return answer

    async def count(self) -> dict[str, Any]:
        """Questions asked and replies heard so far, in all and per client."""
        await self.send("count")
        return await self.event("count", 10)


@asynccontextmanager
async def callers(sessions: list[tuple[str, str]], max_s: float) -> AsyncIterator[Callers | None]:
    """The clients' process with one client per session, once each has joined; None for no sessions."""
    if not sessions:
        yield None
        return
    with (RESULTS / "density-clients.log").open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.density_clients",
            cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log_file,
        )  # fmt: skip
    clients = Callers(process)
    try:
        brief = {"sessions": sessions, "phrase": PHRASE, "cycle_s": CYCLE_S, "max_s": max_s}
        await clients.send(json.dumps(brief))
        await clients.event("ready", READY_TIMEOUT_S)
        yield clients
    finally:
        with contextlib.suppress(ConnectionError):
            await clients.send("stop")
        await _end(process, grace_s=20)


async def _end(process: asyncio.subprocess.Process, grace_s: float) -> None:
    """Wait `grace_s` for `process` to exit, then SIGTERM it, then SIGKILL it."""
    for signal_it in (None, process.terminate, process.kill):
        if signal_it is not None:
            with contextlib.suppress(ProcessLookupError):
                signal_it()
        try:
            await asyncio.wait_for(process.wait(), grace_s)
            return
        except TimeoutError:
            grace_s = 10


PROVIDERS = ("offline", "scripted")
SCRIPTED_VOICEBOT = ("bench.scripted_voicebot", "--transcript", PHRASE)
SCRIPTED_ENV = {"BENCH_PROVIDERS": "scripted", "BENCH_TRANSCRIPT": PHRASE}


@asynccontextmanager
async def voicebot_system(
    server: EmbeddedLiveKitServer, http: aiohttp.ClientSession, k: int, providers: str
) -> AsyncIterator[Running]:
    """`voicebot serve` with room for `k` sessions and measured admission off."""
    async with voicebot_process(
        server,
        log_name="voicebot-density.log",
        command=SCRIPTED_VOICEBOT if providers == "scripted" else ("voicebot", "serve"),
        VOICEBOT_SESSIONS_MAX_CONCURRENT=str(k + 5),
        VOICEBOT_SESSIONS_ADMISSION_MAX_LOOP_LAG_MS="0",
        VOICEBOT_SESSIONS_ADMISSION_MAX_CPU="0",
        VOICEBOT_SESSIONS_ADMISSION_MAX_MODEL_WAIT_MS="0",
    ) as (process, base):

        async def open_session() -> tuple[str, str]:
            room = await post_json(http, f"{base}/api/livekit/create-room", {"agent_id": "agent-123"})
            return room["livekit_url"], room["access_token"]

        yield Running(process.pid, open_session, base)


@asynccontextmanager
async def standard_system(
    server: EmbeddedLiveKitServer, http: aiohttp.ClientSession, _k: int, providers: str
) -> AsyncIterator[Running]:
    """bench/standard_worker.py, registered with `server`; its job processes are killed if it leaves any."""
    lkapi = api.LiveKitAPI(server.url, API_KEY, API_SECRET, session=http)
    gateway = LiveKitGateway(server.url, API_KEY, API_SECRET)
    counter = iter(range(10**6))
    family: list[psutil.Process] = []
    try:
        async with standard_worker(server, **(SCRIPTED_ENV if providers == "scripted" else {})) as process:

            async def open_session() -> tuple[str, str]:
                name = f"bench_density_{next(counter)}"
                await lkapi.room.create_room(api.CreateRoomRequest(name=name, empty_timeout=120))
                await lkapi.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=name)
                )
                return server.url, gateway.user_token(name, ttl_s=3600)[1]

            await _registered(server)
            try:
                yield Running(process.pid, open_session)
            finally:
                with contextlib.suppress(psutil.NoSuchProcess):
                    family = psutil.Process(process.pid).children(recursive=True)
    finally:
        await gateway.close()
        # The worker stops its job processes itself; one killed after ignoring SIGTERM may leave some.
        for leftover in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                if leftover.is_running():
                    leftover.kill()


async def _registered(server: EmbeddedLiveKitServer) -> None:
    """Wait until livekit-server has logged the worker's registration: a dispatch before it is lost."""
    log_path = server.log_path
    assert log_path is not None
    deadline = time.monotonic() + WORKER_REGISTERED_TIMEOUT_S
    while "worker registered" not in log_path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the standard worker did not register within {WORKER_REGISTERED_TIMEOUT_S} s")
        await asyncio.sleep(0.5)


SYSTEMS: dict[str, Callable[..., AbstractAsyncContextManager[Running]]] = {
    VOICEBOT: voicebot_system,
    STANDARD: standard_system,
}


@dataclass
class Reading:
    """Everything read at one end of the window."""

    at: float
    cpu_s: dict[str, float]
    threads: dict[int, tuple[str, float]]
    rss_mb: float
    processes: int
    loop: dict[str, Any] = field(default_factory=dict)
    lag: dict[float, float] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)


async def read(
    http: aiohttp.ClientSession, running: Running, server: EmbeddedLiveKitServer, clients: Callers | None
) -> Reading:
    """CPU, threads and memory at once from /proc, then voicebot's loop and the clients' counts."""
    server_pid = server.pid
    assert server_pid is not None, "livekit-server is not running"
    reading = Reading(
        at=time.monotonic(),
        cpu_s={
            "system": tree_cpu_s(running.pid),
            "livekit_server": tree_cpu_s(server_pid),
            "clients": tree_cpu_s(clients.process.pid) if clients else 0.0,
        },
        threads=thread_cpu_s(running.pid) if running.base else {},
        rss_mb=tree_rss_mb(running.pid, without=TTS_PROGRAM),
        processes=len(tree(running.pid)),
    )
    if running.base:
        async with http.get(f"{running.base}/api/livekit/health") as response:
            reading.loop = (await response.json())["process"]["event_loop"]
        async with http.get(f"{running.base}/metrics") as response:
            response.raise_for_status()
            reading.lag = lag_buckets(await response.text())
    if clients is not None:
        reading.counts = await clients.count()
    return reading


def threads_used(first: Reading, last: Reading, pid: int, seconds: float) -> list[dict[str, Any]]:
    """CPU % of one core per thread name over the window, the loop's own thread apart, busiest first."""
    by_name: dict[str, list[float]] = {}
    for tid, (name, cpu_s) in last.threads.items():
        before = first.threads.get(tid, (name, 0.0))[1]  # a thread started inside the window: all of it
        by_name.setdefault(MAIN_THREAD if tid == pid else name, []).append(cpu_s - before)
    rows = [
        {"name": name, "threads": len(used), "cpu_percent": round(100 * sum(used) / seconds, 1)}
        for name, used in by_name.items()
    ]
    return sorted(rows, key=lambda row: -float(row["cpu_percent"]))


def window(first: Reading, last: Reading, running: Running, k: int) -> dict[str, Any]:
    """What one system did with `k` sessions between two readings."""
    seconds = last.at - first.at
    result: dict[str, Any] = {
        "k": k,
        "window_s": round(seconds, 2),
        "cpu_percent": {
            role: round(100 * (last.cpu_s[role] - first.cpu_s[role]) / seconds, 1) for role in first.cpu_s
        },
        "rss_mb": {"start": round(first.rss_mb, 1), "end": round(last.rss_mb, 1)},
        "processes": last.processes,
    }
    if k:
        result["questions"] = last.counts["questions"] - first.counts["questions"]
        result["replies"] = last.counts["replies"] - first.counts["replies"]
        result["greeted"] = sum(1 for c in last.counts["clients"] if c["greeted"])
        result["replies_per_client"] = [
            f"{end['replies'] - start['replies']}/{end['questions'] - start['questions']}"
            for start, end in zip(first.counts["clients"], last.counts["clients"], strict=True)
        ]
        errors = [c["error"] for c in last.counts["clients"] if "error" in c] + last.counts.get("failed", [])
        if errors:
            result["client_errors"] = errors
    if running.base:
        result["threads"] = threads_used(first, last, running.pid, seconds)
        result["loop"] = {
            "p99_ms": last.loop["p99_ms"],
            "max_ms": last.loop["max_ms"],
            "covers_s": round(last.loop["samples"] * 0.25, 1),  # LoopMonitor's 0.25 s interval
            "blocked_in_window": last.loop["blocked_count"] - first.loop["blocked_count"],
            "blocked_since_start": last.loop["blocked_count"],
            # The monitor's p99 and max span its last minute, settle time and joins included; the
            # histogram's buckets are coarse but count the window alone.
            "window_p99_max_at_most_ms": window_lag_ms(first.lag, last.lag),
        }
    return result


async def measure(
    system: str, k: int, settle_s: float, window_s: float, providers: str = "offline"
) -> dict[str, Any]:
    """One system with `k` talking sessions, from a fresh livekit-server to everything stopped."""
    async with (
        livekit_server() as server,
        aiohttp.ClientSession() as http,
        SYSTEMS[system](server, http, k, providers) as running,
    ):
        sessions = [await running.open_session() for _ in range(k)]
        async with callers(sessions, max_s=settle_s + window_s + 180) as clients:
            await asyncio.sleep(settle_s)
            first = await read(http, running, server, clients)
            await asyncio.sleep(window_s)
            last = await read(http, running, server, clients)
    return window(first, last, running, k)


def per_session(rows: list[dict[str, Any]], role: str) -> float | None:
    """CPU % of one core each added session costs `role`: the least-squares slope over the K measured."""
    fitted = slope([(row["k"], row["cpu_percent"][role]) for row in rows if "error" not in row])
    return None if fitted is None else round(fitted, 2)


async def run(ks: list[int], settle_s: float, window_s: float, providers: str) -> dict[str, Any]:
    started = time.monotonic()
    rows: dict[str, list[dict[str, Any]]] = {system: [] for system in SYSTEMS}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "density-clients.log").write_bytes(b"")
    for k in ks:
        for system in SYSTEMS:
            print(f"{LABELS[system]}, {k} sessions", flush=True)
            try:
                rows[system].append(await measure(system, k, settle_s, window_s, providers))
            except Exception as exc:  # one failed measurement must not lose the run's others
                rows[system].append({"k": k, "error": f"{type(exc).__name__}: {exc}"})
            print(f"  {json.dumps(rows[system][-1])}", flush=True)
    result: dict[str, Any] = {
        "unit": "CPU % of one core, ms, MB",
        "ks": ks,
        "settle_s": settle_s,
        "window_s": window_s,
        "phrase": PHRASE,
        "cycle_s": CYCLE_S,
        "providers": providers,
    }
    for system, measured in rows.items():
        result[system] = {
            "rows": measured,
            "per_session_cpu_percent": {
                role: per_session(measured, role) for role in ("system", "livekit_server", "clients")
            },
        }
    result["targets"] = TARGETS
    result["run_s"] = round(time.monotonic() - started, 1)
    return result


def _cell(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:g}{suffix}"


def table(result: dict[str, Any]) -> list[str]:
    """The result as printed: one row per system and K, then the slopes and the issue's targets."""
    lines = [
        f"density: {result['window_s']:g} s window after {result['settle_s']:g} s to settle; "
        "CPU in % of one core",
        f"{'system':17}{'K':>3}{'system':>9}{'livekit':>9}{'clients':>9}{'loop p99/max ms':>17}"
        f"{'window <=':>13}{'blocked':>9}{'replies/asked':>15}{'RSS MB start->end':>20}",
    ]
    for k in result["ks"]:
        for system in SYSTEMS:
            row = next(r for r in result[system]["rows"] if r["k"] == k)
            if "error" in row:
                lines.append(f"{LABELS[system]:17}{k:>3}   failed: {row['error'][:90]}")
                continue
            cpu = row["cpu_percent"]
            loop = row.get("loop")
            lag = f"{loop['p99_ms']:.1f} / {loop['max_ms']:.1f}" if loop else "-"
            blocked = str(loop["blocked_in_window"]) if loop else "-"
            bounds = loop["window_p99_max_at_most_ms"] if loop else None
            inside = f"{bounds[0]:g} / {bounds[1]:g}" if bounds else "-"
            replies = f"{row['replies']}/{row['questions']}" if k else "-"
            rss = f"{row['rss_mb']['start']:.0f} -> {row['rss_mb']['end']:.0f}"
            clients = f"{cpu['clients']:.1f}" if k else "-"
            lines.append(
                f"{LABELS[system]:17}{k:>3}{cpu['system']:>9.1f}{cpu['livekit_server']:>9.1f}{clients:>9}"
                f"{lag:>17}{inside:>13}{blocked:>9}{replies:>15}{rss:>20}"
            )
    lines.append(
        "loop p99/max: voicebot's health, over its monitor's last minute (up to 60 s, settle included)"
    )
    lines.append("window <=: the buckets of /metrics' lag histogram that hold the window's own p99 and max")
    lines.append("per added session (least squares over K), % of one core:")
    for system in SYSTEMS:
        slopes = result[system]["per_session_cpu_percent"]
        lines.append(
            f"  {LABELS[system]:17}system {_cell(slopes['system'])}   livekit-server "
            f"{_cell(slopes['livekit_server'])}   clients {_cell(slopes['clients'])}"
        )
    lines.extend(targets(result))
    return lines


def targets(result: dict[str, Any]) -> list[str]:
    """The issue's targets beside what was measured; printed, never asserted."""
    ours = result[VOICEBOT]["per_session_cpu_percent"]["system"]
    theirs = result[STANDARD]["per_session_cpu_percent"]["system"]
    ratio = round(theirs / ours, 1) if ours and theirs is not None and ours > 0 else None
    measured = [r for r in result[VOICEBOT]["rows"] if "error" not in r]
    at_6 = next((r for r in measured if r["k"] == 6), None)
    top = max(measured, key=lambda r: r["k"], default=None)
    rss = (
        f"{top['rss_mb']['end'] - top['rss_mb']['start']:+.1f} MB over {top['window_s']:g} s "
        f"at {top['k']} sessions"
        if top
        else "not measured"
    )
    limit = TARGETS[
        "voicebot_cpu_percent_per_session_at_most_scripted"
        if result.get("providers") == "scripted"
        else "voicebot_cpu_percent_per_session_at_most"
    ]
    return [
        "issue 14's targets (not asserted):",
        f"  voicebot <= {limit:g}% of a core per session ({result.get('providers', 'offline')}): "
        + _cell(ours, "%"),
        f"  >= 3x below the standard worker per session: {_cell(ratio, 'x')}",
        "  loop p99 < 50 ms at 6 sessions: "
        + (f"{at_6['loop']['p99_ms']:.1f} ms" if at_6 else "6 sessions not measured"),
        f"  RSS flat +-5 MB over a 60 s window at steady load: {rss}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ks", default="0,2,4,6,8", help="session counts to measure at")
    parser.add_argument(
        "--settle-s", type=float, default=15.0, help="after the clients joined, before the window"
    )
    parser.add_argument("--window-s", type=float, default=30.0, help="how long each measurement lasts")
    parser.add_argument(
        "--providers", choices=PROVIDERS, default="offline", help="the pipeline both systems run (see above)"
    )
    args = parser.parse_args()
    ks = sorted({int(k) for k in args.ks.split(",")})
    result = asyncio.run(run(ks, args.settle_s, args.window_s, args.providers))
    path = write_result("density" if args.providers == "offline" else f"density_{args.providers}", result)
    print()
    print("\n".join(table(result)))
    print(f"(written to {path.relative_to(ROOT)}; the run took {result['run_s']:.0f} s)")


if __name__ == "__main__":
    main()
