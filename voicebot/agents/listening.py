"""A session's listening: one VAD stream, whose speech boundaries also cut the utterances for its recogniser.

livekit-agents gives a recogniser that does not stream (Moonshine, pocketsphinx) a StreamAdapter, and the
adapter opens a VAD stream of its own on the same audio the session's VAD stream already judges: every 32 ms
window judged twice. Here the adapter's VAD is an echo of the session's stream instead: the same
START_OF_SPEECH and END_OF_SPEECH events (with the speech in them), judged once.
"""

from __future__ import annotations

from typing import Any

from livekit import rtc
from livekit.agents import stt, vad

from voicebot.providers.silero_vad import BatchedSileroVAD


class _OnSharedVAD(vad.VAD):
    """A VAD named and timed as the process's shared one, for metrics and AgentSession's checks."""

    def __init__(self, shared: BatchedSileroVAD) -> None:
        super().__init__(capabilities=shared.capabilities)
        self._shared = shared

    @property
    def model(self) -> str:
        """The shared VAD's model name, for metrics."""
        return self._shared.model

    @property
    def provider(self) -> str:
        """The shared VAD's provider, for metrics."""
        return self._shared.provider


class SessionVAD(_OnSharedVAD):
    """One session's VAD on the process's shared batched Silero.

    Its metrics are this session's alone: on the shared VAD, every session's AgentSession heard every
    session's metrics. The speech boundaries its streams find are echoed to `echo`'s streams.
    """

    def __init__(self, shared: BatchedSileroVAD) -> None:
        super().__init__(shared)
        self._echoes: set[EchoStream] = set()
        self.echo = EchoVAD(self._echoes, shared)
        """The VAD whose streams hear this one's speech boundaries instead of judging audio themselves."""

    @property
    def min_silence_duration(self) -> float:
        """Silence that ends speech; AgentSession checks it against its turn detector's needs."""
        return self._shared.min_silence_duration

    def stream(self) -> vad.VADStream:
        """A stream on the shared batcher whose speech boundaries every open echo stream hears too."""
        return self._shared.stream(owner=self, on_boundary=self._tell_echoes)

    def _tell_echoes(self, event: vad.VADEvent) -> None:
        for echo in self._echoes:
            echo.hear(event)


class EchoVAD(_OnSharedVAD):
    """A VAD that judges nothing: its streams repeat the speech boundaries of a session's own VAD stream."""

    def __init__(self, listeners: set[EchoStream], shared: BatchedSileroVAD) -> None:
        super().__init__(shared)
        self._listeners = listeners

    def stream(self) -> EchoStream:
        """A stream of the session's speech boundaries from now until its input ends."""
        return EchoStream(self, self._listeners)


class EchoStream(vad.VADStream):
    """The session's speech boundaries, for as long as its input is open; pushed frames are not judged."""

    def __init__(self, echo_vad: EchoVAD, listeners: set[EchoStream]) -> None:
        super().__init__(echo_vad)
        self._listeners = listeners
        listeners.add(self)

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        """Accepted and dropped: the session's own stream is judging the same frame."""
        self._check_input_not_ended()
        self._check_not_closed()

    def hear(self, event: vad.VADEvent) -> None:
        """Pass on a boundary the session's stream found."""
        if not self._event_ch.closed:
            self._event_ch.send_nowait(event)

    async def _main_task(self) -> None:
        try:
            # Only flushes arrive here, and then the end of the input, which ends this stream.
            async for _ in self._input_ch:
                pass
        finally:
            self._listeners.discard(self)


def session_listening(speech_to_text: stt.STT[Any], voice_activity: vad.VAD) -> tuple[stt.STT[Any], vad.VAD]:
    """The STT and VAD one AgentSession gets: a session's own VAD on the shared one, echoed to the STT's
    adapter when the STT does not stream; any other VAD as it is."""
    if not isinstance(voice_activity, BatchedSileroVAD):
        return speech_to_text, voice_activity
    own = SessionVAD(voice_activity)
    if speech_to_text.capabilities.streaming:
        return speech_to_text, own
    return stt.StreamAdapter(stt=speech_to_text, vad=own.echo), own
