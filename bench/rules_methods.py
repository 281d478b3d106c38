"""Ways of matching a caller's words to a rule, compared on tests/data/rules_phrases.toml: the measure behind
the rules engine's method.

Every method answers an exact phrase or pattern first, as RulesLLM does; otherwise:

- exact words only (what the engine did before matching by meaning);
- fuzzy words: the rule with the phrase or example most alike word for word (difflib's ratio over the words);
- nearest example: the rule with the phrase or example nearest in meaning (MiniLM cosine);
- classifier: the shipped one (softmax regression over MiniLM embeddings with an off-topic class);
- the classifier trained as well on every phrase and example of three words or more with one word left out
  (as a recogniser drops one): tried, not shipped.

Each method answers when its best rule scores at least a bar and leads the next rule (or, for the classifier,
class) by a margin. Both are searched on the tuning set for the most paraphrases right within the targets on
wrong answers, then measured on the held-out sets together; the classifier also at config.toml's thresholds.
`--transcripts` measures the same on what a recogniser heard (as bench/offline_quality.py saves it).

    .venv/bin/python -m bench.rules_methods [--transcripts bench/results/offline_quality_five_sets.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT, write_result
from tests.rules_phrases import (
    TARGET_RIGHT,
    TARGET_UNRELATED_FALLBACK,
    TARGET_WRONG,
    Case,
    Picks,
    Scored,
    cases,
    heard_cases,
    scored_case,
)
from voicebot.config import AgentDefinition, Rule, load_settings
from voicebot.providers.rules_llm import Guess, RuleMeanings, meaning_text, words
from voicebot.providers.sentence_encoder import SentenceEncoder, shared_encoder

BARS = np.round(np.arange(0.0, 1.0001, 0.02), 2)
MARGINS = np.round(np.arange(0.0, 0.41, 0.02), 2)


# A method's pick for each sentence, as the classifier's Guess: its best rule (None: nothing, or the
# off-topic class), how sure it is (a similarity for the methods that have no probability) and its lead.
Method = Callable[[AgentDefinition, Sequence[str]], list[Guess]]


def _rule_texts(agent: AgentDefinition) -> list[tuple[int, str]]:
    return [
        (index, text) for index, rule in enumerate(agent.rules) for text in (*rule.phrases, *rule.examples)
    ]


def _best_of(scores: dict[int, float]) -> Guess:
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    if not ranked:
        return Guess(None, 0.0, 0.0)
    runner_up = ranked[1][1] if len(ranked) > 1 else 0.0
    return Guess(ranked[0][0], ranked[0][1], ranked[0][1] - runner_up)


def fuzzy_words(agent: AgentDefinition, texts: Sequence[str]) -> list[Guess]:
    """difflib's ratio between the words said and each phrase's or example's, best per rule."""
    known = [(index, words(text)) for index, text in _rule_texts(agent)]
    picks = []
    for text in texts:
        said = words(text)
        scores: dict[int, float] = {}
        for index, wanted in known:
            ratio = difflib.SequenceMatcher(None, said, wanted).ratio()
            scores[index] = max(scores.get(index, 0.0), ratio)
        picks.append(_best_of(scores))
    return picks


def nearest_example(encoder: SentenceEncoder) -> Method:
    """The cosine to the nearest phrase or example, best per rule."""

    def pick(agent: AgentDefinition, texts: Sequence[str]) -> list[Guess]:
        known = _rule_texts(agent)
        examples = encoder.encode([meaning_text(text) for _, text in known])
        similarities = encoder.encode([meaning_text(text) for text in texts]) @ examples.T
        picks = []
        for row in similarities:
            scores: dict[int, float] = {}
            for (index, _), similarity in zip(known, row, strict=True):
                scores[index] = max(scores.get(index, -1.0), float(similarity))
            picks.append(_best_of(scores))
        return picks

    return pick


def classifier(encoder: SentenceEncoder, meanings: dict[str, RuleMeanings | None]) -> Method:
    """The shipped classifier's likeliest class, its probability and its lead."""

    def pick(agent: AgentDefinition, texts: Sequence[str]) -> list[Guess]:
        trained = meanings[agent.id]
        assert trained is not None, "the shipped agents' rules have phrases"
        return [trained.guess(vector) for vector in encoder.encode([meaning_text(t) for t in texts])]

    return pick


def with_a_word_left_out(agent: AgentDefinition) -> AgentDefinition:
    """The agent with each phrase and example of three words or more also said without each of its words."""

    def shortened(rule: Rule) -> Rule:
        said = [words(text) for text in (*rule.phrases, *rule.examples)]
        fewer = [" ".join(w[:i] + w[i + 1 :]) for w in said if len(w) >= 3 for i in range(len(w))]
        return dataclasses.replace(rule, examples=(*rule.examples, *fewer))

    return dataclasses.replace(agent, rules=tuple(shortened(rule) for rule in agent.rules))


def exact_only(agent: AgentDefinition, texts: Sequence[str]) -> list[Guess]:
    """Nothing beyond the exact phrases."""
    return [Guess(None, 0.0, 0.0) for _ in texts]


def picks_of(method: Method, listed: Sequence[Case], agents: dict[str, AgentDefinition]) -> Picks:
    """What `method` makes of every case."""
    scored: list[Scored | None] = [None] * len(listed)
    for agent_id, agent in agents.items():
        rows = [row for row, case in enumerate(listed) if case.agent_id == agent_id]
        for row, guess in zip(rows, method(agent, [listed[row].text for row in rows]), strict=True):
            scored[row] = scored_case(listed[row], agent, guess)
    return Picks.of([item for item in scored if item is not None], list(agents.values()))


def shares(picks: Picks, answered: np.ndarray, chosen: np.ndarray) -> tuple[float, float, float]:
    """Paraphrases right, paraphrases wrong, unrelated to the fallback, among the `chosen` cases."""
    paraphrases, right, wrong, unrelated, on_a_rule = picks.counts(answered, chosen)
    return right / max(paraphrases, 1), wrong / max(paraphrases, 1), 1 - on_a_rule / max(unrelated, 1)


def search(picks: Picks, tuning: np.ndarray) -> tuple[float, float]:
    """The bar and margin with the most tuning paraphrases right within the targets on wrong answers (ties:
    the stricter); the safest when none is within them."""
    best: tuple[tuple[float, ...], tuple[float, float]] | None = None
    for bar, margin in itertools.product(BARS, MARGINS):
        right, wrong, fallback = shares(picks, picks.answered(bar, margin), tuning)
        safe = wrong <= TARGET_WRONG and fallback >= TARGET_UNRELATED_FALLBACK
        key = (float(safe), right if safe else fallback - wrong, float(margin), float(bar))
        if best is None or key > best[0]:
            best = (key, (float(bar), float(margin)))
    assert best is not None
    return best[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--transcripts", type=Path, help="an offline_quality result with transcripts")
    args = parser.parse_args()
    agents = {agent.id: agent for agent in load_settings(ROOT / "config.toml", {}).agents}
    encoder = shared_encoder()
    meanings = {agent_id: RuleMeanings.of(agent.rules, encoder) for agent_id, agent in agents.items()}
    left_out = {
        agent_id: RuleMeanings.of(with_a_word_left_out(agent).rules, encoder)
        for agent_id, agent in agents.items()
    }
    methods: dict[str, Method] = {
        "exact words": exact_only,
        "fuzzy words": fuzzy_words,
        "nearest example": nearest_example(encoder),
        "classifier": classifier(encoder, meanings),
        "classifier, a word left out": classifier(encoder, left_out),
    }
    written = cases(list(agents.values()))
    heard = heard_cases(args.transcripts, written) if args.transcripts else {}
    inputs = {"text": written, **{f"{name}, {voice}": listed for (name, voice), listed in heard.items()}}
    configured = next(iter(agents.values())).rules_matching
    rows: list[dict[str, Any]] = []
    print(f"{'method':<30}{'bar':>6}{'margin':>7}  {'input':<30}{'held-out: right':>16}{'wrong':>7}", end="")
    print(f"{'unrelated':>10}")
    for name, method in methods.items():
        text_picks = picks_of(method, written, agents)
        tuning = np.array([case.split == "tuning" for case in written])
        bar, margin = search(text_picks, tuning)
        settings: list[tuple[str, float, float, float | None]] = [(name, bar, margin, None)]
        if name == "classifier":
            settings.append(
                (
                    "classifier (config.toml)",
                    configured.min_probability,
                    configured.min_margin,
                    configured.end_call_min_probability,
                )
            )
        for label, chosen_bar, chosen_margin, end_call_bar in settings:
            for source, listed in inputs.items():
                picks = text_picks if source == "text" else picks_of(method, listed, agents)
                held_out = np.array([case.split != "tuning" for case in listed])
                answered = picks.answered(chosen_bar, chosen_margin, end_call_bar)
                right, wrong, fallback = shares(picks, answered, held_out)
                rows.append(
                    {
                        "method": label,
                        "bar": chosen_bar,
                        "margin": chosen_margin,
                        "input": source,
                        "right": round(right, 3),
                        "wrong": round(wrong, 3),
                        "unrelated_fallback": round(fallback, 3),
                        "meets_targets": right >= TARGET_RIGHT
                        and wrong <= TARGET_WRONG
                        and fallback >= TARGET_UNRELATED_FALLBACK,
                    }
                )
                # Exact words have no bar: nothing but a phrase answers.
                thresholds = (
                    f"{chosen_bar:>6.2f}{chosen_margin:>7.2f}" if method is not exact_only else f"{'-':>13}"
                )
                print(f"{label:<30}{thresholds}  {source:<30}{right:>16.1%}{wrong:>7.1%}{fallback:>10.1%}")
    print(f"wrote {write_result('rules_methods', {'held_out_sets': 'all but tuning', 'rows': rows})}")


if __name__ == "__main__":
    main()
