"""Each agent's TTS provider name picks its voice; "auto" and "offline" still mean espeak-ng without a key."""

from __future__ import annotations

import pytest

from voicebot.agents.pipeline import ProviderPipelineFactory
from voicebot.config import AgentDefinition, ProviderChoice, ProviderKeys


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
    agent = AgentDefinition(id="a", name="A", tts=ProviderChoice(provider=provider))

    pipeline = await ProviderPipelineFactory(ProviderKeys()).build(agent)

    assert pipeline.description["tts"] == spoken_by
