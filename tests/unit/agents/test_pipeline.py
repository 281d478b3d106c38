"""Each agent's `stt.provider` and `tts.provider` build what they name; "auto" without keys and "offline"
mean what [models] stt and tts say (Moonshine and Piper unless told otherwise)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from livekit.plugins import deepgram

from tests.audio import greeting_agent
from voicebot.agents.pipeline import ProviderPipelineFactory, listened_words
from voicebot.config import (
    DEFAULT_MODELS_DIR,
    AgentDefinition,
    ModelSettings,
    ProviderChoice,
    ProviderKeys,
    Rule,
)
from voicebot.errors import ModelMissing
from voicebot.providers.espeak_tts import EspeakTTS
from voicebot.providers.moonshine_stt import MoonshineSTT
from voicebot.providers.piper_tts import PiperTTS
from voicebot.providers.sphinx_stt import SphinxSTT

MODELS = ModelSettings(dir=str(Path(__file__).resolve().parents[3] / DEFAULT_MODELS_DIR))

Factory = Callable[[ModelSettings], ProviderPipelineFactory]


@pytest.fixture
async def factory() -> AsyncIterator[Factory]:
    """Pipeline factories that are closed after the test (each VAD's worker thread ends with it)."""
    made: list[ProviderPipelineFactory] = []

    def make(models: ModelSettings) -> ProviderPipelineFactory:
        made.append(ProviderPipelineFactory(ProviderKeys(), models))
        return made[-1]

    yield make
    for one in made:
        await one.aclose()


def agent(stt: str = "auto", tts: str = "auto") -> AgentDefinition:
    rules = (Rule(reply="Nine to five.", phrases=("opening hours",)),)
    return AgentDefinition(
        id="a", name="A", stt=ProviderChoice(provider=stt), tts=ProviderChoice(provider=tts), rules=rules
    )


@pytest.mark.parametrize(
    ("provider", "recogniser"),
    [
        ("moonshine", MoonshineSTT),
        ("pocketsphinx", SphinxSTT),
        ("offline", MoonshineSTT),
        ("auto", MoonshineSTT),
    ],
)
async def test_the_stt_provider_named_is_the_one_built_without_cloud_keys(
    factory: Factory, provider: str, recogniser: type[object]
) -> None:
    pipeline = await factory(MODELS).build(agent(stt=provider))

    assert isinstance(pipeline.stt, recogniser)


@pytest.mark.parametrize(
    ("provider", "voice"),
    [("piper", PiperTTS), ("espeak", EspeakTTS), ("offline", PiperTTS), ("auto", PiperTTS)],
)
async def test_the_tts_provider_named_is_the_voice_an_agent_speaks_with(
    factory: Factory, provider: str, voice: type[object]
) -> None:
    pipeline = await factory(MODELS).build(agent(tts=provider))

    assert isinstance(pipeline.tts, voice)


async def test_models_stt_and_tts_choose_what_auto_and_offline_mean(factory: Factory) -> None:
    light = factory(ModelSettings(stt="pocketsphinx", tts="espeak", dir=MODELS.dir))

    for provider in ("auto", "offline"):
        pipeline = await light.build(agent(stt=provider, tts=provider))
        assert isinstance(pipeline.stt, SphinxSTT)
        assert isinstance(pipeline.tts, EspeakTTS)
    named = await light.build(agent(stt="moonshine", tts="piper"))
    assert isinstance(named.stt, MoonshineSTT)
    assert isinstance(named.tts, PiperTTS)


async def test_moonshine_without_its_models_fails_the_build_saying_run_make_models(
    factory: Factory, tmp_path: Path
) -> None:
    with pytest.raises(ModelMissing, match="run `make models`"):
        await factory(ModelSettings(dir=str(tmp_path))).build(agent("moonshine"))


async def test_prepare_loads_the_models_before_any_session_so_a_missing_one_fails_the_start(
    factory: Factory, tmp_path: Path
) -> None:
    """Regression: models loaded at the first session cost that caller seconds and stalled the others."""
    missing = factory(ModelSettings(dir=str(tmp_path)))

    with pytest.raises(ModelMissing, match="run `make models`"):
        await missing.prepare([agent("auto")])
    await missing.prepare([agent("pocketsphinx", "espeak")])


# A fresh interpreter: in this one, another test may have imported livekit-plugins-silero already.
FIRST_BUILD = """
import asyncio
from tests.audio import greeting_agent
from voicebot.agents.pipeline import ProviderPipelineFactory
from voicebot.config import ModelSettings, ProviderKeys

async def main():
    factory = ProviderPipelineFactory(ProviderKeys(), ModelSettings(stt="pocketsphinx", tts="espeak"))
    pipeline = await factory.build(greeting_agent())
    print(pipeline.vad.model)
    await factory.aclose()

asyncio.run(main())
"""


async def test_the_first_pipeline_of_a_process_gets_its_vad() -> None:
    """Regression: the model file's package (livekit-plugins-silero) was first imported in the thread that
    loads the model, and plugins may only register on the main thread: every create-room failed with 500."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FIRST_BUILD, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-2000:]
    assert out.decode().strip() == "silero"


async def test_sessions_of_one_setting_share_a_vad_and_another_setting_gets_its_own(factory: Factory) -> None:
    shared = factory(MODELS)
    listener = greeting_agent()
    pickier = replace(listener, turn=replace(listener.turn, vad_activation_threshold=0.7))

    first, second, other = [await shared.build(a) for a in (listener, listener, pickier)]

    assert first.vad is second.vad
    assert other.vad is not first.vad


def with_words(stt: ProviderChoice) -> AgentDefinition:
    rules = (
        Rule(reply="Nine to five.", phrases=("opening hours",), examples=("When do you shut?",)),
        Rule(reply="Bye.", phrases=("goodbye",), end_call=True),
    )
    return AgentDefinition(id="a", name="A", stt=stt, rules=rules)


def test_an_agent_listens_for_its_rules_words_and_its_keywords() -> None:
    words = listened_words(with_words(ProviderChoice(keywords=("Voicebot", "Doctor Khan"))))

    assert words == {"opening", "hours", "when", "do", "you", "shut", "goodbye", "voicebot", "doctor", "khan"}


async def test_moonshine_favours_the_words_an_agent_listens_for_as_its_boost_says(factory: Factory) -> None:
    built = factory(MODELS)
    favouring = with_words(ProviderChoice(provider="moonshine", keywords=("voicebot",), keyword_boost=3.0))

    stt = (await built.build(favouring)).stt
    unboosted = (await built.build(replace(favouring, stt=replace(favouring.stt, keyword_boost=0.0)))).stt

    assert isinstance(stt, MoonshineSTT)
    assert isinstance(unboosted, MoonshineSTT)
    assert stt._vocabulary is stt._model.vocabulary(listened_words(favouring), 3.0)
    assert unboosted._vocabulary is None


async def test_moonshine_follows_as_many_readings_as_the_agents_beam_width(factory: Factory) -> None:
    built = factory(MODELS)
    by_default = with_words(ProviderChoice(provider="moonshine"))

    three = (await built.build(by_default)).stt
    one = (await built.build(replace(by_default, stt=replace(by_default.stt, beam_width=1)))).stt

    assert isinstance(one, MoonshineSTT)
    assert isinstance(three, MoonshineSTT)
    assert (three._beam_width, one._beam_width) == (3, 1)
    assert one._model is three._model, "one model in memory, whatever the width"


@pytest.mark.parametrize(
    ("choice", "listens_with"),
    [
        (ProviderChoice(provider="moonshine"), "moonshine/base"),
        (ProviderChoice(provider="moonshine", model="tiny"), "moonshine/tiny"),
        # Without DEEPGRAM_API_KEY "auto" listens offline; Deepgram's model name is not Moonshine's.
        (ProviderChoice(provider="auto", model="nova-3"), "moonshine/base"),
        (ProviderChoice(provider="offline", model="tiny"), "moonshine/tiny"),
    ],
)
async def test_moonshine_listens_with_the_size_the_agent_names_and_base_otherwise(
    factory: Factory, choice: ProviderChoice, listens_with: str
) -> None:
    stt = (await factory(MODELS).build(with_words(choice))).stt

    assert isinstance(stt, MoonshineSTT)
    assert stt.model == listens_with


@pytest.mark.parametrize(("model", "key_terms"), [("nova-3", ["voicebot", "Khan"]), ("nova-2", [])])
async def test_deepgram_gets_the_keywords_as_key_terms_where_its_model_takes_them(
    model: str, key_terms: list[str]
) -> None:
    factory = ProviderPipelineFactory(ProviderKeys(deepgram_api_key="test-key"), MODELS)
    choice = ProviderChoice(provider="auto", model=model, keywords=("voicebot", "Khan"))
    try:
        stt = (await factory.build(with_words(choice))).stt
    finally:
        await factory.aclose()

    assert isinstance(stt, deepgram.STT)
    assert stt._opts.keyterm == key_terms
