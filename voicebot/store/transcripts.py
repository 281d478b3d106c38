"""Each session's transcript: who said what, when."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

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
