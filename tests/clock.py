"""A clock for the stores that moves only when a test moves it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class VirtualClock:
    """Seconds, starting at the real wall-clock time (Redis keeps heartbeats as Unix milliseconds)."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time on, as though `seconds` had passed."""
        self.now += seconds
