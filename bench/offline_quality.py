"""Offline quality: how well each offline recogniser hears callers, and how often the rules answer right.

The phrase set is tests/data/rules_phrases.toml: for each rule of the shipped agents, paraphrases that are not
among its phrases (tuning and held-out sets), and utterances no rule answers. Each is spoken by two voices,
espeak-ng (a caller's robotic voice) and Piper's joe (a natural one), clean and with white noise mixed in at
10 dB SNR, then recognised by each offline recogniser:

- word error rate against the text (words lower-cased, punctuation dropped, digits spelled out);
- what the agent's rules engine (matching by meaning) answers to the transcript: for a paraphrase the right
  rule, the fallback or a wrong rule; for an unrelated utterance the fallback or a (wrong) rule.

pocketsphinx listens, as it does in its pipeline, for the agent's phrases only (a JSGF grammar), so its WER on
paraphrases says how far that grammar is from what people say.

Moonshine base (the default) runs three times: as configured (favouring the agent's words by its
keyword_boost, following beam_width readings at once), one reading at a time (beam_width 1), and with no
boost; then Moonshine tiny as configured.

    .venv/bin/python -m bench.offline_quality
        [--stt moonshine,moonshine*1,moonshine:0,moonshine/tiny,pocketsphinx] [--splits tuning]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import stt as agents_stt
from livekit.agents import tts as agents_tts

from bench.common import ROOT, write_result
from tests.audio import as_vad_segment, word_errors
from tests.rules_phrases import SPLITS, Case, Confusion, Outcome, cases, outcome
from tests.voice_client import espeak
from voicebot.agents.pipeline import Pipeline, ProviderPipelineFactory
from voicebot.config import AgentDefinition, ProviderChoice, load_settings
from voicebot.logs import configure_logging
from voicebot.providers.rules_llm import RulesLLM, words

CONFIG = ROOT / "config.toml"
VOICES = ("espeak-ng", "piper")
NOISE_SNR_DB = 10.0
TARGETS = {"right_rule_min": 0.90, "wrong_rule_max": 0.02, "unrelated_fallback_min": 0.95}
_NUMBERS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]


@dataclass(frozen=True)
class Heard:
    """What one recogniser made of one case in one voice and noise condition, and what the rules answered."""

    case: Case
    voice: str
    noisy: bool
    transcript: str
    confidence: float
    """What the recogniser said of its own transcript, 0 to 1."""
    answered: int | None
    """The index of the rule that answered; None for the fallback."""


def normalised(text: str) -> list[str]:
    """Words for WER: lower case, no punctuation, small numbers spelled out."""
    return [_NUMBERS[int(w)] if w.isdigit() and int(w) < len(_NUMBERS) else w for w in words(text)]


def with_noise(samples: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """`samples` with white noise at `snr_db` below the speech's power (over its voiced part)."""
    speech = samples.astype(np.float64)
    voiced = speech[np.abs(speech) > 0.02 * np.abs(speech).max()]
    power = float(np.mean(voiced**2)) if voiced.size else 1.0
    noise = np.random.default_rng(seed).normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), speech.shape)
    mixed: np.ndarray = np.clip(speech + noise, -32768, 32767).astype(np.int16)
    return mixed


async def synthesised(voice: agents_tts.TTS[Any], text: str) -> tuple[np.ndarray, int]:
    """`text` spoken by a livekit-agents TTS: (int16 samples, sample rate)."""
    frames = [event.frame async for event in voice.synthesize(text)]
    merged = rtc.combine_audio_frames(frames)
    return np.frombuffer(merged.data, dtype=np.int16).copy(), merged.sample_rate


async def transcribe(recogniser: agents_stt.STT[Any], samples: np.ndarray, rate: int) -> tuple[str, float]:
    """What `recogniser` hears in `samples`, with half a second of silence either side (as the VAD cuts), and
    its confidence."""
    event = await recogniser.recognize(as_vad_segment(samples, rate))
    return (event.alternatives[0].text, event.alternatives[0].confidence) if event.alternatives else ("", 0.0)


def confusion(heard: Sequence[Heard]) -> dict[str, Any]:
    """Right rule / fallback / wrong rule for paraphrases; fallback / wrong for unrelated; and the WER."""
    counts = Confusion()
    for h in heard:
        counts.add(h.case, outcome(h.case, h.answered))
    reference_words = sum(len(normalised(h.case.text)) for h in heard)
    errors = sum(word_errors(normalised(h.case.text), normalised(h.transcript)) for h in heard)
    p, u = counts.paraphrases, counts.unrelated
    return {
        "utterances": len(heard),
        "wer": round(errors / max(reference_words, 1), 3),
        "paraphrases": {
            "n": sum(p.values()),
            "right_rule": round(counts.share(p, Outcome.RIGHT), 3),
            "fallback": round(counts.share(p, Outcome.FALLBACK), 3),
            "wrong_rule": round(counts.share(p, Outcome.WRONG), 3),
        },
        "unrelated": {
            "n": sum(u.values()),
            "fallback": round(counts.share(u, Outcome.FALLBACK), 3),
            "wrong_rule": round(counts.share(u, Outcome.WRONG), 3),
        },
    }


async def answered_rule(rules: RulesLLM, agent: AgentDefinition, text: str) -> int | None:
    """The index of the rule whose reply the rules engine gives to `text`; None for the fallback."""
    reply = await rules.reply_to(text)
    return next((index for index, rule in enumerate(agent.rules) if rule.reply == reply), None)


async def run(recognisers: Sequence[str], splits: Sequence[str]) -> dict[str, Any]:
    settings = load_settings(CONFIG, {})
    factory = ProviderPipelineFactory(settings.providers, settings.models)
    chosen = [case for case in cases(settings.agents) if case.split in splits]
    agents = {agent.id: agent for agent in settings.agents if any(c.agent_id == agent.id for c in chosen)}

    async def pipeline(agent: AgentDefinition, stt: str, tts: str = "espeak") -> Pipeline:
        listening = recogniser_choice(agent.stt, stt)
        return await factory.build(replace(agent, stt=listening, tts=ProviderChoice(provider=tts)))

    piper = (await pipeline(agents["agent-123"], "pocketsphinx", "piper")).tts
    print(f"speaking {len(chosen)} sentences in two voices ...", flush=True)
    speech: dict[tuple[str, str], tuple[np.ndarray, int]] = {}
    for case in chosen:
        speech[("espeak-ng", case.text)] = await espeak(case.text)
        speech[("piper", case.text)] = await synthesised(piper, case.text)
    results: dict[str, Any] = {}
    for name in recognisers:
        started = time.monotonic()
        heard: list[Heard] = []
        built = {agent_id: await pipeline(agent, name) for agent_id, agent in agents.items()}
        for index, case in enumerate(chosen):
            agent, listening = agents[case.agent_id], built[case.agent_id]
            assert isinstance(listening.llm, RulesLLM), "agents here answer from their rules"
            for voice in VOICES:
                samples, rate = speech[(voice, case.text)]
                for noisy in (False, True):
                    audio = with_noise(samples, NOISE_SNR_DB, seed=index) if noisy else samples
                    transcript, confidence = await transcribe(listening.stt, audio, rate)
                    answered = await answered_rule(listening.llm, agent, transcript)
                    heard.append(Heard(case, voice, noisy, transcript, confidence, answered))
        print(f"  {name}: {len(heard)} recognitions in {time.monotonic() - started:.0f} s", flush=True)
        results[name] = {
            "seconds": round(time.monotonic() - started, 1),
            "by_condition": {
                condition(voice, noisy): confusion(
                    [h for h in heard if h.voice == voice and h.noisy == noisy]
                )
                for voice in VOICES
                for noisy in (False, True)
            },
            "by_split": {s: confusion([h for h in heard if h.case.split == s]) for s in splits},
            "misheard": [
                {"said": h.case.text, "heard": h.transcript, "voice": condition(h.voice, h.noisy)}
                for h in heard
                if h.answered != h.case.rule
            ],
            # Every transcript, so a change to the rules engine can be measured on them without the speech.
            "transcripts": [
                {
                    "split": h.case.split,
                    "agent": h.case.agent_id,
                    "said": h.case.text,
                    "voice": condition(h.voice, h.noisy),
                    "heard": h.transcript,
                    "confidence": round(h.confidence, 3),
                }
                for h in heard
            ],
        }
    text_only: dict[str, Any] = {}
    for split in splits:
        matched = []
        for case in [c for c in chosen if c.split == split]:
            rules = (await pipeline(agents[case.agent_id], "pocketsphinx")).llm
            assert isinstance(rules, RulesLLM)
            answered = await answered_rule(rules, agents[case.agent_id], case.text)
            matched.append(Heard(case, "text", False, case.text, 1.0, answered))
        text_only[split] = confusion(matched)
    await factory.aclose()
    return {"targets": TARGETS, "noise_snr_db": NOISE_SNR_DB, "text": text_only, "recognisers": results}


def recogniser_choice(configured: ProviderChoice, spec: str) -> ProviderChoice:
    """The agent's STT settings with the recogniser --stt names: a provider, "/M" for its model M, ":B" for
    keyword_boost B, "*W" for beam_width W."""
    spec, _, width = spec.partition("*")
    named, _, boost = spec.partition(":")
    provider, _, model = named.partition("/")
    chosen = replace(configured, provider=provider, model=model or configured.model)
    chosen = replace(chosen, keyword_boost=float(boost)) if boost else chosen
    return replace(chosen, beam_width=int(width)) if width else chosen


def condition(voice: str, noisy: bool) -> str:
    """A voice and noise condition as the table names it."""
    return f"{voice} +noise" if noisy else voice


def print_table(result: dict[str, Any]) -> None:
    print("\nrules by meaning on the written text (no speech):")
    print(f"  {'set':12}{'right':>8}{'fallback':>10}{'wrong':>8}   unrelated: {'fallback':>9}{'wrong':>8}")
    for phrase_set, row in result["text"].items():
        p, u = row["paraphrases"], row["unrelated"]
        print(
            f"  {phrase_set:12}{p['right_rule']:>8.1%}{p['fallback']:>10.1%}{p['wrong_rule']:>8.1%}"
            f"   {'':11}{u['fallback']:>9.1%}{u['wrong_rule']:>8.1%}"
        )
    print("\nthrough speech and a recogniser (every set together):")
    print(
        f"  {'recogniser':16}{'voice':18}{'WER':>7}{'right':>8}{'fallback':>10}{'wrong':>8}"
        f"   unrelated: {'fallback':>9}{'wrong':>8}"
    )
    for name, row in result["recognisers"].items():
        for condition, cell in row["by_condition"].items():
            p, u = cell["paraphrases"], cell["unrelated"]
            print(
                f"  {name:16}{condition:18}{cell['wer']:>7.1%}{p['right_rule']:>8.1%}{p['fallback']:>10.1%}"
                f"{p['wrong_rule']:>8.1%}   {'':11}{u['fallback']:>9.1%}{u['wrong_rule']:>8.1%}"
            )
    t = result["targets"]
    print(
        f"targets: right rule >= {t['right_rule_min']:.0%} of paraphrases, wrong rule <= "
        f"{t['wrong_rule_max']:.0%}, unrelated to the fallback >= {t['unrelated_fallback_min']:.0%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--stt",
        default="moonshine,moonshine*1,moonshine:0,moonshine/tiny,pocketsphinx",
        help="recognisers to compare; moonshine/tiny listens with Moonshine tiny, moonshine:B with "
        "keyword_boost B, moonshine*W with beam_width W (moonshine: as configured)",
    )
    parser.add_argument("--splits", default=",".join(SPLITS), help="sets of tests/data/rules_phrases.toml")
    args = parser.parse_args()
    # Every recognition logs at debug; the table is what this prints.
    configure_logging("warning", "console")
    started = time.monotonic()
    result = asyncio.run(run(args.stt.split(","), args.splits.split(",")))
    path = write_result("offline_quality", result)
    print_table(result)
    print(f"(written to {path.relative_to(path.parents[2])}; {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
