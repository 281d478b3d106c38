"""The default offline pipeline (Moonshine hears, rules answer by meaning, Piper speaks) through a real
livekit-server: a caller says things no rule lists, in a voice other than the agent's, and is understood."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from livekit import rtc
from pytest_aiohttp import AiohttpClient

from tests.voice_client import VoiceClient, espeak
from voicebot.app import create_app
from voicebot.config import AgentDefinition, ModelSettings, Settings
from voicebot.providers.moonshine_stt import MoonshineSTT
from voicebot.providers.rules_llm import words

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]
# Said by espeak-ng's en-us voice (the agent speaks with Piper's joe): none is among any rule's phrases or
# examples in config.toml, so only their meaning can reach the rule.
PARAPHRASES = {
    "what time do you finish today": 0,  # opening hours
    "how do I find you": 2,  # where are you
}
UNRELATED = "my car will not start this morning"


@pytest.fixture
def offline_settings(settings: Settings) -> Settings:
    """The suite's settings with the default offline pipeline instead of pocketsphinx and espeak-ng."""
    return replace(settings, models=replace(settings.models, stt="moonshine", tts="piper"))


@pytest.fixture
async def offline_client(aiohttp_client: AiohttpClient, offline_settings: Settings) -> Client:
    return await aiohttp_client(create_app(offline_settings))


@pytest.fixture
async def person(offline_client: Client) -> AsyncIterator[VoiceClient]:
    """Someone who asked for a room with agent-123, joined it and heard the greeting."""
    response = await offline_client.post("/api/livekit/create-room", json={"agent_id": "agent-123"})
    assert response.status == 200, await response.text()
    room = await response.json()
    caller = VoiceClient(room["livekit_url"], room["access_token"])
    await caller.connect()
    await caller.wait_for_greeting()
    await caller.wait_until_listening(30, "the agent to listen")
    yield caller
    await caller.close()


def agent_123(settings: Settings) -> AgentDefinition:
    agent = settings.agent("agent-123")
    assert agent is not None
    return agent


# What Moonshine contracts, written out as the replies write it: "you're" is "you are" heard right. Words that
# sound alike are one word to a listener, so the reply's words and the words heard are written the same way
# (a read-back of Piper's greeting once heard "your" for "you are" and "2" for "to").
SOUNDS_LIKE = {
    "you're": ["you", "are"],
    "your": ["you", "are"],
    "we're": ["we", "are"],
    "i'm": ["i", "am"],
    "it's": ["it", "is"],
    "2": ["to"],
    "two": ["to"],
    "too": ["to"],
}


def as_heard(text: str) -> list[str]:
    """The words of `text`, contractions written out and sound-alikes made one."""
    return [part for word in words(text) for part in SOUNDS_LIKE.get(word, [word])]


async def read_back(samples: np.ndarray, sample_rate: int, settings: Settings) -> list[str]:
    """The words Moonshine hears in the agent's audio, written as `as_heard` writes them."""
    frame = rtc.AudioFrame(samples.tobytes(), sample_rate, 1, len(samples))
    event = await MoonshineSTT(models_dir=settings.models.path).recognize(frame)
    return as_heard(event.alternatives[0].text) if event.alternatives else []


def replied(person: VoiceClient, reply: str) -> Callable[[], bool]:
    return lambda: reply in person.finals(agent=True)


def listed_anywhere(text: str, agent: AgentDefinition) -> bool:
    said = " ".join(words(text))
    return any(
        " ".join(words(phrase)) in said for rule in agent.rules for phrase in (*rule.phrases, *rule.examples)
    )


async def test_paraphrases_no_rule_lists_reach_the_right_rule_and_its_spoken_reply_reads_back(
    person: VoiceClient, offline_settings: Settings
) -> None:
    agent = agent_123(offline_settings)
    for question, rule in PARAPHRASES.items():
        assert not listed_anywhere(question, agent), f"{question!r} must not be a listed phrase or example"
        reply = agent.rules[rule].reply
        speech, rate = await espeak(question)
        spoken_at = await person.say(speech, rate)

        await person.wait_for(replied(person, reply), 30, f"the reply to {question!r}")
        await person.wait_until_listening(30, "the reply to finish")

        answer = person.agent_audio_since(spoken_at)
        heard = await read_back(answer, person.agent_sample_rate, offline_settings)
        expected = as_heard(reply)
        missing = [word for word in expected if word not in heard]
        # Moonshine reads Piper's voice back almost word for word; a few may differ ("nine"/"mine", "9").
        assert len(missing) <= len(expected) * 0.3, f"heard {' '.join(heard)!r} for {reply!r}"


async def test_an_unrelated_sentence_gets_the_fallback_not_a_rule(
    person: VoiceClient, offline_settings: Settings
) -> None:
    agent = agent_123(offline_settings)
    speech, rate = await espeak(UNRELATED)
    await person.say(speech, rate)

    await person.wait_for(lambda: agent.fallback in person.finals(agent=True), 30, "the fallback reply")
    assert not set(person.finals(agent=True)) & {rule.reply for rule in agent.rules}
    (heard,) = [words(text) for text in person.finals(agent=False)]
    # The fallback answered what was said, not a recogniser's silence (through Opus a word may differ).
    assert len(set(words(UNRELATED)) & set(heard)) >= len(words(UNRELATED)) / 2, f"Moonshine heard {heard}"


async def test_the_greeting_is_spoken_by_piper_and_reads_back_as_its_text(
    person: VoiceClient, offline_settings: Settings
) -> None:
    agent = agent_123(offline_settings)
    assert person.finals(agent=True)[0] == agent.greeting
    greeting = np.concatenate([samples for _, samples in person.agent_audio])

    heard = await read_back(greeting, person.agent_sample_rate, offline_settings)

    expected = as_heard(agent.greeting)
    missing = [word for word in expected if word not in heard]
    # Piper says it a little differently each time (its noise), and Moonshine writes "you are" one time and
    # "you're" or "three" for "through" the next: most words, not all, come back.
    assert len(missing) <= len(expected) * 0.3, f"heard {' '.join(heard)!r}"


def test_the_models_section_defaults_to_moonshine_and_piper() -> None:
    assert (ModelSettings().stt, ModelSettings().tts) == ("moonshine", "piper")
