"""Each agent's greeting, synthesised once per process and played from memory in every session after.

The greeting's text is fixed by config.toml, so synthesising it again for every call only puts the TTS's
first byte (and, with a cloud voice, its price) between a person's arrival and the first word they hear.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

import structlog
from livekit import rtc
from livekit.agents import tts

log = structlog.get_logger(__name__)


class GreetingCache:
    """Greeting audio by (agent id, text); filled in the background the first time an agent greets."""

    def __init__(self) -> None:
        self._audio: dict[tuple[str, str], tuple[rtc.AudioFrame, ...]] = {}
        self._filling: dict[tuple[str, str], asyncio.Task[None]] = {}

    def audio(self, agent_id: str, text: str) -> AsyncIterator[rtc.AudioFrame] | None:
        """The greeting's audio as a fresh stream of frames, or None while it is not cached yet."""
        frames = self._audio.get((agent_id, text))
        return None if frames is None else _replay(frames)

    def fill(self, agent_id: str, text: str, voice: tts.TTS[Any]) -> None:
        """Synthesise the greeting with `voice` in the background, unless it is cached or on its way."""
        key = (agent_id, text)
        if key in self._audio or key in self._filling:
            return
        task = asyncio.create_task(self._synthesise(key, voice), name=f"greeting:{agent_id}")
        self._filling[key] = task
        task.add_done_callback(lambda _task: self._filling.pop(key, None))

    async def _synthesise(self, key: tuple[str, str], voice: tts.TTS[Any]) -> None:
        try:
            async with voice.synthesize(key[1]) as stream:
                frames = tuple([event.frame async for event in stream])
        except Exception as exc:
            # The next greeting is synthesised as before and tries again; no call depends on this.
            log.warning("greeting_not_cached", agent=key[0], error=f"{type(exc).__name__}: {exc}")
            return
        if frames:
            self._audio[key] = frames
            log.info("greeting_cached", agent=key[0], audio_s=round(sum(f.duration for f in frames), 3))

    async def settled(self) -> None:
        """Wait until no synthesis is running."""
        while self._filling:
            await asyncio.gather(*self._filling.values(), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop any synthesis still running."""
        tasks = list(self._filling.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task


async def _replay(frames: tuple[rtc.AudioFrame, ...]) -> AsyncIterator[rtc.AudioFrame]:
    for frame in frames:
        yield frame
