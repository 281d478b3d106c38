"""The agent's voice in its room: a track published as soon as the agent joins, heard once someone subscribes.

livekit-agents' RoomIO publishes the agent's audio track only after it has seen a remote participant join.
livekit-server announces a newcomer that has published nothing only in its periodic participant-update batch
(every few seconds), so a client that connects and listens first got no track to subscribe to, and heard the
greeting seconds late. Published at join instead, the track is in the room before anyone arrives: a joining
client subscribes at once, and that subscription, which the server reports without batching, is the sign
that someone can hear the greeting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress

from livekit import rtc
from livekit.agents import AgentSession

# The class RoomIO itself publishes with (its version pinned by requirements.lock). Its playback accounting
# (interruptions, pauses, transcript sync) is what AgentSession relies on: only when it publishes changes.
from livekit.agents.voice.room_io._output import _ParticipantAudioOutput

from voicebot.sessions.negotiation import publish_delay

# RoomIO's own defaults (AudioOutputOptions).
SAMPLE_RATE = 24000
NUM_CHANNELS = 1


class AgentVoice:
    """The agent's audio output, published now; `heard` resolves when a participant subscribes to it."""

    def __init__(self, room: rtc.Room, published: asyncio.Event | None = None) -> None:
        self._room = room
        self.published = published or asyncio.Event()
        """Set once the server has accepted the track."""
        # The agent publishes nothing else, so the first local publication is its voice.
        room.on("local_track_published", self._on_published)
        self.output = _ParticipantAudioOutput(
            room,
            sample_rate=SAMPLE_RATE,
            num_channels=NUM_CHANNELS,
            track_publish_options=rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
        )
        self._publishing: asyncio.Task[None] | None = None

    @property
    def heard(self) -> asyncio.Future[None]:
        """Done once someone in the room has subscribed to the agent's voice."""
        return self.output.subscribed

    def publish(self, on_failure: Callable[[BaseException], None]) -> float:
        """Publish the track in the background, as soon as the server will offer it to the people in the room
        at once; `on_failure` hears if that fails. Returns how long the publish is held, in seconds.

        Frames the agent speaks before anyone subscribes wait in the output, so nothing is lost.
        """
        hold_s = publish_delay(
            (p.joined_at.timestamp() for p in self._room.remote_participants.values() if p.joined_at),
            time.time(),
        )
        self._publishing = asyncio.create_task(self._publish(hold_s), name="agent-voice-publish")

        def check(task: asyncio.Task[None]) -> None:
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                on_failure(failure)

        self._publishing.add_done_callback(check)
        return hold_s

    async def _publish(self, hold_s: float) -> None:
        # Published inside a newcomer's negotiation window, the voice would wait out the window for them.
        if hold_s > 0:
            await asyncio.sleep(hold_s)
        # start() publishes, then waits for the first subscription, which may never come.
        await self.output.start()

    def _on_published(self, _publication: rtc.LocalTrackPublication, _track: rtc.Track) -> None:
        self.published.set()

    async def aclose(self) -> None:
        """Stop waiting for a subscriber and release the audio source."""
        self._room.off("local_track_published", self._on_published)
        if self._publishing is not None:
            self._publishing.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._publishing
        await self.output.aclose()


def caption_from_the_start(session: AgentSession[None]) -> None:
    """Let the agent's transcription flow before RoomIO has seen a participant.

    RoomIO names the agent as the speaker of its transcription only once it has seen a remote participant
    (the same batched announcement as above); until then its text output drops what the agent says, so a
    listen-first client heard the whole greeting but read it without its first words. The agent's own
    identity is known from the start, so it is set now (RoomIO sets the same again later).
    """
    # RoomIO keeps this output private; the version is pinned by requirements.lock, and
    # tests/integration/test_first_word.py checks the greeting's transcript arrives whole.
    output = session.room_io._agent_tr_output
    if output is not None:
        output.set_participant(session.room_io.room.local_participant.identity)
