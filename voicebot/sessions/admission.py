"""Admission by measured capacity: whether this process can take another session without hurting the rest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from voicebot.config import SessionSettings
from voicebot.loop_monitor import LoopLoad

RefusalReason = Literal["loop_lag", "cpu"]
"""Why a process refuses new sessions while under its count limit: its loop runs late, or is busy."""


def overload(load: LoopLoad, settings: SessionSettings) -> RefusalReason | None:
    """What in `load` is over the [sessions] admission thresholds, or None when there is room."""
    if 0 < settings.admission_max_loop_lag_ms < load.lag_ms:
        return "loop_lag"
    if 0 < settings.admission_max_cpu < load.cpu:
        return "cpu"
    return None


@dataclass(frozen=True)
class Capacity:
    """This process's capacity as health and the session list show it."""

    process_id: str
    limit: int
    """sessions.max_concurrent: the count no measurement can raise."""
    live: int
    admitting: bool
    """Whether a new session would be accepted here now."""
    refusing_because: RefusalReason | Literal["limit"] | None
    loop_lag_ms: float
    """Loop lag at its 90th percentile over `window_s`."""
    loop_cpu: float
    """The loop thread's share of a core over `window_s`."""
    max_loop_lag_ms: float
    max_cpu: float
    window_s: float
    refused_overloaded: int
    """New sessions refused here for the measured load since the process started."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the API."""
        return asdict(self)


class Admission:
    """Judges this process's recent load (`measure(window_s)`, normally LoopMonitor.recent) against the
    thresholds in [sessions], and counts what it refused."""

    def __init__(self, settings: SessionSettings, measure: Callable[[float], LoopLoad]) -> None:
        self._settings = settings
        self._measure = measure
        self.refused = 0

    def load(self) -> LoopLoad:
        """The measured load now."""
        return self._measure(self._settings.admission_window_s)

    def refusal(self) -> RefusalReason | None:
        """Why a new session would be refused for the load now, or None when it would be admitted."""
        return overload(self.load(), self._settings)

    def capacity(self, process_id: str, live: int) -> Capacity:
        """The report of this process's capacity with `live` sessions running."""
        settings = self._settings
        load = self.load()
        reason: RefusalReason | Literal["limit"] | None = overload(load, settings)
        if reason is None and live >= settings.max_concurrent:
            reason = "limit"
        return Capacity(
            process_id=process_id,
            limit=settings.max_concurrent,
            live=live,
            admitting=reason is None,
            refusing_because=reason,
            loop_lag_ms=load.lag_ms,
            loop_cpu=load.cpu,
            max_loop_lag_ms=settings.admission_max_loop_lag_ms,
            max_cpu=settings.admission_max_cpu,
            window_s=settings.admission_window_s,
            refused_overloaded=self.refused,
        )


def always_admit(_window_s: float) -> LoopLoad:
    """A measurement of no load, for a process (or test) that measures nothing."""
    return LoopLoad(0.0, 0.0, 0)
