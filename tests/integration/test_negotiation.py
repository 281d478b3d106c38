"""livekit-server's negotiation window: a track published in a newcomer's first 150 ms waits it out."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import pytest
from livekit import rtc

from voicebot.livekit import LiveKitGateway
from voicebot.sessions.negotiation import NEGOTIATION_INTERVAL_S

pytestmark = pytest.mark.integration

# joined_at is whole milliseconds.
CLOCK_GRAIN_S = 0.002
ATTEMPTS = 5


def _first_time(arrived: asyncio.Future[float], *_: object) -> None:
    if not arrived.done():
        arrived.set_result(time.time())


def joined_at_s(room: rtc.Room) -> float:
    joined = room.local_participant.joined_at
    assert joined is not None, "the server should have told the client when it joined"
    return joined.timestamp()


async def test_a_track_published_in_a_newcomers_negotiation_window_reaches_them_a_window_later(
    livekit: LiveKitGateway,
) -> None:
    """Regression: livekit-server renegotiates a subscriber at most once per 150 ms, a join being the first
    negotiation, so a track published just after someone joined reached them 150 ms later than one published
    after it: an agent sent at once into a person's room was heard ~100 ms late (publish_delay's cause)."""
    await livekit.create_room("negotiation_sdk", empty_timeout_s=30, departure_timeout_s=5)
    speaker = rtc.Room()
    await speaker.connect(livekit.url, livekit.user_token("negotiation_sdk", ttl_s=60)[1])
    source = rtc.AudioSource(48000, 1)
    try:
        for _ in range(ATTEMPTS):
            listener = rtc.Room()
            subscribed: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            listener.on("track_subscribed", partial(_first_time, subscribed))
            await listener.connect(livekit.url, livekit.user_token("negotiation_sdk", ttl_s=60)[1])
            try:
                asked = time.time()
                # Only a publish well inside the listener's window shows it (a slow connect can outlast it).
                if asked - joined_at_s(listener) > NEGOTIATION_INTERVAL_S / 2:
                    continue
                track = rtc.LocalAudioTrack.create_audio_track("held", source)
                # Callers' tokens may publish a microphone only (join_grants).
                options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
                publication = await speaker.local_participant.publish_track(track, options)
                reached = await asyncio.wait_for(subscribed, 10)
                assert reached - asked >= NEGOTIATION_INTERVAL_S - CLOCK_GRAIN_S, (
                    f"published {(asked - joined_at_s(listener)) * 1000:.0f} ms after the listener joined, "
                    f"it reached them {(reached - asked) * 1000:.0f} ms later: the server should hold it"
                )
                await speaker.local_participant.unpublish_track(publication.sid)
                return
            finally:
                await listener.disconnect()
        pytest.fail(f"no listener connected within half a window in {ATTEMPTS} attempts")
    finally:
        await source.aclose()
        await speaker.disconnect()
        await livekit.delete_room("negotiation_sdk")
