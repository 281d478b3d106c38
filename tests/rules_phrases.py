"""The phrase set in tests/data/rules_phrases.toml, and how the rules engine does on it (tests and bench)."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

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
        rules = by_id[case.agent_id].rules
        exact = match_rule(rules, case.text)
        classifier = meanings[case.agent_id]
        # As RulesLLM does: nothing heard is not matched by meaning (a recogniser may hear nothing).
        guess = classifier.guess(vector) if classifier and words(case.text) else None
        scored.append(Scored(case, rules.index(exact) if exact else None, guess))
    return scored


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
