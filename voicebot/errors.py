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
