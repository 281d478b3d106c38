"""Command line: `serve` runs the API (and LiveKit when none is configured); `token` prints a join token."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import structlog
from aiohttp import web

from voicebot.config import ConfigError, Settings, load_settings
from voicebot.embedded.runner import EmbeddedProgramError
from voicebot.livekit import join_grants, sign_token
from voicebot.logs import configure_logging

DEFAULT_CONFIG = Path("config.toml")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="default: ./config.toml")
    parser = argparse.ArgumentParser(prog="voicebot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", parents=[common], help="serve the HTTP API")
    serve.add_argument("--host", default=None, help="address to listen on (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default from config: 8001)")
    token = commands.add_parser("token", parents=[common], help="print a join token for a room")
    token.add_argument("--room", required=True, help="room name")
    token.add_argument("--identity", required=True, help="participant identity")
    token.add_argument("--ttl", type=int, default=None, help="seconds the token is valid")
    args = parser.parse_args(argv)

    config_path: Path = args.config
    try:
        settings = load_settings(config_path, os.environ)
        if args.command == "serve":
            settings = _with_listen_address(settings, args.host, args.port)
    except ConfigError as exc:
        print(f"voicebot: config error in {config_path}: {exc}", file=sys.stderr)
        return 2
    if args.command == "token":
        print(_token(settings, args.room, args.identity, args.ttl))
        return 0
    return _serve(settings)


def _with_listen_address(settings: Settings, host: str | None, port: int | None) -> Settings:
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError("--port", f"must be a port number from 1 to 65535, got {port}")
    server = replace(
        settings.server,
        host=host if host is not None else settings.server.host,
        port=port if port is not None else settings.server.port,
    )
    return replace(settings, server=server)


def _token(settings: Settings, room: str, identity: str, ttl_s: int | None) -> str:
    lk = settings.livekit
    return sign_token(lk.api_key, lk.api_secret, identity, join_grants(room), ttl_s=ttl_s or lk.token_ttl_s)


def _serve(settings: Settings) -> int:
    from voicebot.app import create_app

    configure_logging(settings.logging.level, settings.logging.format)
    log = structlog.get_logger("voicebot")
    host, port = settings.server.host, settings.server.port
    app = create_app(settings)

    def announce(_message: object) -> None:
        print(f"voicebot serving on http://{host}:{port}  (Ctrl-C to stop)", flush=True)
        body = '{"agent_id":"agent-123"}'
        print(f"  try: curl -X POST http://{host}:{port}/api/livekit/create-room -d '{body}'", flush=True)

    try:
        web.run_app(app, host=host, port=port, print=announce, access_log=None, shutdown_timeout=10)
    except EmbeddedProgramError as exc:
        log.error("embedded_program_failed", program=exc.program, reason=str(exc))
        print(f"voicebot: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"voicebot: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
