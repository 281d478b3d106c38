"""Failures a caller can act on; the HTTP layer maps each to a status and an error code."""

from __future__ import annotations


class VoicebotError(Exception):
    """Base of every failure voicebot reports to a caller."""


class UnknownAgent(VoicebotError):
    """No agent with that id is defined."""

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"no agent with id {agent_id!r} is defined; GET /api/agents lists them")
        self.agent_id = agent_id


class LiveKitUnavailable(VoicebotError):
    """The LiveKit server did not answer, or answered with a server error."""

    def __init__(self, action: str, reason: str) -> None:
        super().__init__(f"the LiveKit server could not {action}: {reason}")
        self.action = action


class SessionLimitReached(VoicebotError):
    """This process already runs as many agent sessions as it may."""

    def __init__(self, limit: int, retry_after_s: int) -> None:
        super().__init__(f"all {limit} agent sessions are in use; try again in a few seconds")
        self.retry_after_s = retry_after_s


class RoomNotFound(VoicebotError):
    """The LiveKit server has no room with that name."""

    def __init__(self, room_name: str) -> None:
        super().__init__(f"the LiveKit server has no room named {room_name!r}")


class StateUnavailable(VoicebotError):
    """The shared state (Redis) cannot be written now; nothing new may start until it can."""


class SessionNotFound(VoicebotError):
    """No agent session is running in that room, and no transcript of one is kept."""

    def __init__(self, room_name: str) -> None:
        super().__init__(f"no agent session for room {room_name!r}")


class UnknownTrunk(VoicebotError):
    """No outbound SIP trunk with that name is configured."""

    def __init__(self, name: str, known: list[str]) -> None:
        configured = ", ".join(known) if known else "none is configured in [[sip.outbound]]"
        super().__init__(f"no outbound trunk named {name!r}; configured: {configured}")


class DialFailed(VoicebotError):
    """An outbound call was not answered: busy, no answer, rejected, or unreachable."""

    def __init__(self, to: str, sip_status_code: int | None, reason: str) -> None:
        self.to = to
        self.sip_status_code = sip_status_code
        self.code = _DIAL_CODES.get(sip_status_code or 0, "call_failed")
        status = f" (SIP {sip_status_code} {reason})" if sip_status_code else f": {reason}"
        super().__init__(f"the call to {to} was not answered{status}")


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
