"""The LiveKit SDK runs lsb_release before every join, and voicebot's answer-once script stops that."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from livekit import rtc

from tests.fake_lsb_release import fake_program
from voicebot.livekit import LiveKitGateway
from voicebot.sessions.lsb_release import lsb_release_answered_once

pytestmark = pytest.mark.integration


async def join_and_leave(livekit: LiveKitGateway, room_name: str, times: int) -> None:
    await livekit.create_room(room_name, empty_timeout_s=30, departure_timeout_s=5)
    try:
        for _ in range(times):
            _, token = livekit.user_token(room_name, ttl_s=60)
            room = rtc.Room()
            await room.connect(livekit.url, token)
            await room.disconnect()
    finally:
        await livekit.delete_room(room_name)


async def test_the_sdk_runs_lsb_release_before_every_join(
    livekit: LiveKitGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the Rust SDK describes the OS in each join request by running `lsb_release -a` (11 ms of
    every agent join on Debian 12, more where it is a Python program). lsb_release_answered_once undoes it."""
    runs = fake_program(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    await join_and_leave(livekit, "lsb_sdk", times=2)
    assert runs.read_text().splitlines() == ["-a", "-a"]


async def test_joins_made_while_it_is_answered_once_do_not_run_it(
    livekit: LiveKitGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = fake_program(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    async with lsb_release_answered_once() as script:
        assert script is not None
        await join_and_leave(livekit, "lsb_once", times=3)
    assert runs.read_text().splitlines() == ["-a"], "only voicebot's own question should have run it"
