"""The agent of a session on the rules engine: each of its replies is a fixed line, played from memory."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from livekit import rtc
from livekit.agents import Agent, ModelSettings, llm, tts

from voicebot.agents.spoken_lines import SpokenLines, fixed_lines
from voicebot.config import AgentDefinition


class RulesAgent(Agent):
    """Speaks a reply that is one of `agent`'s fixed lines from `lines` (synthesised by `voice` the first
    time if it is not there yet), and any other text through the pipeline's TTS as usual."""

    def __init__(
        self, agent: AgentDefinition, lines: SpokenLines, voice: tts.TTS[Any], chat_ctx: llm.ChatContext
    ) -> None:
        super().__init__(instructions=agent.instructions, chat_ctx=chat_ctx)
        self._agent_id = agent.id
        self._fixed = frozenset(fixed_lines(agent))
        self._lines = lines
        self._voice = voice

    async def tts_node(
        self, text: AsyncIterable[str], model_settings: ModelSettings
    ) -> AsyncIterator[rtc.AudioFrame]:
        # The rules engine hands its reply over whole, at once: waiting for the text's end costs nothing.
        chunks = [chunk async for chunk in text]
        reply = "".join(chunks)
        if reply in self._fixed:
            async for frame in self._lines.audio(self._agent_id, reply, self._voice):
                yield frame
            return
        async for frame in Agent.default.tts_node(self, _again(chunks), model_settings):
            yield frame


async def _again(chunks: list[str]) -> AsyncIterator[str]:
    for chunk in chunks:
        yield chunk
