"""A real LiveKit client for tests: speaks espeak-ng audio into a room and records what the agent says."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc

from voicebot.livekit import AGENT_IDENTITY_PREFIX

TRANSCRIPTION_TOPIC = "lk.transcription"
CHAT_TOPIC = "lk.chat"
FINAL_ATTRIBUTE = "lk.transcription_final"
STATE_ATTRIBUTE = "lk.agent.state"
STREAM_CLOSE_S = 2.0
"""How long closing a recording's stream waits for its end before it cancels the stream's reader."""
FRAME_MS = 10
MIC_RATE = 48000
DECODED_RATE = 48000
"""WebRTC decodes Opus at 48 kHz, and its receive statistics count samples at that rate."""


async def espeak(text: str, *, voice: str = "en-us", wpm: int = 160) -> tuple[np.ndarray, int]:
    """Speech for `text` made by the espeak-ng program: (int16 samples, sample rate)."""
    process = await asyncio.create_subprocess_exec(
        "espeak-ng",
        "--stdout",
        "-v",
        voice,
        "-s",
        str(wpm),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(text.encode())
    assert process.returncode == 0, err.decode()
    with wave.open(io.BytesIO(out)) as wav:
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16), wav.getframerate()


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear resampling, enough for a test microphone."""
    if rate == target:
        return samples
    positions = np.linspace(0, len(samples) - 1, int(len(samples) * target / rate))
    resampled: np.ndarray = np.interp(positions, np.arange(len(samples)), samples).astype(np.int16)
    return resampled


def rms(samples: np.ndarray) -> float:
    """Root-mean-square level of int16 samples (silence is 0, full scale 32767)."""
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0


@dataclass
class Heard:
    """One transcription the room carried."""

    identity: str
    text: str
    final: bool
    at: float


@dataclass(frozen=True)
class PlayoutStretch:
    """How much the client's jitter buffer changed the length of the agent's audio so far.

    WebRTC's NetEq shortens audio to catch up when packets pile up (a receiver starved of CPU plays late),
    and stretches it, or makes up sound in their place (concealment), when they run short; either way the
    audio heard is not as long as the audio sent.
    """

    removed_s: float
    """Taken out to catch up (acceleration)."""
    inserted_s: float
    """Put in to wait for packets: deceleration, and audible concealment (silent concealment is not heard)."""


@dataclass
class VoiceClient:
    """Joins a room as a person would: publishes a microphone track and listens to the agent."""

    url: str
    token: str
    listen: bool = True
    """Record the agent's audio. Either way the client subscribes: the agent speaks only once someone does."""
    microphone: bool = True
    """Publish a microphone on joining, as the test page does. False is a listen-first client: it publishes
    nothing until it first speaks, so the room hears of it only in livekit-server's periodic update."""
    connected_at: float = 0.0
    """When the client's connect returned (monotonic time)."""
    room: rtc.Room = field(default_factory=rtc.Room)
    agent_audio: list[tuple[float, np.ndarray]] = field(default_factory=list)
    agent_sample_rate: int = 48000
    heard: list[Heard] = field(default_factory=list)
    agent_states: list[str] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _streams: set[rtc.AudioStream] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    _source: rtc.AudioSource = field(default_factory=lambda: rtc.AudioSource(MIC_RATE, 1))
    _speech: asyncio.Queue[tuple[np.ndarray, asyncio.Future[float]]] = field(default_factory=asyncio.Queue)
    _microphone_task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        """Join the room and start listening to agents' audio, transcriptions and state."""
        self.room.on("track_subscribed", self._on_track)
        self.room.on("participant_attributes_changed", self._on_attributes)
        self.room.on("participant_connected", lambda _p: self._changed.set())
        self.room.register_text_stream_handler(TRANSCRIPTION_TOPIC, self._on_text_stream)
        self.room.on("local_track_subscribed", lambda _track: self._subscribed.set())
        await self.room.connect(self.url, self.token)
        self.connected_at = time.monotonic()
        if self.microphone:
            # Like a browser, publish the microphone on joining, not on the first word.
            await self.publish_microphone()

    async def publish_microphone(self) -> None:
        """Publish the microphone track and start feeding it: silence until there is speech to say."""
        if self._microphone_task is not None:
            return
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self._source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await self.room.local_participant.publish_track(track, options)
        self._microphone_task = asyncio.create_task(self._microphone())
        self._tasks.add(self._microphone_task)

    async def close(self) -> None:
        """Leave the room."""
        # A track the SDK reports while it disconnects gets no recording: its stream cannot be opened then.
        self.listen = False
        await self.room.disconnect()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # A recording cancelled before it first ran never reached its `finally`.
        for stream in list(self._streams):
            await self._close_stream(stream)

    def agents(self) -> list[rtc.RemoteParticipant]:
        """The agent participants in the room now."""
        return [
            p for p in self.room.remote_participants.values() if p.identity.startswith(AGENT_IDENTITY_PREFIX)
        ]

    async def wait_for(self, condition: Callable[[], bool], within_s: float, what: str) -> None:
        """Wait until `condition()` holds, re-checking whenever the room changes."""
        deadline = time.monotonic() + within_s
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                heard = [(h.identity, h.text) for h in self.heard if h.final]
                raise AssertionError(f"gave up after {within_s}s waiting for {what}; heard {heard}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.2))

    async def wait_until_listening(self, within_s: float, what: str) -> None:
        """Wait until the agent's published state is `listening` (it has finished speaking)."""
        await self.wait_for(lambda: self.agent_states[-1:] == ["listening"], within_s, what)

    async def wait_for_greeting(self, within_s: float = 30) -> None:
        """Wait until the agent has said its greeting and listens.

        The agent also listens briefly before it greets, and speech over the greeting's first seconds is
        ignored (livekit-agents' echo-cancellation warm-up), so a test must not speak before this.
        """
        await self.wait_for(lambda: bool(self.finals(agent=True)), within_s, "the greeting's transcription")
        await self.wait_until_listening(within_s, "the agent to listen after its greeting")

    async def playout_stretch(self) -> PlayoutStretch:
        """What the jitter buffer removed from and inserted into the agents' audio, from WebRTC's stats."""
        removed = inserted = 0
        for agent in self.agents():
            for publication in agent.track_publications.values():
                if publication.track is None or publication.kind != rtc.TrackKind.KIND_AUDIO:
                    continue
                for stats in await publication.track.get_stats():
                    if stats.HasField("inbound_rtp"):
                        inbound = stats.inbound_rtp.inbound
                        removed += inbound.removed_samples_for_acceleration
                        inserted += inbound.inserted_samples_for_deceleration
                        inserted += inbound.concealed_samples - inbound.silent_concealed_samples
        return PlayoutStretch(removed / DECODED_RATE, inserted / DECODED_RATE)

    def agent_audio_since(self, since: float) -> np.ndarray:
        """Agent audio received after `since` (monotonic time), as int16 samples."""
        chunks = [samples for at, samples in self.agent_audio if at >= since]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def loud_seconds(self, samples: np.ndarray, threshold: float = 300.0) -> float:
        """How many seconds of `samples` are above a speech-like level, in 20 ms windows."""
        window = self.agent_sample_rate // 50
        count = sum(
            1 for i in range(0, len(samples) - window, window) if rms(samples[i : i + window]) > threshold
        )
        return count * 0.02

    async def say(self, samples: np.ndarray, sample_rate: int, trailing_silence_s: float = 1.2) -> float:
        """Speak into the microphone in real time, then stay quiet; returns when the speech ended.

        Waits first until the agent listens to the microphone: words spoken before that reach nobody.
        """
        await self.publish_microphone()
        await asyncio.wait_for(self._subscribed.wait(), 15)
        spoken: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._speech.put_nowait((resample(samples, sample_rate, MIC_RATE), spoken))
        ended = await spoken
        await asyncio.sleep(trailing_silence_s)
        return ended

    async def _microphone(self) -> None:
        """A live microphone: a 10 ms frame every 10 ms, silence unless there is speech to say."""
        step = MIC_RATE * FRAME_MS // 1000
        silence = np.zeros(step, dtype=np.int16)
        next_at = time.monotonic()
        speech, spoken, offset = None, None, 0
        while True:
            if speech is None and not self._speech.empty():
                (speech, spoken), offset = self._speech.get_nowait(), 0
            chunk = silence
            if speech is not None and spoken is not None:
                chunk = speech[offset : offset + step]
                chunk = np.concatenate([chunk, silence[: step - len(chunk)]])
                offset += step
                if offset >= len(speech):
                    spoken.set_result(time.monotonic() + FRAME_MS / 1000)
                    speech, spoken = None, None
            await self._source.capture_frame(rtc.AudioFrame(chunk.tobytes(), MIC_RATE, 1, step))
            next_at += FRAME_MS / 1000
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def _on_track(
        self, track: rtc.Track, _publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        agent = participant.identity.startswith(AGENT_IDENTITY_PREFIX)
        if self.listen and agent and track.kind == rtc.TrackKind.KIND_AUDIO:
            # Made here, not in the task, so that not one frame after the subscription is missed.
            stream = rtc.AudioStream(track, sample_rate=self.agent_sample_rate)
            self._streams.add(stream)
            self._tasks.add(asyncio.create_task(self._record(stream)))

    async def _record(self, stream: rtc.AudioStream) -> None:
        try:
            async for event in stream:
                samples = np.frombuffer(event.frame.data, dtype=np.int16).copy()
                self.agent_audio.append((time.monotonic(), samples))
                self._changed.set()
        finally:
            await self._close_stream(stream)

    async def _close_stream(self, stream: rtc.AudioStream) -> None:
        # The stream's own reader task ends only when the stream is closed; left open, it outlives us.
        if stream in self._streams:
            self._streams.discard(stream)
            # If its end never comes (the room already gone), giving up cancels the reader with it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.aclose(), STREAM_CLOSE_S)

    def _on_attributes(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        if STATE_ATTRIBUTE in changed and participant.identity.startswith(AGENT_IDENTITY_PREFIX):
            self.agent_states.append(changed[STATE_ATTRIBUTE])
            self._changed.set()

    def _on_text_stream(self, reader: rtc.TextStreamReader, identity: str) -> None:
        task = asyncio.create_task(self._read_text(reader, identity))
        self._tasks.add(task)

    async def _read_text(self, reader: rtc.TextStreamReader, identity: str) -> None:
        text = await reader.read_all()
        final = (reader.info.attributes or {}).get(FINAL_ATTRIBUTE) == "true"
        self.heard.append(Heard(identity, text, final, time.monotonic()))
        self._changed.set()

    async def type_text(self, text: str) -> None:
        """Send text as a chat message on lk.chat, the topic livekit-agents reads text turns from."""
        await self.room.local_participant.send_text(text, topic=CHAT_TOPIC)

    def finals(self, *, agent: bool) -> list[str]:
        """Final transcriptions from the agent (its replies) or from people (what they said)."""
        return [
            h.text
            for h in self.heard
            if h.final and h.text.strip() and h.identity.startswith(AGENT_IDENTITY_PREFIX) == agent
        ]
