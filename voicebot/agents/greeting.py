"""Each agent's greeting, synthesised once per process and played from memory in every session after.

The greeting's text is fixed by config.toml, so synthesising it again for every call only puts the TTS's
first byte (and, with a cloud voice, its price) between a person's arrival and the first word they hear.
The first call hears the greeting as it is synthesised, and what it hears is kept.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import structlog
from livekit import rtc
from livekit.agents import tts

log = structlog.get_logger(__name__)


class GreetingCache:
    """Greeting audio by (agent id, text)."""

    def __init__(self) -> None:
        self._audio: dict[tuple[str, str], tuple[rtc.AudioFrame, ...]] = {}

    def cached(self, agent_id: str, text: str) -> bool:
        """Whether this greeting is played from memory."""
        return (agent_id, text) in self._audio

    def audio(self, agent_id: str, text: str, voice: tts.TTS[Any]) -> AsyncIterator[rtc.AudioFrame]:
        """The greeting's frames: from memory, or synthesised by `voice` as they are consumed and kept
        once the synthesis has run to its end."""
        frames = self._audio.get((agent_id, text))
        if frames is not None:
            return _replay(frames)
        return self._synthesise((agent_id, text), voice)

    async def _synthesise(self, key: tuple[str, str], voice: tts.TTS[Any]) -> AsyncIterator[rtc.AudioFrame]:
        heard: list[rtc.AudioFrame] = []
        async with voice.synthesize(key[1]) as stream:
            async for event in stream:
                heard.append(event.frame)
                yield event.frame
        # Reached only when the whole greeting was synthesised: an interrupted one is not kept.
        if heard and key not in self._audio:
            self._audio[key] = tuple(heard)
            log.info("greeting_cached", agent=key[0], audio_s=round(sum(f.duration for f in heard), 3))


async def _replay(frames: tuple[rtc.AudioFrame, ...]) -> AsyncIterator[rtc.AudioFrame]:
    for frame in frames:
        yield frame
