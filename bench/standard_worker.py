"""The standard livekit-agents worker, for comparison: an AgentServer whose jobs only join the room.

Run by bench/join_latency.py and bench/memory.py with LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET set.
"""

from __future__ import annotations

import asyncio
import sys

from livekit.agents import AgentServer, JobContext

AGENT_NAME = "bench-standard"

server = AgentServer(port=0)


@server.rtc_session(agent_name=AGENT_NAME)
async def entrypoint(ctx: JobContext) -> None:
    """Join the room and stay until it closes, as a voice agent's job would."""
    await ctx.connect()
    closed = asyncio.Event()
    ctx.room.on("disconnected", lambda *_: closed.set())
    await closed.wait()


async def main() -> None:
    await server.run(devmode=False)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
