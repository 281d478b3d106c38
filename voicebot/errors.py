"""Failures a caller can act on, each carrying the HTTP status and stable error code it is reported with."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from voicebot.logs import mask_phone


class VoicebotError(Exception):
    """Base of every failure voicebot reports to a caller.

    `status` and `code` are what the API answers with; `retry_later` adds the configured Retry-After
    (`sessions.retry_after_s`), for failures that pass by themselves.
    """

    status: int = 500
    code: str = "internal_error"
    retry_later: ClassVar[bool] = False
    retry_after_s: int | None = None
    """A Retry-After of the failure's own, when it knows better than the configured one."""

    @property
    def log_reason(self) -> str:
        """The message as logs may carry it: without the phone numbers the caller sent."""
        return str(self)


class UnknownAgent(VoicebotError):
    """No agent with that id is defined."""

    status, code = 404, "unknown_agent"

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"no agent with id {agent_id!r} is defined; GET /api/agents lists them")
        self.agent_id = agent_id


class LiveKitUnavailable(VoicebotError):
    """The LiveKit server did not answer, or answered with a server error."""

    status, code, retry_later = 503, "livekit_unavailable", True

    def __init__(self, action: str, reason: str) -> None:
        super().__init__(f"the LiveKit server could not {action}: {reason}")
        self.action = action


class SessionLimitReached(VoicebotError):
    """This process already runs as many agent sessions as it may."""

    status, code, retry_later = 503, "at_capacity", True

    def __init__(self, limit: int) -> None:
        super().__init__(f"all {limit} agent sessions are in use; try again in a few seconds")


class Overloaded(SessionLimitReached):
    """This process is under the session limit, but its measured load says another session would degrade
    the running ones (see sessions/admission.py); answered like the limit, 503 at_capacity."""

    def __init__(self, reason: str) -> None:
        VoicebotError.__init__(
            self, "voicebot is too busy to start another agent session now; try again in a few seconds"
        )
        self.reason = reason


class RoomNotFound(VoicebotError):
    """The LiveKit server has no room with that name."""

    status, code = 404, "room_not_found"

    def __init__(self, room_name: str) -> None:
        super().__init__(f"the LiveKit server has no room named {room_name!r}")


class StateUnavailable(VoicebotError):
    """The shared state (Redis) cannot be written now; nothing new may start until it can."""

    status, code, retry_later = 503, "state_unavailable", True


class SessionNotFound(VoicebotError):
    """No agent session is running in that room, and no transcript of one is kept."""

    status, code = 404, "session_not_found"

    def __init__(self, room_name: str) -> None:
        super().__init__(f"no agent session for room {room_name!r}")


class UnknownTrunk(VoicebotError):
    """No outbound SIP trunk with that name is configured."""

    status, code = 404, "unknown_trunk"

    def __init__(self, name: str, known: list[str]) -> None:
        configured = ", ".join(known) if known else "none is configured in [[sip.outbound]]"
        super().__init__(f"no outbound trunk named {name!r}; configured: {configured}")


class DialFailed(VoicebotError):
    """An outbound call was not answered: busy, no answer, rejected, or unreachable."""

    def __init__(self, to: str, sip_status_code: int | None, reason: str) -> None:
        self.to = to
        self.sip_status_code = sip_status_code
        self.code = _DIAL_CODES.get(sip_status_code or 0, "call_failed")
        # The far end refused or never answered: a gateway's failure, 504 when it timed out.
        self.status = 504 if self.code == "no_answer" else 502
        self._status_text = f" (SIP {sip_status_code} {reason})" if sip_status_code else f": {reason}"
        super().__init__(f"the call to {to} was not answered{self._status_text}")

    @property
    def log_reason(self) -> str:
        """The message with the number masked."""
        return f"the call to {mask_phone(self.to)} was not answered{self._status_text}"


class DestinationNotAllowed(VoicebotError):
    """The number is not E.164 or matches none of the trunk's `allowed_prefixes`: nothing is dialled."""

    status, code = 403, "destination_not_allowed"

    def __init__(self, to: str, trunk: str, allowed: tuple[str, ...]) -> None:
        self.to = to
        self._trunk = trunk
        self._allowed = allowed
        super().__init__(self._message(to))

    def _message(self, to: str) -> str:
        if not self._allowed:
            return f"trunk {self._trunk!r} dials nowhere: its allowed_prefixes in [[sip.outbound]] is empty"
        return (
            f"{to} is not allowed on trunk {self._trunk!r}: it must be '+' and digits starting with one of "
            f"{', '.join(self._allowed)}"
        )

    @property
    def log_reason(self) -> str:
        """The message with the number masked."""
        return self._message(mask_phone(self.to))


class TooManyCalls(VoicebotError):
    """`sip.max_outbound_concurrent` outbound calls are in progress; nothing was dialled."""

    status, code, retry_later = 429, "too_many_calls", True

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} outbound calls are in progress, the most allowed at once; try again later")


class CallRateLimited(VoicebotError):
    """This API key placed `sip.outbound_per_hour` calls in the last hour; nothing was dialled."""

    status, code = 429, "rate_limited"

    def __init__(self, limit: int, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(
            f"at most {limit} outbound calls an hour per API key; the next is allowed in {retry_after_s} s"
        )


# SIP answers a caller can act on, by the error code the API gives them.
_DIAL_CODES = {
    486: "callee_busy",
    600: "callee_busy",
    408: "no_answer",
    480: "no_answer",
    487: "no_answer",
    603: "call_declined",
    404: "number_not_found",
    484: "number_not_found",
}


class ModelMissing(Exception):
    """A file an offline model needs is not on disk; the message names it and what fetches it.

    Not an HTTP error: voicebot loads its models before it serves, and stops with this message.
    """

    def __init__(self, path: Path, fix: str) -> None:
        super().__init__(f"an offline model cannot load: {path} is missing; {fix}")
        self.path = path
