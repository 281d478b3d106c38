"""A deterministic rules engine behind livekit-agents' LLM interface: phrases or patterns in, replies out."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Any, Never

from livekit.agents import APIConnectOptions, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from voicebot.config import AgentDefinition, Rule

_WORD = re.compile(r"[a-z0-9']+")
# Replies are spoken, so they are emitted a sentence at a time: TTS can start on the first one.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def words(text: str) -> list[str]:
    """Lowercase words of `text`, punctuation dropped."""
    return _WORD.findall(text.lower())


def match_rule(rules: Sequence[Rule], text: str) -> Rule | None:
    """The first rule whose phrase (as a run of words) or pattern occurs in `text`."""
    said = words(text)
    for rule in rules:
        for phrase in rule.phrases:
            wanted = words(phrase)
            if wanted and any(
                said[i : i + len(wanted)] == wanted for i in range(len(said) - len(wanted) + 1)
            ):
                return rule
        if any(re.search(pattern, text, re.IGNORECASE) for pattern in rule.patterns):
            return rule
    return None


class RulesLLM(llm.LLM[Never]):
    """Answers the caller's last utterance from the agent's rules; the fallback reply when none matches."""

    def __init__(self, agent: AgentDefinition) -> None:
        super().__init__()
        self._rules = agent.rules
        self._fallback = agent.fallback
        self._ending_replies = {rule.reply for rule in agent.rules if rule.end_call}

    @property
    def model(self) -> str:
        """The model name metrics and logs show."""
        return "rules"

    @property
    def provider(self) -> str:
        """The provider name metrics and logs show."""
        return "voicebot"

    def reply_to(self, text: str) -> str:
        """The reply to an utterance."""
        rule = match_rule(self._rules, text)
        return rule.reply if rule is not None else self._fallback

    def ends_call(self, reply: str) -> bool:
        """Whether speaking `reply` ends the call (its rule has end_call)."""
        return reply.strip() in self._ending_replies

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        """A stream that answers the last user message in `chat_ctx`."""
        return RulesStream(self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class RulesStream(llm.LLMStream):
    """Emits one rules-engine reply, a sentence per chunk."""

    def __init__(
        self,
        rules_llm: RulesLLM,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        conn_options: APIConnectOptions,
    ) -> None:
        super().__init__(rules_llm, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._rules_llm = rules_llm

    async def _run(self) -> None:
        user_text = next(
            (
                m.text_content
                for m in reversed(self.chat_ctx.messages())
                if m.role == "user" and m.text_content
            ),
            None,
        )
        # Nothing said yet (a reply asked for at session start): the rules have nothing to answer.
        if user_text is None:
            return
        request_id = f"rules_{secrets.token_hex(4)}"
        sentences = _SENTENCE_END.split(self._rules_llm.reply_to(user_text))
        for index, sentence in enumerate(sentences):
            # The space goes between sentences, so the spoken text is the configured reply exactly.
            content = sentence if index == len(sentences) - 1 else sentence + " "
            self._event_ch.send_nowait(
                llm.ChatChunk(id=request_id, delta=llm.ChoiceDelta(role="assistant", content=content))
            )
