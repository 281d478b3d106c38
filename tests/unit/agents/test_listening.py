"""A session judges its caller's audio once: its recogniser hears the speech its own VAD stream cut out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import stt, vad
from livekit.agents.metrics import VADMetrics

from tests.fakes import ScriptedSTT, ToneVAD, Utterance
from tests.voice_client import espeak, resample
from voicebot.agents.listening import SessionVAD, session_listening
from voicebot.providers.silero_vad import WINDOW, BatchedSileroVAD

RATE = 16000
FRAME = RATE // 50
SAID = ["hello I would like a table for two", "can I leave a message"]


@pytest.fixture(scope="module")
async def speech() -> np.ndarray:
    """The two sentences, each between a second of silence, at 16 kHz."""
    parts = []
    for sentence in SAID:
        samples, rate = await espeak(sentence)
        parts += [np.zeros(rate, dtype=np.int16), samples]
    return resample(np.concatenate([*parts, np.zeros(rate, dtype=np.int16)]), rate, RATE)


@pytest.fixture
async def shared() -> AsyncIterator[BatchedSileroVAD]:
    detector = await asyncio.to_thread(partial(BatchedSileroVAD, every_window=True))
    yield detector
    await detector.aclose()


def frames(samples: np.ndarray) -> list[rtc.AudioFrame]:
    """20 ms frames, as room audio arrives."""
    return [
        rtc.AudioFrame(samples[i : i + FRAME].tobytes(), RATE, 1, FRAME)
        for i in range(0, len(samples) - FRAME + 1, FRAME)
    ]


class StreamingScript(ScriptedSTT):
    """Says it streams, as Deepgram does."""

    @property
    def capabilities(self) -> stt.STTCapabilities:
        return stt.STTCapabilities(streaming=True, interim_results=False)


def recogniser() -> ScriptedSTT:
    return ScriptedSTT([Utterance(0, 1, text) for text in SAID])


async def listen(
    speech_to_text: stt.STT[Any], voice_activity: vad.VAD, samples: np.ndarray
) -> tuple[list[vad.VADEvent], list[stt.SpeechEvent]]:
    """What AgentSession's audio recognition does with a caller's audio: every frame to the VAD stream and
    to the STT stream; the STT's input ends with the session, after the VAD has heard everything."""
    listening = voice_activity.stream()
    recognising = speech_to_text.stream()
    for frame in frames(samples):
        listening.push_frame(frame)
        recognising.push_frame(frame)
    listening.end_input()
    heard = [event async for event in listening]
    recognising.end_input()
    recognised = [event async for event in recognising]
    await listening.aclose()
    await recognising.aclose()
    return heard, recognised


async def judged(voice_activity: vad.VAD, samples: np.ndarray) -> list[vad.VADEvent]:
    """All of one VAD stream's events for `samples`."""
    stream = voice_activity.stream()
    for frame in frames(samples):
        stream.push_frame(frame)
    stream.end_input()
    events = [event async for event in stream]
    await stream.aclose()
    return events


def of(events: list[vad.VADEvent], kind: vad.VADEventType) -> list[vad.VADEvent]:
    return [event for event in events if event.type is kind]


async def test_a_recogniser_that_does_not_stream_hears_each_utterance_the_sessions_vad_cut_out_judged_once(
    shared: BatchedSileroVAD, speech: np.ndarray
) -> None:
    scripted = recogniser()
    speech_to_text, voice_activity = session_listening(scripted, shared)
    windows_before = shared.inference_counts.windows

    heard, recognised = await listen(speech_to_text, voice_activity, speech)

    judged = shared.inference_counts.windows - windows_before
    assert judged == len(speech) // WINDOW
    ends = of(heard, vad.VADEventType.END_OF_SPEECH)
    assert len(ends) == len(SAID)
    assert scripted.heard_s == pytest.approx([end.frames[0].duration for end in ends])
    assert [event.type for event in recognised] == [
        stt.SpeechEventType.START_OF_SPEECH,
        stt.SpeechEventType.END_OF_SPEECH,
        stt.SpeechEventType.FINAL_TRANSCRIPT,
    ] * len(SAID)
    finals = [e for e in recognised if e.type is stt.SpeechEventType.FINAL_TRANSCRIPT]
    assert [event.alternatives[0].text for event in finals] == SAID


async def test_livekits_own_adapter_on_the_shared_vad_judges_every_window_twice(
    shared: BatchedSileroVAD, speech: np.ndarray
) -> None:
    """What the echo saves: the adapter livekit-agents makes opens a VAD stream of its own."""
    windows_before = shared.inference_counts.windows

    await listen(stt.StreamAdapter(stt=recogniser(), vad=shared), shared, speech)

    assert shared.inference_counts.windows - windows_before == 2 * (len(speech) // WINDOW)


async def test_a_sessions_vad_metrics_reach_that_session_alone(
    shared: BatchedSileroVAD, speech: np.ndarray
) -> None:
    talking, quiet = SessionVAD(shared), SessionVAD(shared)
    metrics: dict[str, list[VADMetrics]] = {"talking": [], "quiet": [], "shared": []}
    talking.on("metrics_collected", metrics["talking"].append)
    quiet.on("metrics_collected", metrics["quiet"].append)
    shared.on("metrics_collected", metrics["shared"].append)

    await judged(talking, speech)

    assert metrics["talking"]
    assert metrics["quiet"] == metrics["shared"] == []


async def test_an_echo_stream_ends_with_its_input_and_hears_no_more(
    shared: BatchedSileroVAD, speech: np.ndarray
) -> None:
    own = SessionVAD(shared)
    echo = own.echo.stream()
    echo.push_frame(frames(speech)[0])
    echo.end_input()

    assert [event async for event in echo] == []
    await echo.aclose()
    assert of(await judged(own, speech), vad.VADEventType.END_OF_SPEECH)
    assert [event async for event in echo] == []


async def test_a_streaming_recogniser_is_left_as_it_is_and_another_vad_is_not_wrapped(
    shared: BatchedSileroVAD,
) -> None:
    streaming = StreamingScript([])
    tone = ToneVAD()

    kept, own = session_listening(streaming, shared)
    assert kept is streaming
    assert isinstance(own, SessionVAD)
    assert own.min_silence_duration == shared.min_silence_duration
    scripted = recogniser()
    assert session_listening(scripted, tone) == (scripted, tone)
