"""Scripted stand-ins for a caller's microphone, the VAD, STT and TTS, and the agent's speaker.

They let livekit-agents' real `AgentSession` run a conversation without a LiveKit server or a room.
The script is what the caller says and when, in seconds of microphone audio: the microphone plays a
tone while an utterance is spoken and silence otherwise, the VAD hears the tone, the STT answers the
n-th stretch of speech it is given with the n-th utterance's transcript, and the speaker "plays" what
the TTS made in real time. Audio runs in real time, so scripts should be short (tenths of a second).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Never

import numpy as np
from livekit import rtc
from livekit.agents import APIConnectOptions, stt, tts, utils, vad
from livekit.agents.language import LanguageCode
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.voice import io

MICROPHONE_SAMPLE_RATE = 16000
SPEAKER_SAMPLE_RATE = 24000


@dataclass(frozen=True)
class Utterance:
    """Something the caller says: `start_s` to `end_s` into the microphone audio; STT hears `transcript`."""

    start_s: float
    end_s: float
    transcript: str

    def __post_init__(self) -> None:
        if not 0 <= self.start_s < self.end_s:
            raise ValueError(f"an utterance needs 0 <= start_s < end_s, got {self.start_s}..{self.end_s}")


def tone(duration_s: float, sample_rate: int, *, frequency_hz: float = 440.0) -> bytes:
    """`duration_s` of a mono 16-bit sine wave: audio that is plainly not silence.

    In numpy: a scripted voice makes seconds of it on the event loop (bench/scripted_providers.py)."""
    step = 2 * math.pi * frequency_hz / sample_rate
    samples = np.arange(1, round(duration_s * sample_rate) + 1)
    pcm: bytes = np.round(8000 * np.sin(step * samples)).astype(np.int16).tobytes()
    return pcm


def is_silent(frame: rtc.AudioFrame) -> bool:
    """Whether every sample of `frame` is zero."""
    return not any(frame.data)


class ScriptedAudioInput(io.AudioInput):
    """The caller's microphone: 10 ms frames in real time, a tone during each utterance, silence otherwise.

    Like a live microphone it never ends; the session stops reading it when it closes.
    """

    def __init__(
        self, utterances: Sequence[Utterance] = (), *, sample_rate: int = MICROPHONE_SAMPLE_RATE
    ) -> None:
        super().__init__(label="ScriptedAudioInput")
        self._utterances = tuple(utterances)
        self._sample_rate = sample_rate
        self._frame_samples = sample_rate // 100
        self._voiced = tone(self._frame_samples / sample_rate, sample_rate)
        self._silent = bytes(len(self._voiced))
        self._sent_samples = 0
        self._next_frame_at: float | None = None
        """Loop time at which the next frame is due; set when the session first reads."""

    @property
    def position_s(self) -> float:
        """Seconds of audio handed to the session so far."""
        return self._sent_samples / self._sample_rate

    async def __anext__(self) -> rtc.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._next_frame_at is None:
            self._next_frame_at = loop.time()
        # Due times advance by exactly one frame, so a late wake-up is caught up, never accumulated.
        await asyncio.sleep(max(0.0, self._next_frame_at - loop.time()))
        self._next_frame_at += self._frame_samples / self._sample_rate
        speaking = any(u.start_s <= self.position_s < u.end_s for u in self._utterances)
        self._sent_samples += self._frame_samples
        return rtc.AudioFrame(
            data=self._voiced if speaking else self._silent,
            sample_rate=self._sample_rate,
            num_channels=1,
            samples_per_channel=self._frame_samples,
        )


class ToneVAD(vad.VAD):
    """Hears speech wherever the audio is not silent, with the minimum durations a real VAD applies.

    So START_OF_SPEECH comes `min_speech_s` after an utterance's tone starts and END_OF_SPEECH
    `min_silence_s` after it stops, in seconds of audio; every frame also gets an INFERENCE_DONE.
    """

    def __init__(self, *, min_speech_s: float = 0.03, min_silence_s: float = 0.05) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=0.01))
        self.min_speech_s = min_speech_s
        self.min_silence_s = min_silence_s

    @property
    def model(self) -> str:
        """The model name metrics show."""
        return "tone"

    @property
    def provider(self) -> str:
        """The provider name metrics show."""
        return "tests.fakes"

    def stream(self) -> ToneVADStream:
        """A stream that detects speech in the frames pushed to it."""
        return ToneVADStream(self)


@dataclass
class _SpeechState:
    """What a ToneVADStream has heard since its last segment boundary."""

    position_s: float = 0.0
    samples: int = 0
    speaking: bool = False
    speech_s: float = 0.0
    """Voiced audio in the current (or candidate) speech segment."""
    silence_s: float = 0.0
    """Unvoiced audio since speech was last heard in the current segment."""
    voiced_run_s: float = 0.0
    unvoiced_run_s: float = 0.0
    frames: list[rtc.AudioFrame] = field(default_factory=list)
    """The segment's audio: the voiced frames that opened it, then everything until it ends."""


class ToneVADStream(vad.VADStream):
    """One ToneVAD detection over a stream of frames."""

    def __init__(self, tone_vad: ToneVAD) -> None:
        super().__init__(tone_vad)
        self._tone_vad = tone_vad

    async def _main_task(self) -> None:
        state = _SpeechState()
        async for item in self._input_ch:
            if isinstance(item, vad.VADStream._FlushSentinel):
                # A flush is a hard segment boundary: whatever was heard so far is forgotten.
                state = _SpeechState(position_s=state.position_s, samples=state.samples)
                continue
            self._hear(state, item)

    def _hear(self, state: _SpeechState, frame: rtc.AudioFrame) -> None:
        voiced = not is_silent(frame)
        state.position_s += frame.duration
        state.samples += frame.samples_per_channel
        if voiced:
            state.voiced_run_s += frame.duration
            state.unvoiced_run_s = 0.0
        else:
            state.unvoiced_run_s += frame.duration
            state.voiced_run_s = 0.0

        if not state.speaking:
            if voiced:
                state.speech_s += frame.duration
                state.frames.append(frame)
            else:
                state.speech_s = 0.0
                state.frames.clear()
            if state.speech_s >= self._tone_vad.min_speech_s - 1e-9:
                state.speaking = True
                self._send(vad.VADEventType.START_OF_SPEECH, state)
        else:
            state.frames.append(frame)
            if voiced:
                state.speech_s += frame.duration
                state.silence_s = 0.0
            else:
                state.silence_s += frame.duration
            if state.silence_s >= self._tone_vad.min_silence_s - 1e-9:
                self._send(vad.VADEventType.END_OF_SPEECH, state)
                state.speaking = False
                state.speech_s = state.silence_s = 0.0
                state.frames = []

        self._send(vad.VADEventType.INFERENCE_DONE, state, probability=1.0 if voiced else 0.0)

    def _send(self, kind: vad.VADEventType, state: _SpeechState, *, probability: float = 0.0) -> None:
        inference = kind is vad.VADEventType.INFERENCE_DONE
        self._event_ch.send_nowait(
            vad.VADEvent(
                type=kind,
                samples_index=state.samples,
                timestamp=state.position_s,
                speech_duration=state.speech_s,
                silence_duration=state.silence_s,
                frames=[] if inference else list(state.frames),
                probability=probability,
                speaking=state.speaking,
                raw_accumulated_speech=state.voiced_run_s,
                raw_accumulated_silence=state.unvoiced_run_s,
            )
        )


class ScriptedSTT(stt.STT[Never]):
    """Answers the n-th stretch of speech it is asked to recognise with the n-th utterance's transcript.

    It does not stream: like voicebot's offline STT, livekit-agents feeds it the speech the VAD cut out.
    """

    def __init__(self, utterances: Sequence[Utterance]) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._transcripts = deque(u.transcript for u in utterances)
        self.heard_s: list[float] = []
        """Seconds of audio in each stretch it was asked to recognise, in order."""

    @property
    def model(self) -> str:
        """The model name metrics show."""
        return "script"

    @property
    def provider(self) -> str:
        """The provider name metrics show."""
        return "tests.fakes"

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        self.heard_s.append(utils.merge_frames(buffer).duration)
        # Speech beyond the script is heard as nothing, as a real STT hears a cough.
        transcript = self._transcripts.popleft() if self._transcripts else ""
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language=LanguageCode("en-US"), text=transcript, confidence=1.0)],
        )


class ToneTTS(tts.TTS[Never]):
    """Speaks any text as `audio_s` seconds of tone, and remembers every text it was given."""

    def __init__(self, *, audio_s: float = 0.15, sample_rate: int = SPEAKER_SAMPLE_RATE) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False), sample_rate=sample_rate, num_channels=1
        )
        self.audio_s = audio_s
        self.spoken: list[str] = []
        """Every text it was asked to synthesise, in order."""

    @property
    def model(self) -> str:
        """The model name metrics show."""
        return "tone"

    @property
    def provider(self) -> str:
        """The provider name metrics show."""
        return "tests.fakes"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        """Record `text` and return its tone."""
        self.spoken.append(text)
        return ToneStream(tts=self, input_text=text, conn_options=conn_options)


class ToneStream(tts.ChunkedStream):
    """One ToneTTS synthesis."""

    def __init__(self, *, tts: ToneTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._tone_tts = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=f"tone_{secrets.token_hex(4)}",
            sample_rate=self._tone_tts.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
        )
        output_emitter.push(tone(self._tone_tts.audio_s, self._tone_tts.sample_rate))
        output_emitter.flush()


@dataclass
class _Segment:
    """Audio captured between two flushes, played back to back with the segments before it."""

    starts_at: float
    """Loop time its first frame starts playing."""
    duration_s: float = 0.0
    finished: asyncio.TimerHandle | None = None


class RealTimeAudioOutput(io.AudioOutput):
    """The agent's speaker: plays captured audio in real time, then reports each segment played out.

    A segment is the audio captured between flushes. Playback starts with its first frame; the
    segment finishes when the speaker has had time to play all of it (`playback_finished`, not
    interrupted), or when `clear_buffer` stops it early (interrupted, at the position it reached).
    """

    def __init__(self) -> None:
        super().__init__(label="RealTimeAudioOutput", capabilities=io.AudioOutputCapabilities(pause=False))
        self._capturing: _Segment | None = None
        self._discarding = False
        """Set by clear_buffer while a segment is still being captured: its later frames are dropped."""
        self._queued: list[_Segment] = []
        """Flushed segments that have not finished playing."""
        self._plays_until = 0.0
        """Loop time at which everything captured so far has been played."""
        self.finished: list[io.PlaybackFinishedEvent] = []
        """Every segment's end, in order."""

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        """Queue `frame` behind what is already playing."""
        await super().capture_frame(frame)
        if self._discarding:
            return
        now = asyncio.get_running_loop().time()
        if self._capturing is None:
            self._capturing = _Segment(starts_at=max(now, self._plays_until))
            self.on_playback_started(created_at=time.time() + (self._capturing.starts_at - now))
        self._plays_until = max(self._plays_until, now) + frame.duration
        self._capturing.duration_s += frame.duration

    def flush(self) -> None:
        """End the segment being captured; it finishes when its last frame has played."""
        super().flush()
        segment, self._capturing, self._discarding = self._capturing, None, False
        if segment is None:
            return
        segment.finished = asyncio.get_running_loop().call_at(self._plays_until, self._finish, segment)
        self._queued.append(segment)

    def clear_buffer(self) -> None:
        """Stop playback now: every segment not yet finished ends, interrupted where it got to."""
        now = asyncio.get_running_loop().time()
        stopped = [*self._queued, *([self._capturing] if self._capturing else [])]
        self._queued = []
        if self._capturing is not None:
            self._capturing, self._discarding = None, True
        self._plays_until = now
        for segment in stopped:
            if segment.finished is not None:
                segment.finished.cancel()
            played = min(max(0.0, now - segment.starts_at), segment.duration_s)
            self._report(played, interrupted=True)

    def _finish(self, segment: _Segment) -> None:
        self._queued.remove(segment)
        self._report(segment.duration_s, interrupted=False)

    def _report(self, played_s: float, *, interrupted: bool) -> None:
        self.finished.append(io.PlaybackFinishedEvent(playback_position=played_s, interrupted=interrupted))
        self.on_playback_finished(playback_position=played_s, interrupted=interrupted)
