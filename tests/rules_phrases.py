"""The phrase set in tests/data/rules_phrases.toml, and how the rules engine does on it (tests and bench)."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np
import numpy.typing as npt

from voicebot.config import AgentDefinition, RulesMatching
from voicebot.providers.rules_llm import Guess, RuleMeanings, accepts, match_rule, meaning_text, words
from voicebot.providers.sentence_encoder import SentenceEncoder

PHRASES = Path(__file__).parent / "data" / "rules_phrases.toml"
SPLITS = ("tuning", "held_out", "held_out_2", "held_out_3", "held_out_4", "held_out_5")
# What matching by meaning is asked to reach: shares of paraphrases and of unrelated sentences.
TARGET_RIGHT = 0.90
TARGET_WRONG = 0.02
TARGET_UNRELATED_FALLBACK = 0.95


@dataclass(frozen=True)
class Case:
    """One sentence said to one agent, and the rule that should answer it (None: the fallback)."""

    split: str
    agent_id: str
    text: str
    rule: int | None


class Outcome(Enum):
    """What the rules engine did with a case."""

    RIGHT = "right"
    FALLBACK = "fallback"
    WRONG = "wrong"


def cases(agents: Sequence[AgentDefinition], path: Path = PHRASES) -> list[Case]:
    """Every case of the phrase set, its rules found by their first phrase in `agents`."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    found: list[Case] = []
    for split in SPLITS:
        for agent_id, table in data[split].items():
            agent = next(agent for agent in agents if agent.id == agent_id)
            first_phrases = [rule.phrases[0] if rule.phrases else "" for rule in agent.rules]
            for name, said in table["rules"].items():
                rule = first_phrases.index(name)
                found += [Case(split, agent_id, text, rule) for text in said]
            found += [Case(split, agent_id, text, None) for text in table["unrelated"]]
    return found


def heard_cases(path: Path, all_cases: Iterable[Case]) -> dict[tuple[str, str], list[Case]]:
    """What each recogniser heard in each voice, as bench/offline_quality.py saves it, as cases whose text is
    the transcript: by (recogniser, voice). Sentences no longer in the phrase set are left out."""
    said = {(case.agent_id, case.text): case for case in all_cases}
    found: dict[tuple[str, str], list[Case]] = {}
    for recogniser, result in json.loads(path.read_text(encoding="utf-8"))["recognisers"].items():
        if "transcripts" not in result:
            raise ValueError(f"{path}: {recogniser} has no transcripts (measured before they were saved)")
        for heard in result["transcripts"]:
            case = said.get((heard["agent"], heard["said"]))
            if case is not None:
                found.setdefault((recogniser, heard["voice"]), []).append(
                    dataclasses.replace(case, text=heard["heard"])
                )
    return found


@dataclass(frozen=True)
class Scored:
    """A case with what both matchers made of it, so thresholds can be tried without encoding again."""

    case: Case
    exact: int | None
    guess: Guess | None


def score(
    all_cases: Iterable[Case],
    agents: Sequence[AgentDefinition],
    encoder: SentenceEncoder,
    meanings: dict[str, RuleMeanings | None],
) -> list[Scored]:
    """Each case's exact match and likeliest class; `meanings` by agent id."""
    by_id = {agent.id: agent for agent in agents}
    listed = list(all_cases)
    vectors = encoder.encode([meaning_text(case.text) for case in listed])
    scored = []
    for case, vector in zip(listed, vectors, strict=True):
        classifier = meanings[case.agent_id]
        scored.append(
            scored_case(case, by_id[case.agent_id], classifier.guess(vector) if classifier else None)
        )
    return scored


def scored_case(case: Case, agent: AgentDefinition, guess: Guess | None) -> Scored:
    """`case` with its exact match in `agent`'s rules, and `guess` as a matcher by meaning made it."""
    exact = match_rule(agent.rules, case.text)
    # As RulesLLM does: nothing heard is not matched by meaning (a recogniser may hear nothing).
    return Scored(case, agent.rules.index(exact) if exact else None, guess if words(case.text) else None)


@dataclass(frozen=True)
class Picks:
    """Scored cases as arrays, so that thresholds can be searched in bulk (answer() for each at once)."""

    expected: npt.NDArray[np.intp]
    exact: npt.NDArray[np.intp]
    rule: npt.NDArray[np.intp]
    score: npt.NDArray[np.float64]
    margin: npt.NDArray[np.float64]
    ends_call: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, scored: Sequence[Scored], agents: Sequence[AgentDefinition]) -> Picks:
        """The arrays of `scored` (-1: no rule)."""
        by_id = {agent.id: agent for agent in agents}

        def rule(item: Scored) -> int:
            return -1 if item.guess is None or item.guess.rule is None else item.guess.rule

        return cls(
            expected=np.array([-1 if item.case.rule is None else item.case.rule for item in scored]),
            exact=np.array([-1 if item.exact is None else item.exact for item in scored]),
            rule=np.array([rule(item) for item in scored]),
            score=np.array([item.guess.probability if item.guess else -1.0 for item in scored]),
            margin=np.array([item.guess.margin if item.guess else -1.0 for item in scored]),
            ends_call=np.array(
                [rule(item) >= 0 and by_id[item.case.agent_id].rules[rule(item)].end_call for item in scored]
            ),
        )

    def answered(self, bar: float, margin: float, end_call_bar: float | None = None) -> npt.NDArray[np.intp]:
        """The rule each case gets (-1: the fallback)."""
        bars = np.where(self.ends_call, bar if end_call_bar is None else end_call_bar, bar)
        sure = (self.rule >= 0) & (self.score >= bars) & (self.margin >= margin)
        answered: npt.NDArray[np.intp] = np.where(self.exact >= 0, self.exact, np.where(sure, self.rule, -1))
        return answered

    def counts(self, answered: npt.NDArray[np.intp], chosen: npt.NDArray[np.bool_]) -> tuple[int, ...]:
        """Among the `chosen` cases: paraphrases, those right, those wrong; unrelated, those on a rule."""
        paraphrase = chosen & (self.expected >= 0)
        unrelated = chosen & (self.expected < 0)
        return (
            int(paraphrase.sum()),
            int(np.sum(paraphrase & (answered == self.expected))),
            int(np.sum(paraphrase & (answered >= 0) & (answered != self.expected))),
            int(unrelated.sum()),
            int(np.sum(unrelated & (answered >= 0))),
        )


def answer(scored: Scored, agent: AgentDefinition, matching: RulesMatching) -> int | None:
    """The rule RulesLLM.reply_to answers with, given these thresholds (None: the fallback)."""
    if scored.exact is not None:
        return scored.exact
    guess = scored.guess
    if guess is None or not accepts(guess, agent.rules, matching):
        return None
    return guess.rule


def outcome(case: Case, rule: int | None) -> Outcome:
    """Right, fallback or wrong, for a rule answering `case`."""
    if rule == case.rule:
        return Outcome.RIGHT if rule is not None else Outcome.FALLBACK
    return Outcome.FALLBACK if rule is None else Outcome.WRONG


@dataclass
class Confusion:
    """Counts of outcomes for paraphrases and for unrelated sentences."""

    paraphrases: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    unrelated: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))

    def add(self, case: Case, result: Outcome) -> None:
        """Counts one case."""
        (self.unrelated if case.rule is None else self.paraphrases)[result] += 1

    def share(self, of: dict[Outcome, int], result: Outcome) -> float:
        """The share of `of` (paraphrases or unrelated) with this outcome."""
        return of[result] / max(sum(of.values()), 1)

    @property
    def meets_targets(self) -> bool:
        """Whether right, wrong and unrelated-to-fallback shares all reach their targets."""
        return (
            self.share(self.paraphrases, Outcome.RIGHT) >= TARGET_RIGHT
            and self.share(self.paraphrases, Outcome.WRONG) <= TARGET_WRONG
            and self.share(self.unrelated, Outcome.FALLBACK) >= TARGET_UNRELATED_FALLBACK
        )


def confusion(
    scored: Iterable[Scored], agents: Sequence[AgentDefinition], matching: RulesMatching | None = None
) -> Confusion:
    """The confusion counts of `scored`, at each agent's own thresholds unless `matching` is given."""
    by_id = {agent.id: agent for agent in agents}
    counts = Confusion()
    for item in scored:
        agent = by_id[item.case.agent_id]
        counts.add(item.case, outcome(item.case, answer(item, agent, matching or agent.rules_matching)))
    return counts
