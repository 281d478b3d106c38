"""structlog set-up: key-value events, console in a terminal and JSON elsewhere."""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

import structlog
from aiohttp.http_exceptions import HttpProcessingError

_SECRET_KEYS = frozenset({"token", "access_token", "api_secret", "secret", "authorization", "password"})
# A phone number wherever it hides in a value: a participant identity (sip_+15550123), a room name
# livekit-sip made from the caller's number, a library's own message. Without its "+" only a run of 9
# digits or more counts, so an id of 8 hex characters is never taken for one.
_NUMBER_IN_TEXT = re.compile(r"(?<![0-9A-Za-z])(?:\+[0-9]{6,15}|[0-9]{9,15})(?![0-9A-Za-z])")
_IDENTITY_PREFIX = "sip_"


def mask_phone(number: str) -> str:
    """A phone number (or SIP user part, or `sip_` identity) fit for a log: +15550123 -> +155****23."""
    prefix = _IDENTITY_PREFIX if number.startswith(_IDENTITY_PREFIX) else ""
    rest = number.removeprefix(prefix)
    if rest.removeprefix("+").isdigit():
        digits = rest.removeprefix("+")
        # The country code (or its first digits) says where a call went; the last two tell calls apart.
        head = digits[:3] if len(digits) >= 8 else digits[:1]
        tail = digits[-2:] if len(digits) >= 6 else ""
        return f"{prefix}{rest[: len(rest) - len(digits)]}{head}****{tail}"
    # Anything else (a name, an extension) is kept only as its first character.
    return f"{prefix}{rest[:1]}****" if rest else prefix


def mask_numbers(text: str) -> str:
    """`text` with every phone number in it masked, as in a room livekit-sip named after the caller."""
    return _NUMBER_IN_TEXT.sub(lambda match: mask_phone(match.group()), text)


def _mask_numbers(
    _logger: object, _method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """A safety net under the call sites that mask numbers themselves: no full E.164 number in any line."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = mask_numbers(value)
    return event


def _drop_secrets(
    _logger: object, _method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """Never let a token or secret reach a log line, whoever passed it."""
    for key in _SECRET_KEYS & event.keys():
        event[key] = "[redacted]"
    return event


def configure_logging(
    level: str = "info", fmt: str = "auto", stream: TextIO | None = None, *, cache_loggers: bool = True
) -> None:
    """Route structlog and the standard library's logging through one renderer.

    `cache_loggers=False` is for tests: a cached logger keeps this configuration for good, so a later
    test's `structlog.testing.capture_logs()` would no longer see what it logs.
    """
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
        cache_logger_on_first_use=cache_loggers,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                # Last before rendering, so it also sees libraries' `extra` fields and tracebacks.
                _mask_numbers,
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
