"""Each agent's `stt.provider` and `tts.provider` build what they name, from the models directory given."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicebot.agents.pipeline import ProviderPipelineFactory
from voicebot.config import DEFAULT_MODELS_DIR, AgentDefinition, ProviderChoice, ProviderKeys, Rule
from voicebot.providers.moonshine_stt import ModelMissing, MoonshineSTT
from voicebot.providers.sphinx_stt import SphinxSTT

MODELS = Path(__file__).resolve().parents[3] / DEFAULT_MODELS_DIR


def agent(stt: str) -> AgentDefinition:
    rules = (Rule(reply="Nine to five.", phrases=("opening hours",)),)
    return AgentDefinition(id="a", name="A", stt=ProviderChoice(provider=stt), rules=rules)


@pytest.mark.parametrize(
    ("provider", "recogniser"),
    [("moonshine", MoonshineSTT), ("pocketsphinx", SphinxSTT), ("offline", SphinxSTT), ("auto", SphinxSTT)],
)
async def test_the_stt_provider_named_is_the_one_built_without_cloud_keys(
    provider: str, recogniser: type[object]
) -> None:
    pipeline = await ProviderPipelineFactory(ProviderKeys(), models_dir=MODELS).build(agent(provider))

    assert isinstance(pipeline.stt, recogniser)


async def test_moonshine_without_its_models_fails_the_build_saying_run_make_models(tmp_path: Path) -> None:
    factory = ProviderPipelineFactory(ProviderKeys(), models_dir=tmp_path)

    with pytest.raises(ModelMissing, match="run `make models`"):
        await factory.build(agent("moonshine"))


@pytest.mark.parametrize(
    ("provider", "spoken_by"),
    [
        ("piper", "piper/piper/en_US-joe-medium"),
        ("espeak", "espeak-ng/espeak-ng/en-us"),
        ("offline", "espeak-ng/espeak-ng/en-us"),
        ("auto", "espeak-ng/espeak-ng/en-us"),
    ],
)
async def test_the_tts_provider_names_the_voice_an_agent_speaks_with(provider: str, spoken_by: str) -> None:
    voiced = AgentDefinition(id="a", name="A", tts=ProviderChoice(provider=provider))

    pipeline = await ProviderPipelineFactory(ProviderKeys(), models_dir=MODELS).build(voiced)

    assert pipeline.description["tts"] == spoken_by
