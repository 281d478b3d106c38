"""The rules engine: which rule answers, and how it streams through livekit-agents' LLM interface."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
from livekit.agents import llm

from tests.rules_phrases import (
    TARGET_RIGHT,
    TARGET_UNRELATED_FALLBACK,
    TARGET_WRONG,
    Outcome,
    cases,
    confusion,
    score,
)
from voicebot.config import AgentDefinition, ConfigError, Rule, RulesMatching, parse_settings
from voicebot.providers.rules_llm import (
    RuleMeanings,
    RulesLLM,
    match_rule,
    meaning_text,
    off_topic_sentences,
    off_topic_topics,
    words,
)
from voicebot.providers.sentence_encoder import SentenceEncoder, shared_encoder

CONFIG = Path(__file__).parents[3] / "config.toml"

HOURS = Rule(reply="We open at nine. We close at five.", phrases=("opening hours", "when are you open"))
MESSAGE = Rule(reply="Please leave your message.", patterns=(r"\bmessage\b",))
BYE = Rule(reply="Goodbye.", phrases=("goodbye",), end_call=True)
AGENT = AgentDefinition(
    id="desk", name="Desk", rules=(HOURS, MESSAGE, BYE), fallback="Sorry, say that again?"
)


@pytest.mark.parametrize(
    ("said", "expected"),
    [
        ("What are your opening hours?", HOURS),
        ("WHEN ARE YOU OPEN", HOURS),
        ("hmm, opening   hours, please", HOURS),
        ("can I leave a message", MESSAGE),
        ("goodbye then", BYE),
        ("the weather is nice", None),
        ("open hours", None),
        ("messages", None),
    ],
)
def test_a_rule_matches_its_phrases_as_whole_words_or_its_patterns(said: str, expected: Rule | None) -> None:
    assert match_rule(AGENT.rules, said) == expected


def test_the_first_matching_rule_wins() -> None:
    assert match_rule(AGENT.rules, "opening hours, and a message") == HOURS


async def reply(rules_llm: RulesLLM, *turns: tuple[llm.ChatRole, str]) -> tuple[str, list[str]]:
    chat_ctx = llm.ChatContext()
    for role, text in turns:
        chat_ctx.add_message(role=role, content=text)
    chunks: list[str] = []
    async with rules_llm.chat(chat_ctx=chat_ctx) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                chunks.append(chunk.delta.content)
    return "".join(chunks), chunks


async def test_the_stream_answers_the_last_user_message_a_sentence_at_a_time() -> None:
    text, chunks = await reply(
        RulesLLM(AGENT), ("user", "goodbye"), ("assistant", "Goodbye."), ("user", "your opening hours?")
    )

    assert text == HOURS.reply
    assert chunks == ["We open at nine. ", "We close at five."]


async def test_no_rule_gets_the_fallback() -> None:
    text, _ = await reply(RulesLLM(AGENT), ("user", "tell me a joke"))

    assert text == AGENT.fallback


async def test_with_nothing_said_yet_there_is_nothing_to_answer() -> None:
    text, chunks = await reply(RulesLLM(AGENT), ("system", "You are a receptionist."))

    assert (text, chunks) == ("", [])


def test_only_end_call_replies_end_the_call() -> None:
    rules_llm = RulesLLM(AGENT)

    assert rules_llm.ends_call("Goodbye.")
    assert not rules_llm.ends_call(HOURS.reply)
    assert not rules_llm.ends_call(AGENT.fallback)


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return shared_encoder()


@pytest.fixture(scope="module")
def shipped() -> dict[str, AgentDefinition]:
    """config.toml's agents, as the phrase set was written for them."""
    import tomllib

    settings = parse_settings(tomllib.loads(CONFIG.read_text()), {})
    return {agent.id: agent for agent in settings.agents}


@pytest.fixture(scope="module")
def meanings(shipped: dict[str, AgentDefinition], encoder: SentenceEncoder) -> dict[str, RuleMeanings | None]:
    return {agent_id: RuleMeanings.of(agent.rules, encoder) for agent_id, agent in shipped.items()}


def rules_llm_of(agent: AgentDefinition, encoder: SentenceEncoder) -> RulesLLM:
    return RulesLLM(agent, RuleMeanings.of(agent.rules, encoder))


@pytest.mark.parametrize(
    ("agent_id", "said", "rule"),
    [
        ("agent-123", "what time do you close", 0),
        ("agent-123", "are you open tomorrow", 0),
        ("agent-123", "could you pass a message on", 1),
        ("agent-123", "what's the address of the office", 2),
        ("agent-123", "bye bye", 3),
        ("faq", "who are you", 0),
        ("faq", "can I use it without internet", 1),
    ],
)
async def test_a_sentence_that_means_a_rules_phrase_gets_its_reply(
    shipped: dict[str, AgentDefinition],
    meanings: dict[str, RuleMeanings | None],
    agent_id: str,
    said: str,
    rule: int,
) -> None:
    agent = shipped[agent_id]
    assert match_rule(agent.rules, said) is None

    text, _ = await reply(RulesLLM(agent, meanings[agent_id]), ("user", said))

    assert text == agent.rules[rule].reply


@pytest.mark.parametrize("said", ["tell me a joke", "how do I make pancakes", "what's the capital of France"])
async def test_an_unrelated_sentence_gets_the_fallback(
    shipped: dict[str, AgentDefinition], meanings: dict[str, RuleMeanings | None], said: str
) -> None:
    agent = shipped["agent-123"]

    text, _ = await reply(RulesLLM(agent, meanings[agent.id]), ("user", said))

    assert text == agent.fallback


async def test_an_exact_phrase_or_pattern_wins_over_a_nearer_meaning(encoder: SentenceEncoder) -> None:
    pancakes = Rule(reply="We sell no pancakes.", patterns=(r"\bpancakes\b",))
    agent = dataclasses.replace(AGENT, rules=(HOURS, pancakes))

    text, _ = await reply(rules_llm_of(agent, encoder), ("user", "what time do you close, pancakes aside"))

    assert text == pancakes.reply


async def test_an_end_call_rule_needs_a_nearer_sentence_than_other_rules(encoder: SentenceEncoder) -> None:
    """Hanging up on a sentence that is merely like goodbye costs the caller their call."""
    matching = RulesMatching(min_probability=0.3, min_margin=0.0, end_call_min_probability=0.99)
    ending = dataclasses.replace(AGENT, rules=(HOURS, BYE), rules_matching=matching)
    staying = dataclasses.replace(
        ending, rules=(HOURS, dataclasses.replace(BYE, end_call=False, reply="Bye then."))
    )

    ended, _ = await reply(rules_llm_of(ending, encoder), ("user", "bye bye"))
    answered, _ = await reply(rules_llm_of(staying, encoder), ("user", "bye bye"))

    assert ended == AGENT.fallback
    assert answered == "Bye then."


def agent_with_matching(**matching: object) -> AgentDefinition:
    raw = {
        "livekit": {"api_secret": "a-test-secret-of-32-characters-or-more"},
        "agents": [
            {
                "id": "desk",
                "name": "Desk",
                "rules": [{"phrases": ["when are you open"], "reply": "Nine to five."}],
                "rules_matching": matching,
            }
        ],
    }
    return parse_settings(raw, {}).agents[0]


async def test_the_agents_thresholds_from_config_decide(encoder: SentenceEncoder) -> None:
    said: tuple[llm.ChatRole, str] = ("user", "what time do you open")

    default, _ = await reply(rules_llm_of(agent_with_matching(), encoder), said)
    strict, _ = await reply(rules_llm_of(agent_with_matching(min_probability=0.999), encoder), said)
    off, _ = await reply(rules_llm_of(agent_with_matching(by_meaning=False), encoder), said)

    assert default == "Nine to five."
    assert strict == off == agent_with_matching().fallback


@pytest.mark.parametrize("key", ["min_probability", "min_margin", "end_call_min_probability"])
def test_a_threshold_outside_zero_to_one_is_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=f"rules_matching.{key}"):
        agent_with_matching(**{key: 1.5})


async def test_the_sentence_is_encoded_off_the_event_loop(
    encoder: SentenceEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules_llm = rules_llm_of(AGENT, encoder)
    threads: list[str] = []
    encode = encoder.encode

    def recording(texts: list[str]) -> object:
        threads.append(threading.current_thread().name)
        return encode(texts)

    monkeypatch.setattr(encoder, "encode", recording)
    await reply(rules_llm, ("user", "what time do you close"))

    assert threads
    assert threading.main_thread().name not in threads


def test_the_phrase_set_says_every_paraphrase_in_other_words(shipped: dict[str, AgentDefinition]) -> None:
    all_cases = cases(list(shipped.values()))
    examples = {
        agent.id: {tuple(words(example)) for rule in agent.rules for example in rule.examples}
        for agent in shipped.values()
    }

    for case in all_cases:
        if case.rule is not None:
            assert match_rule(shipped[case.agent_id].rules, case.text) is None, case
        # An example said word for word would be no test of matching by meaning.
        assert tuple(words(case.text)) not in examples[case.agent_id], case


# What bench/rules_matching.py measured at config.toml's thresholds, as counts: (right, wrong, unrelated that
# got a rule). tuning chose the thresholds and the off-topic sentences (those on looking for work and finding
# other places took its unrelated answered from 4 to 2 and changed no other set; "none" as a class per topic
# took it to 4 again, within the targets, and the thresholds were chosen anew); held_out_2 and held_out_3 were
# written before anything was measured on them, held_out_4 before the classifier's change it measured, and
# held_out_5 (what callers say about the call itself) before the off-topic topic of that kind: it took its
# unrelated answered from 12 to 3.
FLOORS = {
    "tuning": (142, 0, 4),
    "held_out": (36, 0, 2),
    "held_out_2": (68, 0, 2),
    "held_out_3": (52, 0, 0),
    "held_out_4": (51, 0, 1),
    "held_out_5": (13, 0, 3),
}
# Sets short of a target, and the shares they reach (right; unrelated to the fallback): held_out (43
# paraphrases, 30 unrelated) and held_out_5's unrelated (29: three sentences on a rule).
SHORT_OF_TARGETS = {"held_out": (0.83, 0.93), "held_out_5": (TARGET_RIGHT, 0.89)}


@pytest.mark.parametrize("split", FLOORS)
def test_on_the_phrase_set_paraphrases_reach_their_rule_and_almost_never_a_wrong_one(
    shipped: dict[str, AgentDefinition],
    meanings: dict[str, RuleMeanings | None],
    encoder: SentenceEncoder,
    split: str,
) -> None:
    agents = list(shipped.values())
    scored = score([c for c in cases(agents) if c.split == split], agents, encoder, meanings)
    min_right, max_wrong, max_unrelated_answered = FLOORS[split]

    counts = confusion(scored, agents)

    assert counts.paraphrases[Outcome.RIGHT] >= min_right
    assert counts.paraphrases[Outcome.WRONG] <= max_wrong
    assert sum(counts.unrelated.values()) - counts.unrelated[Outcome.FALLBACK] <= max_unrelated_answered
    min_right_share, min_unrelated_share = SHORT_OF_TARGETS.get(
        split, (TARGET_RIGHT, TARGET_UNRELATED_FALLBACK)
    )
    assert counts.meets_targets or split in SHORT_OF_TARGETS
    assert counts.share(counts.paraphrases, Outcome.RIGHT) >= min_right_share
    assert counts.share(counts.paraphrases, Outcome.WRONG) <= TARGET_WRONG
    assert counts.share(counts.unrelated, Outcome.FALLBACK) >= min_unrelated_share


@pytest.mark.parametrize(
    ("said", "rule"),
    [
        # Moonshine's casing and punctuation, and words it mishears.
        ("What time do you close to my?", 0),  # tomorrow
        pytest.param(
            "Are you open to marrow?", 0, marks=pytest.mark.xfail(reason="measured: the fallback answers")
        ),
        ("Can I leaf a message for Sarah?", 1),
        ("Could you tell him I rung?", 1),
        ("Where's you're office?", 2),
        ("What's you address?", 2),
        pytest.param(
            "Okay, thanks. By.",
            3,
            marks=pytest.mark.xfail(reason="measured: 0.61, under the end_call bar of 0.62: the fallback"),
        ),
        pytest.param("Good buy.", 3, marks=pytest.mark.xfail(reason="measured: the fallback answers")),
    ],
)
async def test_a_misheard_sentence_still_reaches_its_rule(
    shipped: dict[str, AgentDefinition], meanings: dict[str, RuleMeanings | None], said: str, rule: int
) -> None:
    agent = shipped["agent-123"]

    text, _ = await reply(RulesLLM(agent, meanings[agent.id]), ("user", said))

    assert text == agent.rules[rule].reply


def test_casing_and_punctuation_never_reach_the_encoder() -> None:
    assert (
        meaning_text("What time do you CLOSE?!")
        == meaning_text("what time, do you close")
        == ("what time do you close")
    )


def test_the_off_topic_sentences_are_none_of_the_phrase_sets(shipped: dict[str, AgentDefinition]) -> None:
    """The "none" class is trained on them: a phrase-set sentence among them would test its own training."""
    said = {meaning_text(case.text) for case in cases(list(shipped.values()))}

    assert len(off_topic_sentences()) >= 150
    assert not said & {meaning_text(text) for text in off_topic_sentences()}


def test_none_is_a_class_for_each_off_topic_topic(encoder: SentenceEncoder) -> None:
    """Each run of comment lines in off_topic.txt begins a topic, and each topic is a column of its own."""
    topics = off_topic_topics()
    meanings = RuleMeanings.of(AGENT.rules, encoder)
    assert meanings is not None

    assert len(topics) >= 10
    assert all(topics)
    assert sum(map(len, topics)) == len(off_topic_sentences())
    # MESSAGE has a pattern only: no sentence to learn from, so no column.
    assert meanings.classes == (0, 2, *[None] * len(topics))


@pytest.mark.parametrize(
    "said", ["say that again please", "sorry, I didn't hear you", "you're breaking up", "hold on a minute"]
)
async def test_asking_again_or_about_the_line_gets_the_fallback_not_a_goodbye(
    shipped: dict[str, AgentDefinition], meanings: dict[str, RuleMeanings | None], said: str
) -> None:
    """A caller who did not hear a reply must not be hung up on: before "none" had a topic for the call
    itself, "please repeat that" reached the goodbye rule."""
    agent = shipped["agent-123"]

    text, _ = await reply(RulesLLM(agent, meanings[agent.id]), ("user", said))

    assert text == agent.fallback
