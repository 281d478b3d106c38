"""The rules engine: which rule answers, and how it streams through livekit-agents' LLM interface."""

from __future__ import annotations

import pytest
from livekit.agents import llm

from voicebot.config import AgentDefinition, Rule
from voicebot.providers.rules_llm import RulesLLM, match_rule

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
