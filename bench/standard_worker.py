"""The standard livekit-agents worker running voicebot's own agent, for comparison.

An AgentServer (process executor, warm idle processes: livekit-agents' production defaults) whose job
runs the same AgentSession, with the same offline pipeline and greeting, that voicebot runs as a task.
Started by the benchmarks with LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET set; with
BENCH_PROVIDERS=scripted it runs bench/scripted_providers.py's pipeline (hearing BENCH_TRANSCRIPT) instead.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from livekit.agents import Agent, AgentServer, JobContext, JobProcess

from bench.scripted_providers import ScriptedPipelines
from voicebot.agents.pipeline import PipelineFactory, ProviderPipelineFactory
from voicebot.config import load_settings
from voicebot.sessions.session import new_agent_session

AGENT_NAME = "bench-standard"
AGENT_ID = "agent-123"
CONFIG = Path(__file__).resolve().parent.parent / "config.toml"


def prewarm(process: JobProcess) -> None:
    """Load the settings and the offline models once per worker process, before its job, as livekit
    recommends for models (loaded in the job instead, they put seconds before every greeting)."""
    settings = load_settings(CONFIG, os.environ)
    agent = settings.agent(AGENT_ID)
    assert agent is not None, f"config.toml has no agent {AGENT_ID}"
    factory: PipelineFactory
    if os.environ.get("BENCH_PROVIDERS") == "scripted":
        scripted = ScriptedPipelines(os.environ["BENCH_TRANSCRIPT"])
        asyncio.run(scripted.vads.of(agent))
        factory = scripted
    else:
        offline = ProviderPipelineFactory(settings.providers, settings.models)
        asyncio.run(offline.prepare([agent]))
        factory = offline
    process.userdata["settings"] = settings
    process.userdata["factory"] = factory


def no_load() -> float:
    """Always take jobs: with LiveKit and the clients on the same cores, the CPU-load default refuses them."""
    return 0.0


# Idle processes load their models side by side on the machine's cores: more than the default 10 s.
server = AgentServer(port=0, setup_fnc=prewarm, load_fnc=no_load, initialize_process_timeout=60)


@server.rtc_session(agent_name=AGENT_NAME)
async def entrypoint(ctx: JobContext) -> None:
    """voicebot's agent-123, hosted by a worker job instead of a task."""
    settings = ctx.proc.userdata["settings"]
    agent = settings.agent(AGENT_ID)
    pipeline = await ctx.proc.userdata["factory"].build(agent)
    session = new_agent_session(agent, pipeline, max_provider_errors=settings.sessions.max_provider_errors)
    await session.start(agent=Agent(instructions=agent.instructions), room=ctx.room)
    session.say(agent.greeting)


async def main() -> None:
    await server.run(devmode=False)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
