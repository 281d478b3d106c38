"""structlog set-up: key-value events, console in a terminal and JSON elsewhere."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from aiohttp.http_exceptions import HttpProcessingError

_SECRET_KEYS = frozenset({"token", "access_token", "api_secret", "secret", "authorization", "password"})


def _drop_secrets(
    _logger: object, _method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """Never let a token or secret reach a log line, whoever passed it."""
    for key in _SECRET_KEYS & event.keys():
        event[key] = "[redacted]"
    return event


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Route structlog and the standard library's logging through one renderer."""
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's own access log would repeat our request event in another format.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, UnparsableRequestFilter) for f in server_log.filters):
        server_log.addFilter(UnparsableRequestFilter())


class UnparsableRequestFilter(logging.Filter):
    """Turn aiohttp's traceback for a request it could not parse into one warning event.

    aiohttp answers such requests itself (a text/plain 400, before any middleware) and logs the parser's
    exception with its traceback and the first bytes of the offending line, which may be a credential.
    A client's malformed request is not our failure: one line naming the kind of fault is enough.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args, record.exc_info, record.exc_text = (
                "http_request_rejected",
                (),
                None,
                None,
            )
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.status = exc.code
            record.reason = type(exc).__name__
        return True
