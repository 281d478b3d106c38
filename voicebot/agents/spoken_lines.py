"""An agent's fixed lines (its greeting, and with the rules engine its replies and fallback), synthesised once
per process and played from memory in every session after.

These texts are fixed by config.toml, so synthesising them again for every call only puts the TTS's first
byte (and, with a cloud voice, its price) between a person and what they hear: Piper takes 150-250 ms before
a reply's first sentence can leave. An offline voice's lines are synthesised at startup (they cost nothing but
a moment of CPU), so even the first call after a start hears them from memory. A cloud voice's line is
synthesised by the first call that says it, which hears it as it comes, and kept once synthesised to its end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import structlog
from livekit import rtc
from livekit.agents import tts
from livekit.agents.utils.audio import AudioByteStream

from voicebot.config import AgentDefinition

log = structlog.get_logger(__name__)

# A line is handed on in frames this long, with the loop free between them. Given seconds of audio at once
# (the greeting waits, whole, for someone to subscribe), livekit-agents' transcript synchroniser estimated the
# speaking rate of all of it in one go on the loop: the first frame left ~25 ms late, the rest later still.
# Each frame costs the loop a trip through the synchroniser, the output and an FFI request: 100 ms frames
# (the native queue holds 200 ms) make five times fewer of them than 20 ms ones.
FRAME_S = 0.1


class SpokenLines:
    """Line audio by (agent id, text)."""

    def __init__(self, sample_rate: int | None = None) -> None:
        self._audio: dict[tuple[str, str], tuple[rtc.AudioFrame, ...]] = {}
        self._sample_rate = sample_rate
        """The rate lines are kept at: the agent's audio output's, so that playing one resamples nothing
        (livekit-agents resampled Piper's 22,050 Hz to 24 kHz on the loop every time a line was played: 5.8%
        of the loop's samples at 4 density sessions). None keeps each voice's own rate."""

    def cached(self, agent_id: str, text: str) -> bool:
        """Whether this line is played from memory."""
        return (agent_id, text) in self._audio

    def audio(self, agent_id: str, text: str, voice: tts.TTS[Any]) -> AsyncIterator[rtc.AudioFrame]:
        """The line's frames: from memory, or synthesised by `voice` as they are consumed and kept once
        the synthesis has run to its end."""
        frames = self._audio.get((agent_id, text))
        if frames is not None:
            return _replay(frames)
        return self._synthesise((agent_id, text), voice)

    async def fill(self, agent_id: str, text: str, voice: tts.TTS[Any]) -> None:
        """Synthesise this line by `voice` and keep it now, unless it is kept already."""
        if (agent_id, text) not in self._audio:
            async for _frame in self._synthesise((agent_id, text), voice):
                pass

    async def _synthesise(self, key: tuple[str, str], voice: tts.TTS[Any]) -> AsyncIterator[rtc.AudioFrame]:
        heard: list[rtc.AudioFrame] = []
        async with voice.synthesize(key[1]) as stream:
            chunks = _Chunker()
            async for event in stream:
                for frame in chunks.push(event.frame):
                    heard.append(frame)
                    yield frame
                    await asyncio.sleep(0)
            for frame in chunks.flush():
                heard.append(frame)
                yield frame
        # Reached only when the whole line was synthesised: an interrupted one is not kept.
        if heard and key not in self._audio:
            # Resampling a line is CPU work (6 ms for a 3 s greeting here, 44 ms the first time): a cloud
            # voice's line is kept by a call in progress, with other sessions on the loop.
            kept = await asyncio.to_thread(self._at_output_rate, heard)
            self._audio.setdefault(key, kept)
            log.debug("line_cached", agent=key[0], audio_s=round(sum(f.duration for f in heard), 3))

    def _at_output_rate(self, frames: list[rtc.AudioFrame]) -> tuple[rtc.AudioFrame, ...]:
        """`frames` at the output's rate, in FRAME_S frames: the resampling livekit-agents would do at every
        playback (its resampler, its default quality), done once."""
        rate, channels = frames[0].sample_rate, frames[0].num_channels
        if self._sample_rate is None or rate == self._sample_rate:
            return tuple(frames)
        resampler = rtc.AudioResampler(input_rate=rate, output_rate=self._sample_rate, num_channels=channels)
        chunks = _Chunker()
        kept: list[rtc.AudioFrame] = []
        for frame in frames:
            for resampled in resampler.push(frame):
                kept.extend(chunks.push(resampled))
        for resampled in resampler.flush():
            kept.extend(chunks.push(resampled))
        kept.extend(chunks.flush())
        return tuple(kept)


class _Chunker:
    """Re-cuts a voice's frames (espeak-ng writes ~190 ms at a time) into FRAME_S frames."""

    def __init__(self) -> None:
        self._stream: AudioByteStream | None = None

    def push(self, frame: rtc.AudioFrame) -> Iterable[rtc.AudioFrame]:
        if self._stream is None:
            self._stream = AudioByteStream(
                frame.sample_rate,
                frame.num_channels,
                samples_per_channel=max(1, int(frame.sample_rate * FRAME_S)),
            )
        return self._stream.push(frame.data)

    def flush(self) -> Iterable[rtc.AudioFrame]:
        return self._stream.flush() if self._stream is not None else ()


async def _replay(frames: tuple[rtc.AudioFrame, ...]) -> AsyncIterator[rtc.AudioFrame]:
    for frame in frames:
        yield frame
        await asyncio.sleep(0)


def replies_are_fixed(agent: AgentDefinition) -> bool:
    """Whether every reply `agent` gives is a line of its config: so with the rules engine, not an LLM."""
    return agent.llm.provider == "rules"


def fixed_lines(agent: AgentDefinition) -> tuple[str, ...]:
    """What `agent` says in words fixed by its config: its greeting, and when its replies are fixed its
    rules' replies and its fallback."""
    lines = [agent.greeting] if agent.greeting else []
    if replies_are_fixed(agent):
        lines += [rule.reply for rule in agent.rules if rule.reply]
        lines += [agent.fallback] if agent.fallback else []
    return tuple(dict.fromkeys(lines))


async def cache_offline_lines(
    lines: SpokenLines,
    agents: Sequence[AgentDefinition],
    offline_voice: Callable[[AgentDefinition], Awaitable[tts.TTS[Any] | None]],
) -> None:
    """Synthesise now the fixed lines of every agent whose voice is offline (`offline_voice` gives it, or
    None for a cloud voice, whose every synthesis is charged). One that fails is left to its first call."""
    for agent in agents:
        texts = fixed_lines(agent)
        if not texts:
            continue
        voice = await offline_voice(agent)
        if voice is None:
            continue
        try:
            for text in texts:
                try:
                    await lines.fill(agent.id, text, voice)
                except Exception as exc:
                    log.warning("line_not_cached", agent=agent.id, error=f"{type(exc).__name__}: {exc}")
        finally:
            await voice.aclose()
        log.info("lines_cached", agent=agent.id, lines=sum(lines.cached(agent.id, text) for text in texts))
