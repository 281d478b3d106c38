"""`serve --workers`: how many, how the session limit is shared out, and what is refused."""

from __future__ import annotations

import os

import pytest

from tests.conftest import changed
from voicebot.config import ConfigError, Settings
from voicebot.workers import check_workers, shares, worker_count

SETTINGS = Settings(agents=())


def test_auto_is_one_worker_per_core_and_a_number_must_be_positive() -> None:
    assert worker_count("auto") == (os.cpu_count() or 1)
    assert worker_count("3") == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(ValueError, match="--workers"):
            worker_count(bad)


SPLITS = [(12, 2, [6, 6]), (5, 2, [3, 2]), (3, 3, [1, 1, 1])]


@pytest.mark.parametrize(("total", "workers", "expected"), SPLITS)
def test_the_limit_is_shared_out_exactly(total: int, workers: int, expected: list[int]) -> None:
    assert shares(total, workers) == expected
    assert sum(shares(total, workers)) == total


def test_fewer_sessions_than_workers_or_phone_calls_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"sessions\.max_concurrent"):
        check_workers(changed(SETTINGS, "sessions", max_concurrent=1), 2)
    with pytest.raises(ConfigError, match=r"sip\.enabled"):
        check_workers(changed(SETTINGS, "sip", enabled=True), 2)
    check_workers(changed(SETTINGS, "sessions", max_concurrent=2), 2)
