"""The tests' own LiveKit client leaves nothing running when it closes, whenever a track arrives."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from livekit import rtc

from tests.voice_client import VoiceClient

pytestmark = pytest.mark.integration

Client = TestClient[Any, Any]


def audio_stream_readers(publication: rtc.RemoteTrackPublication) -> list[asyncio.Task[Any]]:
    """The running readers of streams of `publication`'s track.

    Only that track's: the agent runs in this process too, and reads the client's microphone with a stream
    of its own, opened whenever its subscription lands (a run under load saw it open after a snapshot).
    """
    readers = []
    for task in asyncio.all_tasks():
        coroutine = task.get_coro()
        if task.done() or getattr(coroutine, "__qualname__", "") != "AudioStream._run":
            continue
        frame = getattr(coroutine, "cr_frame", None)
        stream = frame.f_locals.get("self") if frame is not None else None
        track = getattr(stream, "_track", None)
        if track is not None and track.sid == publication.sid:
            readers.append(task)
    return readers


async def joined(client: Client) -> tuple[VoiceClient, rtc.RemoteParticipant, rtc.RemoteTrackPublication]:
    response = await client.post("/api/livekit/create-room", json={"agent_id": "agent-123"})
    assert response.status == 200, await response.text()
    room = await response.json()
    person = VoiceClient(room["livekit_url"], room["access_token"])
    await person.connect()
    # A publication is listed before its subscription has made its track.
    await person.wait_for(
        lambda: any(p.track is not None for a in person.agents() for p in a.track_publications.values()),
        15,
        "the agent's voice",
    )
    (agent,) = person.agents()
    (publication,) = agent.track_publications.values()
    assert isinstance(publication, rtc.RemoteTrackPublication)
    assert publication.track is not None
    return person, agent, publication


async def test_a_track_reported_while_leaving_gets_no_recording(client: Client) -> None:
    """Regression: a new agent's track, subscribed as the client left after a takeover, got a stream whose
    reader outlived the test (the SDK ends no stream it opened during the disconnect)."""
    person, agent, publication = await joined(client)
    readers_before = set(audio_stream_readers(publication))
    assert publication.track is not None

    leaving = asyncio.create_task(person.close())
    await asyncio.sleep(0)
    person._on_track(publication.track, publication, agent)
    await leaving

    assert set(audio_stream_readers(publication)) - readers_before == set()


async def test_a_recording_cancelled_before_it_ran_has_its_stream_closed(client: Client) -> None:
    person, agent, publication = await joined(client)
    readers_before = set(audio_stream_readers(publication))
    tasks_before = set(person._tasks)
    assert publication.track is not None

    person._on_track(publication.track, publication, agent)
    (recording,) = person._tasks - tasks_before
    recording.cancel()
    (reader,) = set(audio_stream_readers(publication)) - readers_before
    await person.close()

    assert reader.done()
