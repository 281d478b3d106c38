"""Rules matched by meaning: how often config.toml's agents answer paraphrases right, and unrelated sentences
with their fallback, on tests/data/rules_phrases.toml; and what the sentence encoder costs.

Prints a confusion table for the tuning set and both held-out sets side by side, with the rules' examples and
without them (their phrases only), at each agent's configured thresholds. `--sweep` also searches the
thresholds that reach the targets on the tuning set with the most paraphrases right (the held-out sets are
never searched on). `--transcripts` also scores what a recogniser heard, as saved by bench/offline_quality.py:
a change to the rules engine measured on speech in seconds, without speaking and recognising it again.

    .venv/bin/python -m bench.rules_matching [--sweep]
        [--transcripts bench/results/offline_quality_five_sets.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.common import ROOT, summary, write_result
from tests.rules_phrases import (
    SPLITS,
    TARGET_RIGHT,
    TARGET_UNRELATED_FALLBACK,
    TARGET_WRONG,
    Case,
    Confusion,
    Outcome,
    Picks,
    Scored,
    answer,
    cases,
    confusion,
    heard_cases,
    outcome,
    score,
)
from voicebot.config import AgentDefinition, load_settings
from voicebot.providers.rules_llm import RuleMeanings
from voicebot.providers.sentence_encoder import SentenceEncoder

MB = 1024 * 1024
# Spoken turns: what one session's reply waits for.
TIMING_SENTENCES = ("what time do you close tonight", "could you have someone ring me back", "bye now")
TIMING_ROUNDS = 50


def without_examples(agent: AgentDefinition) -> AgentDefinition:
    """The agent with its rules' phrases only."""
    rules = tuple(dataclasses.replace(rule, examples=()) for rule in agent.rules)
    return dataclasses.replace(agent, rules=rules)


def table_rows(name: str, scored: list[Scored], agents: tuple[AgentDefinition, ...]) -> list[dict[str, Any]]:
    """One row per agent and split, and one per split for all agents."""
    rows = []
    for agent_id in [*(agent.id for agent in agents), "all"]:
        for split in SPLITS:
            chosen = [
                item
                for item in scored
                if item.case.split == split and agent_id in ("all", item.case.agent_id)
            ]
            counts = confusion(chosen, agents)
            rows.append({"rules": name, "split": split, "agent": agent_id, **as_dict(counts)})
    return rows


def as_dict(counts: Confusion) -> dict[str, Any]:
    """Counts and shares, for the table and the JSON."""
    para, unrelated = counts.paraphrases, counts.unrelated
    return {
        "paraphrases": sum(para.values()),
        "right": para[Outcome.RIGHT],
        "fallback": para[Outcome.FALLBACK],
        "wrong": para[Outcome.WRONG],
        "unrelated": sum(unrelated.values()),
        "unrelated_fallback": unrelated[Outcome.FALLBACK],
        "unrelated_wrong": unrelated[Outcome.WRONG],
        "right_share": round(counts.share(para, Outcome.RIGHT), 3),
        "wrong_share": round(counts.share(para, Outcome.WRONG), 3),
        "unrelated_fallback_share": round(counts.share(unrelated, Outcome.FALLBACK), 3),
        "meets_targets": counts.meets_targets,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    """The confusion table."""
    print(
        f"{'rules':<18}{'split':<12}{'agent':<11}{'paraphrases: right':>19}{'fallback':>9}{'wrong':>6}"
        f"{'unrelated: fallback':>21}{'wrong':>6}  targets"
    )
    for row in rows:
        print(
            f"{row['rules']:<18}{row['split']:<12}{row['agent']:<11}"
            f"{row['right']:>7}/{row['paraphrases']:<3} {row['right_share']:>6.1%}{row['fallback']:>9}"
            f"{row['wrong']:>6}{row['unrelated_fallback']:>13}/{row['unrelated']:<3} "
            f"{row['unrelated_fallback_share']:>4.0%}{row['unrelated_wrong']:>6}  "
            f"{'met' if row['meets_targets'] else '-'}"
        )


def sweep(scored: list[Scored], agents: tuple[AgentDefinition, ...]) -> dict[str, Any] | None:
    """The thresholds that meet the targets on the tuning set with the most paraphrases right; ties go to
    the stricter setting (a higher end_call bar, a wider margin, a higher bar). None when none meets them."""
    picks = Picks.of([item for item in scored if item.case.split == "tuning"], agents)
    everything = np.ones(len(picks.expected), dtype=bool)
    paraphrases, *_, unrelated, _ = picks.counts(picks.answered(0.0, 0.0), everything)
    unrelated_allowed = (1 - TARGET_UNRELATED_FALLBACK) * unrelated
    grid = np.round(np.arange(0.20, 0.96, 0.02), 2)
    best: tuple[tuple[float, ...], dict[str, Any]] | None = None
    for bar, min_margin, end_bar in itertools.product(grid, np.round(np.arange(0.0, 0.41, 0.05), 2), grid):
        if end_bar < bar:
            continue
        _, right, wrong, _, unrelated_wrong = picks.counts(
            picks.answered(bar, min_margin, end_bar), everything
        )
        # Within the targets on wrong answers (or, failing them, as near as possible) the most right.
        safe = bool(wrong <= TARGET_WRONG * paraphrases and unrelated_wrong <= unrelated_allowed)
        meets = safe and right >= TARGET_RIGHT * paraphrases
        key = (
            float(meets),
            float(safe),
            right - 10.0 * (wrong + unrelated_wrong) * (not safe),
            end_bar,
            min_margin,
            bar,
        )
        if best is None or key > best[0]:
            best = (
                key,
                {
                    "min_probability": float(bar),
                    "min_margin": float(min_margin),
                    "end_call_min_probability": float(end_bar),
                    "meets_targets": meets,
                    "right": right,
                    "fallback": paraphrases - right - wrong,
                    "wrong": wrong,
                    "unrelated_fallback": unrelated - unrelated_wrong,
                    "unrelated_wrong": unrelated_wrong,
                },
            )
    return best[1] if best else None


def misses(scored: list[Scored], agents: tuple[AgentDefinition, ...]) -> list[dict[str, Any]]:
    """Every case not answered right, with its likeliest class, to see what a threshold costs."""
    by_id = {agent.id: agent for agent in agents}
    found = []
    for item in scored:
        agent = by_id[item.case.agent_id]
        result = outcome(item.case, answer(item, agent, agent.rules_matching))
        if result is Outcome.RIGHT or (item.case.rule is None and result is Outcome.FALLBACK):
            continue
        guess = item.guess
        found.append(
            {
                "split": item.case.split,
                "agent": agent.id,
                "said": item.case.text,
                "expected_rule": item.case.rule,
                "outcome": result.value,
                "likeliest_rule": guess.rule if guess else None,
                "probability": round(guess.probability, 3) if guess else None,
                "margin": round(guess.margin, 3) if guess else None,
            }
        )
    return found


def heard_rows(
    path: Path,
    all_cases: list[Case],
    agents: tuple[AgentDefinition, ...],
    encoder: SentenceEncoder,
    meanings: dict[str, RuleMeanings | None],
) -> list[dict[str, Any]]:
    """For each recogniser and voice in an offline_quality result, the confusion counts of its transcripts:
    every set together and the held-out sets alone."""
    rows = []
    for (recogniser, voice), heard in heard_cases(path, all_cases).items():
        scored = score(heard, agents, encoder, meanings)
        for sets, chosen in (("all", scored), ("held-out", [i for i in scored if i.case.split != "tuning"])):
            counts = as_dict(confusion(chosen, agents))
            rows.append({"recogniser": recogniser, "voice": voice, "sets": sets, **counts})
    return rows


def print_heard(rows: list[dict[str, Any]]) -> None:
    """The transcripts' confusion table."""
    print(
        f"{'recogniser':<14}{'voice':<18}{'sets':<10}{'paraphrases: right':>19}{'wrong':>7}"
        f"{'unrelated: fallback':>21}  targets"
    )
    for row in rows:
        print(
            f"{row['recogniser']:<14}{row['voice']:<18}{row['sets']:<10}{row['right']:>7}/"
            f"{row['paraphrases']:<4}{row['right_share']:>6.1%}{row['wrong_share']:>7.1%}"
            f"{row['unrelated_fallback']:>11}/{row['unrelated']:<4}{row['unrelated_fallback_share']:>6.1%}  "
            f"{'met' if row['meets_targets'] else '-'}"
        )


def encoder_cost() -> tuple[SentenceEncoder, dict[str, Any]]:
    """The encoder, with what loading it took and what one spoken sentence costs to encode."""
    process = psutil.Process()
    before = process.memory_info().rss
    started = time.perf_counter()
    encoder = SentenceEncoder.load()
    load_s = time.perf_counter() - started
    loaded = process.memory_info().rss
    for text in TIMING_SENTENCES:
        encoder.encode([text])
    timings = []
    for _ in range(TIMING_ROUNDS):
        for text in TIMING_SENTENCES:
            started = time.perf_counter()
            encoder.encode([text])
            timings.append((time.perf_counter() - started) * 1000)
    return encoder, {
        "load_s": round(load_s, 2),
        "rss_added_mb": round((loaded - before) / MB, 1),
        "rss_mb": round(process.memory_info().rss / MB, 1),
        "encode_ms": summary(timings),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sweep", action="store_true", help="search thresholds on the tuning set")
    parser.add_argument(
        "--transcripts", type=Path, help="an offline_quality result whose transcripts to score as well"
    )
    args = parser.parse_args()

    encoder, cost = encoder_cost()
    print(
        f"encoder: loaded in {cost['load_s']} s, +{cost['rss_added_mb']} MB RSS; one sentence "
        f"p50 {cost['encode_ms']['p50']} ms, p95 {cost['encode_ms']['p95']} ms"
    )
    shipped = load_settings(Path(ROOT / "config.toml"), {}).agents
    result: dict[str, Any] = {"encoder": cost, "tables": [], "sweeps": {}, "misses": {}}
    all_cases = cases(shipped)
    for name, agents in (
        ("phrases+examples", shipped),
        ("phrases only", tuple(map(without_examples, shipped))),
    ):
        meanings = {agent.id: RuleMeanings.of(agent.rules, encoder) for agent in agents}
        scored = score(all_cases, agents, encoder, meanings)
        result["tables"] += table_rows(name, scored, agents)
        result["misses"][name] = misses(scored, agents)
        if args.sweep:
            result["sweeps"][name] = sweep(scored, agents)
        if args.transcripts and agents is shipped:
            result["heard"] = heard_rows(args.transcripts, all_cases, agents, encoder, meanings)
    print_table(result["tables"])
    if "heard" in result:
        print(f"\nwhat the recognisers heard ({args.transcripts}):")
        print_heard(result["heard"])
    for name, best in result["sweeps"].items():
        print(f"best on tuning, {name}: {best}")
    print(f"wrote {write_result('rules_matching', result)}")


if __name__ == "__main__":
    main()
