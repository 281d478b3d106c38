"""A rules engine behind livekit-agents' LLM interface: phrases, patterns or their meaning in, replies out."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Never

import numpy as np
import numpy.typing as npt
import structlog
from livekit.agents import APIConnectOptions, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

from voicebot.config import AgentDefinition, Rule, RulesMatching
from voicebot.providers.sentence_encoder import SentenceEncoder, Vectors

_WORD = re.compile(r"[a-z0-9']+")
# Replies are spoken, so they are emitted a sentence at a time: TTS can start on the first one.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

log = structlog.get_logger(__name__)


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


@dataclass(frozen=True)
class Nearest:
    """The rule nearest in meaning to a sentence."""

    rule: int
    """Its index in the agent's rules."""
    similarity: float
    """Cosine similarity to the rule's closest phrase or example."""
    margin: float
    """How much nearer it is than the second-nearest rule."""


@dataclass(frozen=True)
class RuleMeanings:
    """An agent's rules as sentence embeddings: one row per phrase and example, and the rule it belongs to."""

    encoder: SentenceEncoder
    vectors: Vectors
    owners: npt.NDArray[np.intp]
    rule_count: int

    @classmethod
    def of(cls, rules: Sequence[Rule], encoder: SentenceEncoder) -> RuleMeanings:
        """Embeds every phrase and example of `rules` (CPU work: off the event loop)."""
        texts = [(i, text) for i, rule in enumerate(rules) for text in (*rule.phrases, *rule.examples)]
        return cls(
            encoder=encoder,
            vectors=encoder.encode([text for _, text in texts]),
            owners=np.array([index for index, _ in texts], dtype=np.intp),
            rule_count=len(rules),
        )

    def nearest(self, sentence: Vectors) -> Nearest | None:
        """The rule nearest to an embedded sentence; None when no rule has a phrase or example."""
        if not len(self.owners):
            return None
        # A rule scores its closest text: its phrases are alternatives, not samples around one meaning.
        scores = np.full(self.rule_count, -np.inf, dtype=np.float32)
        np.maximum.at(scores, self.owners, self.vectors @ sentence)
        order = np.argsort(-scores)
        similarity = float(scores[order[0]])
        # A rule alone (or beside rules with digits only) is measured against an unrelated sentence's ~0.
        runner_up = float(scores[order[1]]) if len(order) > 1 and np.isfinite(scores[order[1]]) else 0.0
        return Nearest(rule=int(order[0]), similarity=similarity, margin=similarity - runner_up)


def accepts(nearest: Nearest, rules: Sequence[Rule], settings: RulesMatching) -> bool:
    """Whether the nearest rule is near enough, and far enough ahead of the next, to answer."""
    bar = settings.end_call_min_similarity if rules[nearest.rule].end_call else settings.min_similarity
    return nearest.similarity >= bar and nearest.margin >= settings.min_margin


class RulesLLM(llm.LLM[Never]):
    """Answers the caller's last utterance from the agent's rules; the fallback reply when none matches."""

    def __init__(self, agent: AgentDefinition, meanings: RuleMeanings | None = None) -> None:
        """`meanings` (built once per agent, see RuleMeanings.of) lets a rule answer a sentence that means
        what its phrases say; without it only exact phrases and patterns do."""
        super().__init__()
        self._rules = agent.rules
        self._fallback = agent.fallback
        self._ending_replies = {rule.reply for rule in agent.rules if rule.end_call}
        self._meanings = meanings if agent.rules_matching.by_meaning else None
        self._matching = agent.rules_matching

    @property
    def model(self) -> str:
        """The model name metrics and logs show."""
        return "rules"

    @property
    def provider(self) -> str:
        """The provider name metrics and logs show."""
        return "voicebot"

    async def reply_to(self, text: str) -> str:
        """The reply to an utterance: an exact phrase or pattern first, else the rule nearest in meaning."""
        rule = match_rule(self._rules, text)
        if rule is not None:
            log.debug("rule_matched", by="phrase", rule=self._rules.index(rule))
            return rule.reply
        if self._meanings is None or not words(text):
            return self._fallback
        # Encoding takes milliseconds of CPU: on the encoder's thread, not the loop.
        sentence = (await self._meanings.encoder.encode_async([text]))[0]
        nearest = self._meanings.nearest(sentence)
        if nearest is None:
            return self._fallback
        accepted = accepts(nearest, self._rules, self._matching)
        log.debug(
            "rule_matched" if accepted else "rule_not_matched",
            by="meaning",
            rule=nearest.rule,
            similarity=round(nearest.similarity, 3),
            margin=round(nearest.margin, 3),
        )
        return self._rules[nearest.rule].reply if accepted else self._fallback

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
        sentences = _SENTENCE_END.split(await self._rules_llm.reply_to(user_text))
        for index, sentence in enumerate(sentences):
            # The space goes between sentences, so the spoken text is the configured reply exactly.
            content = sentence if index == len(sentences) - 1 else sentence + " "
            self._event_ch.send_nowait(
                llm.ChatChunk(id=request_id, delta=llm.ChoiceDelta(role="assistant", content=content))
            )
