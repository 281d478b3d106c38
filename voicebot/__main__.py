"""Command line: `serve` runs the API (and LiveKit if none is set); `token` and `keys` print credentials."""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from voicebot.config import ConfigError, Settings, load_settings
from voicebot.embedded.runner import EmbeddedProgramError
from voicebot.errors import ModelMissing
from voicebot.exposure import check_exposure
from voicebot.livekit import join_grants, join_ttl, sign_token
from voicebot.logs import configure_logging
from voicebot.shutdown import StopSignals
from voicebot.workers import READY_LINE, check_workers, run_workers, worker_count

# In-flight HTTP requests get this long once a stop begins; the API's requests take well under a second.
HTTP_SHUTDOWN_TIMEOUT_S = 2.0
# On top of the sessions' drain and the HTTP requests: closing rooms and stopping livekit-server and
# livekit-sip (which get 1 s before a second SIGTERM) and a saturated machine's delays.
STOP_MARGIN_S = 6.0

DEFAULT_CONFIG = Path("config.toml")
SERVE_EXIT_CODES = """\
exit codes:
  0        stopped by SIGTERM or SIGINT after a graceful stop
  1        LiveKit could not be started, or the address cannot be listened on
  2        configuration error
  128+N    stopped by force on signal N (143 SIGTERM, 130 SIGINT): a second signal, or a stop that
           overran [sessions] drain_timeout_s + 8 s; child programs are killed first
"""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="default: ./config.toml")
    parser = argparse.ArgumentParser(prog="voicebot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="serve the HTTP API",
        epilog=SERVE_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default=None, help="address to listen on (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default from config: 8001)")
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help="voicebot processes sharing the port: a number, or auto for one per core (default: 1)",
    )
    # Internal: one of `--workers N`'s children, started by the parent with its LiveKit and Redis.
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    token = commands.add_parser("token", parents=[common], help="print a join token for a room")
    token.add_argument("--room", required=True, help="room name")
    token.add_argument("--identity", required=True, help="participant identity")
    token.add_argument(
        "--ttl", type=int, default=None, help="seconds the token is valid (at most livekit.token_ttl_s)"
    )
    commands.add_parser(
        "keys", help="print a fresh API key and LiveKit key pair as lines of an env file (.env)"
    )
    args = parser.parse_args(argv)
    if args.command == "keys":
        print(fresh_keys())
        return 0

    config_path: Path = args.config
    try:
        settings = load_settings(config_path, os.environ)
        if args.command == "serve":
            settings = _with_listen_address(settings, args.host, args.port)
            check_exposure(settings)
            if args.workers > 1:
                check_workers(settings, args.workers)
    except ConfigError as exc:
        print(f"voicebot: config error in {config_path}: {exc}", file=sys.stderr)
        return 2
    if args.command == "token":
        print(_token(settings, args.room, args.identity, args.ttl))
        return 0
    if args.workers > 1 and not args.worker:
        return _serve_workers(settings, args.workers, config_path)
    return _serve(settings, worker=args.worker)


def _workers(text: str) -> int:
    try:
        return worker_count(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _with_listen_address(settings: Settings, host: str | None, port: int | None) -> Settings:
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError("--port", f"must be a port number from 1 to 65535, got {port}")
    server = replace(
        settings.server,
        host=host if host is not None else settings.server.host,
        port=port if port is not None else settings.server.port,
    )
    return replace(settings, server=server)


def fresh_keys() -> str:
    """Env-file lines, all new: the API key, the LiveKit key pair, and the Redis and Grafana passwords."""
    # URL-safe base64 carries no comma (the API key list's separator), quote or space.
    return "\n".join(
        [
            f"VOICEBOT_AUTH_API_KEYS={secrets.token_urlsafe(32)}",
            f"LIVEKIT_API_KEY=API{secrets.token_hex(6)}",
            f"LIVEKIT_API_SECRET={secrets.token_urlsafe(36)}",
            # compose.yaml puts it into a redis:// URL, which URL-safe characters never break.
            f"REDIS_PASSWORD={secrets.token_urlsafe(32)}",
            # compose.yaml's monitoring profile; compose reads every variable before it looks at profiles.
            f"GRAFANA_ADMIN_PASSWORD={secrets.token_urlsafe(24)}",
        ]
    )


def _token(settings: Settings, room: str, identity: str, ttl_s: int | None) -> str:
    lk = settings.livekit
    # --ttl may shorten the token's life, never lengthen it past livekit.token_ttl_s.
    ttl = join_ttl(ttl_s, lk.token_ttl_s)
    return sign_token(lk.api_key, lk.api_secret, identity, join_grants(room), ttl_s=ttl)


def _serve_workers(settings: Settings, count: int, config_path: Path) -> int:
    configure_logging(settings.logging.level, settings.logging.format)
    grace_s = settings.sessions.drain_timeout_s + HTTP_SHUTDOWN_TIMEOUT_S + STOP_MARGIN_S
    # The parent's own failures to start a worker come as RuntimeError, and are said in one line too.
    return _exit_code(run_workers(settings, count, config_path, grace_s), settings, also=(RuntimeError,))


def _serve(settings: Settings, *, worker: bool = False) -> int:
    from voicebot.app import create_app

    configure_logging(settings.logging.level, settings.logging.format)
    return _exit_code(run_app(create_app(settings), settings, worker=worker), settings)


def _exit_code(
    main: Coroutine[Any, Any, int], settings: Settings, *, also: tuple[type[Exception], ...] = ()
) -> int:
    """Run `main` to its exit code; a child program that fails or a port that cannot be had is one line
    on stderr and exit code 1, not a traceback."""
    host, port = settings.server.host, settings.server.port
    one_line: tuple[type[Exception], ...] = (ModelMissing, *also)
    try:
        return asyncio.run(main)
    except EmbeddedProgramError as exc:
        structlog.get_logger("voicebot").error(
            "embedded_program_failed", program=exc.program, reason=str(exc)
        )
        print(f"voicebot: {exc}", file=sys.stderr)
        return 1
    except one_line as exc:
        print(f"voicebot: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"voicebot: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1


def _try_line(settings: Settings) -> str:
    """A curl command that creates a room; the key itself is never printed."""
    host, port = settings.server.host, settings.server.port
    bearer = " -H 'Authorization: Bearer <your API key>'" if settings.auth.api_keys else ""
    return (
        f"curl -X POST http://{host}:{port}/api/livekit/create-room -H 'Content-Type: application/json'"
        f'{bearer} -d \'{{"agent_id":"agent-123"}}\''
    )


async def run_app(app: web.Application, settings: Settings, *, worker: bool = False) -> int:
    """Serve `app` until SIGTERM or SIGINT, then stop in order: HTTP, sessions, rooms, livekit-server.

    A `worker` shares its port with the other workers of `serve --workers` (SO_REUSEPORT: the kernel
    spreads the connections) and tells its parent it listens with one line, READY_LINE.
    """
    log = structlog.get_logger("voicebot")
    host, port = settings.server.host, settings.server.port
    stop_requested = asyncio.Event()

    def request_stop(sig: signal.Signals) -> None:
        log.info("stop_requested", signal=sig.name)
        stop_requested.set()

    # Past this, a stop that has not finished is ended by force: sessions get drain_timeout_s.
    grace_s = settings.sessions.drain_timeout_s + HTTP_SHUTDOWN_TIMEOUT_S + STOP_MARGIN_S
    signals = StopSignals(asyncio.get_running_loop(), request_stop, grace_s)
    signals.install()
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT_S
    )
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_port=worker or None).start()
        if worker:
            print(f"{READY_LINE} on http://{host}:{port}", flush=True)
            await stop_requested.wait()
        elif not stop_requested.is_set():
            print(f"voicebot serving on http://{host}:{port}  (Ctrl-C to stop)", flush=True)
            print(f"  try: {_try_line(settings)}", flush=True)
            await stop_requested.wait()
    finally:
        await runner.cleanup()
        signals.stopped()
        signals.uninstall()
    log.info("stopped", signal=signals.received.name if signals.received else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
