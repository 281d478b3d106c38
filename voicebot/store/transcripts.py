"""Each session's transcript: who said what, when."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

Speaker = Literal["user", "agent"]


@dataclass(frozen=True)
class TranscriptLine:
    """One utterance in a conversation."""

    speaker: Speaker
    text: str
    at: float
    """Unix time the utterance was committed to the conversation."""
    metrics: dict[str, float] = field(default_factory=dict)
    """livekit-agents' latencies for the turn, in seconds (e.g. end_of_turn_delay, llm_node_ttft)."""

    def as_json(self) -> dict[str, Any]:
        """The line as the API returns it."""
        return asdict(self)


class TranscriptStore(Protocol):
    """Where transcripts live; the Redis store implements the same methods."""

    async def append(self, room_name: str, line: TranscriptLine) -> None:
        """Add a line to a room's transcript."""

    async def lines(self, room_name: str) -> list[TranscriptLine] | None:
        """The room's transcript in order, or None when there is none (never, or expired)."""

    async def close(self, room_name: str) -> None:
        """The session ended: keep the transcript for the retention period, then forget it."""


class InMemoryTranscriptStore:
    """Transcripts in this process's memory; ended ones expire after `retention_s`."""

    def __init__(self, retention_s: float) -> None:
        self._retention_s = retention_s
        self._lines: dict[str, list[TranscriptLine]] = {}
        self._expires: dict[str, float] = {}

    async def append(self, room_name: str, line: TranscriptLine) -> None:
        """Add a line to a room's transcript."""
        self._expire()
        self._lines.setdefault(room_name, []).append(line)

    async def lines(self, room_name: str) -> list[TranscriptLine] | None:
        """The room's transcript in order, or None when there is none."""
        self._expire()
        lines = self._lines.get(room_name)
        return list(lines) if lines is not None else None

    async def close(self, room_name: str) -> None:
        """Keep the transcript readable for the retention period."""
        self._lines.setdefault(room_name, [])
        self._expires[room_name] = time.monotonic() + self._retention_s

    def _expire(self) -> None:
        now = time.monotonic()
        for room_name in [room for room, deadline in self._expires.items() if deadline <= now]:
            del self._expires[room_name]
            self._lines.pop(room_name, None)
