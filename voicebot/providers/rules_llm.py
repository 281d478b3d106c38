"""A rules engine behind livekit-agents' LLM interface: phrases, patterns or their meaning in, replies out."""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
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


OFF_TOPIC = Path(__file__).with_name("off_topic.txt")
# The classifier's training: features are the unit embeddings times SCALE (a softmax over cosines alone is too
# flat to be sure of anything), L2 weight decay DECAY, full-batch gradient descent from zero (deterministic).
# Chosen on the tuning set of tests/data/rules_phrases.toml (bench/rules_matching.py).
SCALE = 5.0
DECAY = 1e-3
STEPS = 400
STEP_SIZE = 2.0


def meaning_text(text: str) -> str:
    """What is embedded of a sentence: its lowercase words, so casing and punctuation never matter."""
    return " ".join(words(text))


@functools.cache
def off_topic_topics() -> tuple[tuple[str, ...], ...]:
    """Everyday sentences no rule answers (off_topic.txt), by topic: each run of comment lines begins one."""
    topics: list[list[str]] = [[]]
    for line in OFF_TOPIC.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            # A comment after sentences begins the next topic; one after a comment goes on describing it.
            if topics[-1]:
                topics.append([])
        elif line.strip():
            topics[-1].append(line.strip())
    return tuple(tuple(topic) for topic in topics if topic)


def off_topic_sentences() -> tuple[str, ...]:
    """Every off-topic sentence, topic after topic."""
    return tuple(sentence for topic in off_topic_topics() for sentence in topic)


@functools.cache
def _off_topic_vectors(encoder: SentenceEncoder) -> Vectors:
    return encoder.encode([meaning_text(text) for text in off_topic_sentences()])


@dataclass(frozen=True)
class Guess:
    """The class a sentence most likely belongs to: one of the agent's rules, or none of them."""

    rule: int | None
    """Its index in the agent's rules; None when the off-topic class is likeliest."""
    probability: float
    """How likely the classifier finds it, 0 to 1."""
    margin: float
    """How much likelier it is than the second-likeliest class."""


@dataclass(frozen=True)
class RuleMeanings:
    """A classifier of sentence embeddings into an agent's rules or none of them, trained on the rules'
    phrases and examples and on the off-topic sentences (softmax regression: one weight vector per class).

    "None" is a class per off-topic topic, their probabilities summed: the topics (the weather, the call
    itself, near misses) lie far apart, and one weight vector for them all reached into the rules' own
    sentences (a goodbye's) or left whole topics out ("please repeat that" hung up as a goodbye). Together
    they weigh as much as one rule in training."""

    encoder: SentenceEncoder
    weights: npt.NDArray[np.float64]
    """(385, columns): a column per rule and per off-topic topic, the last row its bias."""
    classes: tuple[int | None, ...]
    """The rule each column stands for; None for an off-topic topic's (the last columns)."""

    @classmethod
    def of(cls, rules: Sequence[Rule], encoder: SentenceEncoder) -> RuleMeanings | None:
        """Embeds every phrase and example of `rules` and trains on them (CPU work: off the event loop);
        None when no rule has a phrase or example."""
        texts = [(i, text) for i, rule in enumerate(rules) for text in (*rule.phrases, *rule.examples)]
        if not texts:
            return None
        # Rules with digits or patterns only have no sentences to learn from: they get no class.
        rules_learnt = sorted({index for index, _ in texts})
        topics = off_topic_topics()
        classes: tuple[int | None, ...] = (*rules_learnt, *[None] * len(topics))
        column = {rule: position for position, rule in enumerate(rules_learnt)}
        vectors = np.vstack(
            [encoder.encode([meaning_text(text) for _, text in texts]), _off_topic_vectors(encoder)]
        )
        topic_columns = [len(rules_learnt) + topic for topic, said in enumerate(topics) for _ in said]
        labels = np.array([column[index] for index, _ in texts] + topic_columns, dtype=np.intp)
        shares = np.array([1.0] * len(rules_learnt) + [1.0 / len(topics)] * len(topics))
        weights = _train(vectors, labels, shares)
        return cls(encoder=encoder, weights=weights, classes=classes)

    def guess(self, sentence: Vectors) -> Guess:
        """The likeliest class of an embedded sentence (see meaning_text): a rule, or none (its topics'
        probabilities summed)."""
        logits = np.append(sentence * SCALE, 1.0) @ self.weights
        by_column = np.exp(logits - logits.max())
        by_column /= by_column.sum()
        # The rules' columns come first, the topics' after them.
        rules = self.classes.index(None)
        probabilities = np.append(by_column[:rules], by_column[rules:].sum())
        candidates = (*self.classes[:rules], None)
        order = np.argsort(-probabilities)
        best = float(probabilities[order[0]])
        return Guess(
            rule=candidates[order[0]], probability=best, margin=best - float(probabilities[order[1]])
        )


def _train(
    vectors: Vectors, labels: npt.NDArray[np.intp], shares: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Softmax regression weights, each class weighted by its share as if it had as many sentences as any
    other (share 1; an off-topic topic has a share of "none")."""
    count, classes = len(labels), len(shares)
    features = np.hstack([vectors.astype(np.float64) * SCALE, np.ones((count, 1))])
    targets = np.eye(classes)[labels]
    per_sentence = (shares / np.bincount(labels, minlength=classes))[labels]
    balance = (per_sentence * count / per_sentence.sum())[:, None]
    decay = np.full((features.shape[1], 1), DECAY)
    decay[-1] = 0.0  # the bias is not decayed
    weights = np.zeros((features.shape[1], classes))
    for _ in range(STEPS):
        logits = features @ weights
        probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        weights -= STEP_SIZE * (features.T @ ((probabilities - targets) * balance) / count + decay * weights)
    return weights


def accepts(guess: Guess, rules: Sequence[Rule], settings: RulesMatching) -> bool:
    """Whether the likeliest class is a rule, likely enough and far enough ahead of the next, to answer."""
    if guess.rule is None:
        return False
    bar = settings.end_call_min_probability if rules[guess.rule].end_call else settings.min_probability
    return guess.probability >= bar and guess.margin >= settings.min_margin


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
        sentence = (await self._meanings.encoder.encode_async([meaning_text(text)]))[0]
        guess = self._meanings.guess(sentence)
        accepted = accepts(guess, self._rules, self._matching)
        log.debug(
            "rule_matched" if accepted else "rule_not_matched",
            by="meaning",
            rule=guess.rule,
            probability=round(guess.probability, 3),
            margin=round(guess.margin, 3),
        )
        return self._rules[guess.rule].reply if accepted and guess.rule is not None else self._fallback

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
