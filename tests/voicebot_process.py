"""`python -m voicebot serve` as a child process of the test: several of them make a cluster."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.servers import free_livekit_ports, free_port, free_sip_port
from voicebot.embedded.livekit_server import LiveKitServerPorts

ROOT = Path(__file__).resolve().parent.parent


async def wait_until(check: Callable[[], Awaitable[bool]], within_s: float, what: str) -> None:
    """Poll `check()` until it holds; fail naming `what` was awaited if it does not within `within_s`."""
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within_s:g}s waiting for {what}")
        await asyncio.sleep(0.05)


def process_alive(pid: int) -> bool:
    """Whether `pid` is a process that has not exited (a zombie nobody reaped yet counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # The state follows the command name in parentheses, which may itself hold spaces.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


# As in tests/conftest.py: pocketsphinx and espeak-ng, whose transcripts and greetings are exact; a test of
# the default pipeline passes DEFAULT_PIPELINE.
FAST_PIPELINE = {"VOICEBOT_MODELS_STT": "pocketsphinx", "VOICEBOT_MODELS_TTS": "espeak"}
DEFAULT_PIPELINE = {"VOICEBOT_MODELS_STT": "moonshine", "VOICEBOT_MODELS_TTS": "piper"}


MACHINE_ADMISSION_OFF = {"VOICEBOT_SESSIONS_ADMISSION_MAX_MACHINE_CPU": "0"}
"""The machine's CPU is the test suite's more than voicebot's (its clients, browsers, other servers), so
admission by it is off in the voicebots tests start (tests/integration/test_admission.py tests it)."""


def cli_env(**extra: str) -> dict[str, str]:
    """The test's environment without LIVEKIT_/VOICEBOT_ settings of its own, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "VOICEBOT_"))}
    return {**env, "VOICEBOT_LOGGING_FORMAT": "json", **FAST_PIPELINE, **MACHINE_ADMISSION_OFF, **extra}


def serve_env(ports: LiveKitServerPorts) -> dict[str, str]:
    """The shipped config.toml (no LiveKit URL: voicebot runs its own) moved onto free ports, so the test
    never meets a running voicebot."""
    return {
        "VOICEBOT_LIVEKIT_PORT": str(ports.http),
        "VOICEBOT_LIVEKIT_TCP_PORT": str(ports.tcp),
        "VOICEBOT_LIVEKIT_UDP_PORT": str(ports.udp),
    }


def sip_serve_env(rtp_base: int) -> dict[str, str]:
    """serve_env with SIP on: voicebot also runs redis-server and livekit-sip, on free ports.

    Each test passes its own `rtp_base`, as the RTP range is not checked for being free.
    """
    rtp_start = rtp_base + (os.getpid() % 100) * 50
    return serve_env(free_livekit_ports()) | {
        "VOICEBOT_SIP_ENABLED": "true",
        "VOICEBOT_SIP_PORT": str(free_sip_port()),
        "VOICEBOT_SIP_HEALTH_PORT": str(free_port()),
        "VOICEBOT_SIP_REDIS_PORT": str(free_port()),
        "VOICEBOT_SIP_RTP_PORT_START": str(rtp_start),
        "VOICEBOT_SIP_RTP_PORT_END": str(rtp_start + 49),
    }


@dataclass
class VoicebotProcess:
    """One running voicebot and the base URL of its API."""

    process: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_events(self) -> list[dict[str, Any]]:
        """voicebot's JSON log lines so far, oldest first."""
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            # Output from outside structlog (a traceback, a library's print) is not an event.
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
        return events

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, f"{self.base}{path}", json=body) as response,
        ):
            return response.status, await response.json()

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to leave its rooms or release its leases."""
        self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await asyncio.to_thread(self.log_path.unlink, missing_ok=True)


async def start_voicebot(**env: str) -> VoicebotProcess:
    """Start `serve` on a free port with these VOICEBOT_/LIVEKIT_ variables and wait until it listens."""
    return await launch_voicebot(env)


async def launch_voicebot(
    env: Mapping[str, str], *, new_session: bool = False, args: Sequence[str] = ()
) -> VoicebotProcess:
    """start_voicebot(); with `new_session` voicebot leads a process group of its own, as a program started
    from a terminal does; `args` go after `serve --port N` (e.g. --workers 2)."""
    port = free_port()
    # Its log goes to a file: an unread pipe would stall it, and a failed start should say why.
    log_fd, log_name = tempfile.mkstemp(prefix="voicebot-serve-", suffix=".log")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voicebot",
        "serve",
        "--port",
        str(port),
        *args,
        cwd=ROOT,
        env=cli_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=log_fd,
        start_new_session=new_session,
    )
    os.close(log_fd)
    assert process.stdout is not None
    first_line = await asyncio.wait_for(process.stdout.readline(), 60)
    if f"http://127.0.0.1:{port}" not in first_line.decode():
        await process.wait()
        log_text = await asyncio.to_thread(Path(log_name).read_text, errors="replace")
        tail = log_text[-3000:]
        raise AssertionError(f"voicebot serve did not start (exit {process.returncode}):\n{tail}")
    return VoicebotProcess(process, port, Path(log_name))
