"""The offline pipeline's VAD: one per setting, shared by the sessions, stopped with the factory."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace

from tests.audio import greeting_agent
from voicebot.agents.pipeline import ProviderPipelineFactory
from voicebot.config import ProviderKeys

# A fresh interpreter: in this one, another test may have imported livekit-plugins-silero already.
FIRST_BUILD = """
import asyncio
from tests.audio import greeting_agent
from voicebot.agents.pipeline import ProviderPipelineFactory
from voicebot.config import ProviderKeys

async def main():
    factory = ProviderPipelineFactory(ProviderKeys())
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


async def test_sessions_of_one_setting_share_a_vad_and_another_setting_gets_its_own() -> None:
    factory = ProviderPipelineFactory(ProviderKeys())
    agent = greeting_agent()
    pickier = replace(agent, turn=replace(agent.turn, vad_activation_threshold=0.7))

    first, second, other = [await factory.build(a) for a in (agent, agent, pickier)]
    await factory.aclose()

    assert first.vad is second.vad
    assert other.vad is not first.vad
