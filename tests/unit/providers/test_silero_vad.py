"""The batched Silero VAD hears speech where livekit-plugins-silero's does, with its events, in fewer runs."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import vad
from livekit.plugins import silero

from tests.audio import voiced_span
from tests.voice_client import espeak, resample
from voicebot.providers.silero_vad import QUIET_REPORT_S, WINDOW, BatchedSileroVAD

RATE = 16000
FRAME_MS = 20
OPTIONS: dict[str, Any] = {"activation_threshold": 0.5, "min_silence_duration": 0.35}
PROBABILITY_WITHIN = 1e-4


@dataclass(frozen=True)
class Heard:
    """What one stream reported for some audio."""

    events: list[vad.VADEvent]

    @property
    def probabilities(self) -> np.ndarray:
        return np.array([e.probability for e in self.events if e.type is vad.VADEventType.INFERENCE_DONE])

    @property
    def boundaries(self) -> list[tuple[vad.VADEventType, int]]:
        """START_OF_SPEECH and END_OF_SPEECH, with the sample they came at (the model's 16 kHz)."""
        return [
            (e.type, e.samples_index) for e in self.events if e.type is not vad.VADEventType.INFERENCE_DONE
        ]

    def of(self, kind: vad.VADEventType) -> list[vad.VADEvent]:
        return [e for e in self.events if e.type is kind]


@pytest.fixture(scope="module")
async def speech() -> np.ndarray:
    """Two utterances, each between stretches of silence, at 16 kHz."""
    first, rate = await espeak("Hello, I would like a table for two tonight.")
    second, _ = await espeak("Can I leave a message?")
    silence = np.zeros(rate, dtype=np.int16)
    return resample(np.concatenate([silence, first, silence, silence, second, silence]), rate, RATE)


@pytest.fixture
async def batched() -> AsyncIterator[BatchedSileroVAD]:
    # Every window reported, as the plugin does: the reference these tests compare with.
    detector = await asyncio.to_thread(partial(BatchedSileroVAD, every_window=True, **OPTIONS))
    yield detector
    await detector.aclose()


@pytest.fixture(scope="module")
def plugin() -> vad.VAD:
    return silero.VAD.load(**OPTIONS)


def frames(samples: np.ndarray, rate: int = RATE) -> list[rtc.AudioFrame]:
    """20 ms frames, as room audio arrives."""
    size = rate * FRAME_MS // 1000
    return [
        rtc.AudioFrame(samples[i : i + size].tobytes(), rate, 1, size)
        for i in range(0, len(samples) - size + 1, size)
    ]


async def hear(detector: vad.VAD, samples: np.ndarray, rate: int = RATE) -> Heard:
    """All of one stream's events for `samples`, pushed at once."""
    stream = detector.stream()
    for frame in frames(samples, rate):
        stream.push_frame(frame)
    stream.end_input()
    events = [event async for event in stream]
    await stream.aclose()
    return Heard(events)


def assert_same_boundaries(heard: Heard, reference: Heard, *, within_windows: int = 1) -> None:
    assert [kind for kind, _ in heard.boundaries] == [kind for kind, _ in reference.boundaries]
    for (_, at), (_, expected) in zip(heard.boundaries, reference.boundaries, strict=True):
        assert abs(at - expected) <= within_windows * WINDOW


async def test_speech_starts_and_ends_at_the_plugins_windows_with_its_probabilities(
    batched: BatchedSileroVAD, plugin: vad.VAD, speech: np.ndarray
) -> None:
    heard, reference = await hear(batched, speech), await hear(plugin, speech)

    assert len(reference.of(vad.VADEventType.START_OF_SPEECH)) == 2
    assert_same_boundaries(heard, reference)
    assert len(heard.probabilities) == len(reference.probabilities)
    assert np.abs(heard.probabilities - reference.probabilities).max() <= PROBABILITY_WITHIN


async def test_every_event_field_agentsession_reads_matches_the_plugin(
    batched: BatchedSileroVAD, plugin: vad.VAD, speech: np.ndarray
) -> None:
    heard, reference = await hear(batched, speech), await hear(plugin, speech)

    def fields(event: vad.VADEvent) -> tuple[Any, ...]:
        return (
            event.type,
            event.samples_index,
            event.timestamp,
            event.speech_duration,
            event.silence_duration,
            event.speaking,
            event.raw_accumulated_silence,
            event.raw_accumulated_speech,
            [(f.sample_rate, f.samples_per_channel, bytes(f.data)) for f in event.frames],
        )

    assert [fields(e) for e in heard.events] == [fields(e) for e in reference.events]


async def test_end_of_speech_frames_hold_the_utterance_after_its_prefix_padding(
    batched: BatchedSileroVAD, speech: np.ndarray
) -> None:
    heard = await hear(batched, speech)

    ends = heard.of(vad.VADEventType.END_OF_SPEECH)
    assert len(ends) == 2
    first = ends[0].frames[0]
    samples = np.frombuffer(first.data, dtype=np.int16)
    # The speech buffer is the audio that ends at the event's window, from half a second before speech began.
    assert np.array_equal(samples, speech[ends[0].samples_index - len(samples) : ends[0].samples_index])
    in_frames = voiced_span(samples, RATE)
    assert in_frames is not None
    assert in_frames[0] == pytest.approx(0.5, abs=0.1)
    assert ends[0].speech_duration > 1.0


async def test_audio_at_48k_is_resampled_for_the_model_and_kept_at_48k_in_the_events(
    batched: BatchedSileroVAD, plugin: vad.VAD, speech: np.ndarray
) -> None:
    loud = resample(speech, RATE, 48000)

    heard, reference = await hear(batched, loud, 48000), await hear(plugin, loud, 48000)

    assert_same_boundaries(heard, reference)
    # rtc.AudioResampler's QUICK output differs by a few LSB from one resampler to the next, so the plugin
    # does not repeat its own probabilities to 1e-4 at 48 kHz either: only a looser bound holds.
    assert np.abs(heard.probabilities - reference.probabilities).max() < 0.1
    end = heard.of(vad.VADEventType.END_OF_SPEECH)[0].frames[0]
    assert end.sample_rate == 48000
    assert end.duration == pytest.approx(
        reference.of(vad.VADEventType.END_OF_SPEECH)[0].frames[0].duration, abs=2 * WINDOW / RATE
    )


async def test_streams_fed_together_hear_what_each_hears_alone_in_fewer_onnx_calls(
    batched: BatchedSileroVAD, speech: np.ndarray
) -> None:
    # Each stream's speech starts at another moment, so their windows differ while they are judged together.
    clips = [speech[offset:] for offset in (0, 3200, 8000, 17000)]
    alone = [await hear(batched, clip) for clip in clips]
    before = batched.inference_counts.calls, batched.inference_counts.windows

    together = await asyncio.gather(*(hear(batched, clip) for clip in clips))

    calls = batched.inference_counts.calls - before[0]
    windows = batched.inference_counts.windows - before[1]
    assert windows == sum(len(h.probabilities) for h in together)
    assert calls < windows / 2
    for mine, reference in zip(together, alone, strict=True):
        assert mine.boundaries == reference.boundaries
        assert np.abs(mine.probabilities - reference.probabilities).max() <= PROBABILITY_WITHIN


async def test_a_flush_starts_a_fresh_segment(batched: BatchedSileroVAD, speech: np.ndarray) -> None:
    fresh = await hear(batched, speech)
    stream = batched.stream()
    # Half of the first utterance, then a flush: nothing of it may leak into what follows.
    for frame in frames(speech[: 2 * RATE]):
        stream.push_frame(frame)
    stream.flush()
    for frame in frames(speech):
        stream.push_frame(frame)
    stream.end_input()
    events = [event async for event in stream]
    await stream.aclose()

    # The flush restarts the count of samples: the second first window begins what follows it.
    restarts = [i for i, event in enumerate(events) if event.samples_index == WINDOW]
    after_flush = Heard(events[restarts[-1] :])
    assert after_flush.boundaries == fresh.boundaries
    assert np.abs(after_flush.probabilities - fresh.probabilities).max() <= PROBABILITY_WITHIN


async def test_speech_past_max_buffered_speech_is_left_out_of_the_events_as_by_the_plugin(
    speech: np.ndarray,
) -> None:
    options = {**OPTIONS, "max_buffered_speech": 1.0}
    detector = await asyncio.to_thread(partial(BatchedSileroVAD, every_window=True, **options))
    reference = await hear(silero.VAD.load(**options), speech)

    heard = await hear(detector, speech)
    await detector.aclose()

    end = heard.of(vad.VADEventType.END_OF_SPEECH)[0].frames[0]
    assert end.duration == pytest.approx(1.5)
    assert bytes(end.data) == bytes(reference.of(vad.VADEventType.END_OF_SPEECH)[0].frames[0].data)


async def test_aclose_ends_the_worker_thread_and_the_next_window_starts_another(
    batched: BatchedSileroVAD, speech: np.ndarray
) -> None:
    # Other tests' detectors (a factory a test made and never closed) may still have theirs.
    others = {t for t in threading.enumerate() if t.name.startswith("silero-vad")}

    def workers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("silero-vad")} - others

    first = await hear(batched, speech[: 2 * RATE])
    assert workers()

    await batched.aclose()
    for thread in workers():
        await asyncio.to_thread(thread.join, 5)
    assert not workers()

    again = await hear(batched, speech[: 2 * RATE])
    assert again.boundaries == first.boundaries


async def test_a_tick_waits_for_more_windows_only_while_an_open_stream_has_none_in(
    speech: np.ndarray,
) -> None:
    gather_s = 0.2
    detector = await asyncio.to_thread(
        partial(BatchedSileroVAD, gather_s=gather_s, every_window=True, **OPTIONS)
    )
    clip = speech[: 10 * WINDOW]

    # Alone, a stream's every window closes its tick: none waits.
    alone = await hear(detector, clip)
    # Beside a stream that is open but hears nothing, each window waits out the tick for it.
    idle = detector.stream()
    beside = await hear(detector, clip[: 3 * WINDOW])
    await idle.aclose()
    await detector.aclose()

    done = vad.VADEventType.INFERENCE_DONE
    assert max(e.inference_duration for e in alone.of(done)) < gather_s / 2
    assert min(e.inference_duration for e in beside.of(done)) >= gather_s * 0.9


async def test_outside_speech_a_quiet_window_is_reported_after_activity_and_then_once_a_second(
    batched: BatchedSileroVAD, speech: np.ndarray
) -> None:
    every = await hear(batched, speech)
    default = await asyncio.to_thread(partial(BatchedSileroVAD, **OPTIONS))
    thinned = await hear(default, speech)
    await default.aclose()

    def quiet(event: vad.VADEvent) -> bool:
        return not event.speaking and event.raw_accumulated_speech == 0.0

    # Everything AgentSession acts on is there as before: the boundaries, and each window in or near speech.
    assert thinned.boundaries == every.boundaries
    done = vad.VADEventType.INFERENCE_DONE
    loud = [e.samples_index for e in every.of(done) if not quiet(e)]
    assert [e.samples_index for e in thinned.of(done) if not quiet(e)] == loud
    # The caller falling silent is told at once: the first quiet window after a loud one.
    reported = {e.samples_index for e in thinned.of(done)}
    windows = every.of(done)
    fell_silent = [b for a, b in itertools.pairwise(windows) if not quiet(a) and quiet(b)]
    assert fell_silent
    assert all(e.samples_index in reported for e in fell_silent)
    # Then silence is still reported, a second apart.
    sent = thinned.of(done)
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(sent) if quiet(a) and quiet(b)]
    assert gaps
    assert max(gaps) <= QUIET_REPORT_S + WINDOW / 16000 + 1e-9
    assert len([e for e in sent if quiet(e)]) < len([e for e in windows if quiet(e)]) / 4
