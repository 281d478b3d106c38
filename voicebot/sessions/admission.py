"""Admission by measured capacity: whether this process can take another session without hurting the rest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from voicebot.config import SessionSettings
from voicebot.loop_monitor import LoopLoad
from voicebot.providers.pools import MODEL_WAITS

RefusalReason = Literal["loop_lag", "cpu", "machine_cpu", "model_wait"]
"""Why a process refuses new sessions while under its count limit: its loop runs late, or is busy, or the
machine's cores are, or its offline models' jobs wait for a thread."""


def overload(
    load: LoopLoad, settings: SessionSettings, model_wait_ms: float = 0.0, live: int = 0
) -> RefusalReason | None:
    """What in `load` and `model_wait_ms`, with `live` sessions running, is over the [sessions] admission
    thresholds, or None when there is room."""
    if 0 < settings.admission_max_loop_lag_ms < load.lag_ms:
        return "loop_lag"
    if 0 < settings.admission_max_cpu < load.cpu:
        return "cpu"
    if 0 < settings.admission_max_machine_cpu < with_one_more(load.machine_cpu, live):
        return "machine_cpu"
    if 0 < settings.admission_max_model_wait_ms < model_wait_ms:
        return "model_wait"
    return None


def with_one_more(machine_cpu: float, live: int) -> float:
    """The machine's busy share with one more session costing what the running ones do on average.

    The machine's CPU grows about linearly with talking sessions (bench/overload.py: 22% at one, 84% at
    seven), but a session's load shows only once its caller talks, seconds after it was admitted: judged
    on the share alone, calls arriving every 3 s were admitted one past what the machine could carry.
    """
    return machine_cpu * (live + 1) / live if live else machine_cpu


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
    machine_cpu: float
    """The busy share of the machine's CPU (every process, every core) over `window_s`."""
    model_wait_ms: float
    """How long the offline models' jobs waited for a thread, 90th percentile over `window_s`."""
    max_loop_lag_ms: float
    max_cpu: float
    max_machine_cpu: float
    max_model_wait_ms: float
    window_s: float
    refused_overloaded: int
    """New sessions refused here for the measured load since the process started."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the API."""
        return asdict(self)


class Admission:
    """Judges this process's recent load (`measure(window_s)`, normally LoopMonitor.recent) against the
    thresholds in [sessions], and counts what it refused."""

    def __init__(
        self,
        settings: SessionSettings,
        measure: Callable[[float], LoopLoad],
        model_wait_ms: Callable[[float], float] = MODEL_WAITS.recent_ms,
    ) -> None:
        self._settings = settings
        self._measure = measure
        self._model_wait_ms = model_wait_ms
        self.refused = 0

    def load(self) -> LoopLoad:
        """The measured load of the loop now."""
        return self._measure(self._settings.admission_window_s)

    def model_wait(self) -> float:
        """The offline models' jobs' wait for a thread now, in ms."""
        return self._model_wait_ms(self._settings.admission_window_s)

    def measured(self) -> dict[str, float]:
        """The measurements a refusal is judged by, for the logs."""
        load = self.load()
        return {
            "loop_lag_ms": load.lag_ms,
            "loop_cpu": load.cpu,
            "machine_cpu": load.machine_cpu,
            "model_wait_ms": round(self.model_wait(), 1),
        }

    def refusal(self, live: int) -> RefusalReason | None:
        """Why a new session would be refused for the load now, with `live` sessions running, or None
        when it would be admitted."""
        return overload(self.load(), self._settings, self.model_wait(), live)

    def capacity(self, process_id: str, live: int) -> Capacity:
        """The report of this process's capacity with `live` sessions running."""
        settings = self._settings
        load = self.load()
        model_wait_ms = self.model_wait()
        reason: RefusalReason | Literal["limit"] | None = overload(load, settings, model_wait_ms, live)
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
            machine_cpu=load.machine_cpu,
            model_wait_ms=round(model_wait_ms, 1),
            max_loop_lag_ms=settings.admission_max_loop_lag_ms,
            max_cpu=settings.admission_max_cpu,
            max_machine_cpu=settings.admission_max_machine_cpu,
            max_model_wait_ms=settings.admission_max_model_wait_ms,
            window_s=settings.admission_window_s,
            refused_overloaded=self.refused,
        )


def always_admit(_window_s: float) -> LoopLoad:
    """A measurement of no load, for a process (or test) that measures nothing."""
    return LoopLoad(0.0, 0.0, 0)
