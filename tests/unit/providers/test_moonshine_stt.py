"""Moonshine hears English nobody wrote down in advance, with one model and one bounded pool per process.

Base is the default; tiny (an agent's stt.model "tiny") is lighter and hears less."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import structlog
from livekit import rtc
from livekit.agents.metrics import STTMetrics

from tests.audio import as_vad_segment, greeting_agent
from tests.audio import word_errors as word_distance
from tests.conftest import loop_ticks_while
from tests.voice_client import espeak, resample
from voicebot.agents.pipeline import listened_words
from voicebot.config import DEFAULT_MODELS_DIR
from voicebot.errors import ModelMissing
from voicebot.providers import moonshine_stt
from voicebot.providers.moonshine_stt import MoonshineSTT, Vocabulary

ROOT = Path(__file__).resolve().parents[3]
MODELS = ROOT / DEFAULT_MODELS_DIR
# Sentences no rule, phrase or grammar lists anywhere.
UNLISTED = [
    "when are you open on saturday",
    "I would like to speak to someone about my order",
    "my parcel arrived yesterday but the box was empty",
]


@pytest.fixture(scope="module")
def moonshine() -> MoonshineSTT:
    """One STT for the module; the model it loads is the process's, so later ones load nothing."""
    return MoonshineSTT(MODELS)


@pytest.fixture(scope="module")
def tiny() -> MoonshineSTT:
    return MoonshineSTT(MODELS, model="tiny")


def normalised(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def word_errors(said: str, heard: str) -> int:
    """Words substituted, dropped or added between `said` and `heard`, case and punctuation aside."""
    return word_distance(normalised(said), normalised(heard))


async def speech(text: str, *, sample_rate: int = 16000) -> rtc.AudioFrame:
    """espeak-ng saying `text`, at the model's 16 kHz unless asked otherwise.

    LiveKit's resampler dithers its int16 output (+-2 on ~44% of samples, new on each call), enough to flip a
    word tiny is unsure of between runs; resampled here, the model gets the same audio every run."""
    samples, rate = await espeak(text)
    samples = resample(samples, rate, sample_rate)
    return rtc.AudioFrame(samples.tobytes(), sample_rate, 1, len(samples))


async def hear(stt: MoonshineSTT, frame: rtc.AudioFrame) -> str:
    event = await stt.recognize(frame)
    return event.alternatives[0].text


@pytest.mark.parametrize("sentence", UNLISTED)
@pytest.mark.parametrize("size", ["base", "tiny"])
async def test_sentences_no_rule_lists_are_recognised_word_for_word(
    moonshine: MoonshineSTT, tiny: MoonshineSTT, size: str, sentence: str
) -> None:
    heard = await hear(moonshine if size == "base" else tiny, await speech(sentence))

    assert word_errors(sentence, heard) <= 1, heard


# Said by espeak-ng at 16 kHz, tiny hears "When does the office open it stores?", "Please put me through to
# the building department." and "This is the office open tomorrow."; resampled linearly or through the
# spectrum, both models hear the same. Dithered by LiveKit's resampler, tiny heard the first right in one run.
TINY_MISHEARS = [
    "when does the office open its doors",
    "please put me through to the billing department",
    "is the office open tomorrow",
]


@pytest.mark.parametrize("sentence", TINY_MISHEARS)
async def test_base_hears_word_for_word_what_tiny_mishears(
    moonshine: MoonshineSTT, tiny: MoonshineSTT, sentence: str
) -> None:
    frame = await speech(sentence)

    by_base, by_tiny = await hear(moonshine, frame), await hear(tiny, frame)

    assert word_errors(sentence, by_tiny) >= 1, by_tiny
    assert word_errors(sentence, by_base) == 0, by_base


async def test_audio_at_the_rooms_48k_rate_is_resampled(moonshine: MoonshineSTT) -> None:
    heard = await hear(moonshine, await speech(UNLISTED[1], sample_rate=48000))

    assert word_errors(UNLISTED[1], heard) <= 1, heard


async def test_silence_gives_no_text(moonshine: MoonshineSTT) -> None:
    silence = np.zeros(16000, dtype=np.int16)

    assert await hear(moonshine, rtc.AudioFrame(silence.tobytes(), 16000, 1, len(silence))) == ""


async def test_a_segment_under_a_tenth_of_a_second_gives_no_text_without_running_the_model(
    moonshine: MoonshineSTT, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_run(audio: np.ndarray) -> tuple[str, float]:
        raise AssertionError("the model ran on a click")

    monkeypatch.setattr(moonshine._model, "transcribe", not_run)
    click = (np.random.default_rng(0).standard_normal(4000) * 8000).astype(np.int16)

    assert await hear(moonshine, rtc.AudioFrame(click.tobytes(), 48000, 1, len(click))) == ""


async def test_a_recognition_reports_moonshine_and_the_speech_it_heard(moonshine: MoonshineSTT) -> None:
    collected: list[STTMetrics] = []
    moonshine.on("metrics_collected", collected.append)
    frame = await speech(UNLISTED[0])

    event = await moonshine.recognize(frame)

    assert event.alternatives[0].language == "en-US"
    assert 0 < event.alternatives[0].confidence <= 1
    (metrics,) = collected
    assert metrics.metadata is not None
    assert (metrics.metadata.model_provider, metrics.metadata.model_name) == ("moonshine", "moonshine/base")
    assert metrics.audio_duration == pytest.approx(frame.duration)


def test_every_session_shares_the_one_model(moonshine: MoonshineSTT, tiny: MoonshineSTT) -> None:
    relative = MODELS.relative_to(Path.cwd()) if MODELS.is_relative_to(Path.cwd()) else MODELS

    assert MoonshineSTT(MODELS)._model is moonshine._model
    assert MoonshineSTT(relative, language="en-GB", model="base")._model is moonshine._model
    assert MoonshineSTT(MODELS, model="tiny")._model is tiny._model is not moonshine._model
    assert tiny.model == "moonshine/tiny"
    assert MoonshineSTT(MODELS, beam_width=1)._model is moonshine._model


@pytest.mark.parametrize("size", ["base", "tiny"])
def test_missing_models_name_the_file_and_make_models(tmp_path: Path, size: str) -> None:
    with pytest.raises(ModelMissing) as error:
        MoonshineSTT(tmp_path / "nowhere", model=size)

    message = str(error.value)
    assert str(tmp_path / "nowhere" / f"moonshine-{size}" / "encoder_model.onnx") in message
    assert "run `make models`" in message


@pytest.fixture
def concurrency(moonshine: MoonshineSTT, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The most recognitions that ran at once while the test ran (one number, in a list)."""
    transcribe = moonshine._model.transcribe
    running, most = 0, [0]
    lock = threading.Lock()

    def counted(
        audio: np.ndarray, vocabulary: Vocabulary | None = None, beam_width: int = 1
    ) -> tuple[str, float]:
        nonlocal running
        with lock:
            running += 1
            most[0] = max(most[0], running)
        try:
            return transcribe(audio, vocabulary, beam_width)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(moonshine._model, "transcribe", counted)
    return most


async def test_concurrent_sessions_all_get_their_text_through_the_bounded_pool(
    moonshine: MoonshineSTT, concurrency: list[int]
) -> None:
    sessions = [MoonshineSTT(MODELS) for _ in range(6)]
    frames = [await speech(UNLISTED[i % len(UNLISTED)]) for i in range(len(sessions))]

    heard = await asyncio.gather(*(hear(stt, frame) for stt, frame in zip(sessions, frames, strict=True)))

    for i, text in enumerate(heard):
        assert word_errors(UNLISTED[i % len(UNLISTED)], text) <= 1, text
    assert 1 <= concurrency[0] <= moonshine_stt.POOL_THREADS


async def test_recognition_leaves_the_event_loop_free(moonshine: MoonshineSTT) -> None:
    frame = await speech(" ".join(UNLISTED))

    # A recognition on the loop would run start to finish between two ticks.
    assert await loop_ticks_while(moonshine.recognize(frame)) > 50


class LoopingDecoder:
    """A decoder that never says it is done, as Moonshine's can on noise: the same token, step after step."""

    def __init__(self, outputs: list[str]) -> None:
        self.outputs = outputs
        self.steps = 0

    def run(self, names: list[str], inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.steps += 1
        logits = np.zeros((1, 1, 32768), dtype=np.float32)
        logits[0, 0, 500] = 10.0
        return [logits, *(np.zeros((1, 8, 1, 36), dtype=np.float32) for _ in names[1:])]


async def test_a_decoder_that_never_ends_is_stopped_after_the_tokens_the_audio_can_hold(
    moonshine: MoonshineSTT, monkeypatch: pytest.MonkeyPatch
) -> None:
    looping = LoopingDecoder(moonshine._model._outputs)
    monkeypatch.setattr(moonshine._model, "_decoder", looping)

    frame = await speech(UNLISTED[0])
    with structlog.testing.capture_logs() as logs:
        await hear(moonshine, frame)

    assert [e["event"] for e in logs if e["log_level"] == "info"] == ["stt_decoding_cut_short"]
    bound = frame.duration * moonshine_stt.TOKENS_PER_S + moonshine_stt.EXTRA_TOKENS
    assert bound - 1 <= looping.steps <= bound + 1


@pytest.mark.parametrize("question", ["are you open right now", "can I leave my number", "bye bye"])
async def test_a_short_question_with_the_vads_half_second_of_silence_before_it_is_heard(
    moonshine: MoonshineSTT, question: str
) -> None:
    """Regression: with Silero's 0.5 s of lead-in, Moonshine ended at its first step and a third of short
    questions came back empty (bench/offline_quality.py)."""
    samples, rate = await espeak(question)
    hiss = np.random.default_rng(7).normal(0, 30, rate // 2).astype(np.int16)
    segment = np.concatenate([hiss, samples, hiss[: rate // 5]])

    heard = await hear(moonshine, rtc.AudioFrame(segment.tobytes(), rate, 1, len(segment)))

    assert word_errors(question, heard) <= 1, heard


@pytest.mark.parametrize("level", [30, 300, 1000])
async def test_noise_without_words_gives_no_text(moonshine: MoonshineSTT, level: int) -> None:
    noise = np.random.default_rng(level).normal(0, level, 24000).astype(np.int16)

    assert await hear(moonshine, rtc.AudioFrame(noise.tobytes(), 16000, 1, len(noise))) == ""


# Said by espeak-ng with the VAD's half second of silence either side, Moonshine tiny alone hears "the
# ruffus", "the wife I offer", "a moist assistant" and "Flora, um"; listening for the agent's words sets them
# right. Alone, tiny is at the edge on some of them: run with this module's other tests it heard "voice"
# right in one run of six, where a process of its own heard "moist" every time.
MISHEARD_ALONE = [
    ("agent-123", "is the office open on monday", "office"),
    ("faq", "can it work with the wifi off", "wifi"),
    ("faq", "is this a voice assistant", "voice"),
    ("agent-123", "which floor are you on", "floor"),
]


async def test_a_word_of_the_agents_rules_is_heard_where_the_model_alone_mishears_it(
    tiny: MoonshineSTT,
) -> None:
    misheard_alone = []
    for agent_id, sentence, word in MISHEARD_ALONE:
        agent = greeting_agent(agent_id)
        boost = agent.stt.keyword_boost
        listening = MoonshineSTT(MODELS, keywords=listened_words(agent), keyword_boost=boost, model="tiny")
        # At 16 kHz already, so nothing dithers it: "office" sits between a boost of 1.5 and 1.75 on tiny, and
        # a dithered copy of this sentence was heard as "ruffus" even when favoured, in one run of the suite.
        samples, rate = await espeak(sentence)
        frame = as_vad_segment(resample(samples, rate, 16000), 16000)

        alone, favoured = await hear(tiny, frame), await hear(listening, frame)

        assert word_errors(sentence, favoured) == 0, favoured
        if word not in normalised(alone):
            misheard_alone.append(alone)
    assert len(misheard_alone) >= len(MISHEARD_ALONE) - 1, misheard_alone


@pytest.mark.parametrize("sentence", UNLISTED)
@pytest.mark.parametrize("size", ["base", "tiny"])
async def test_listening_for_the_agents_words_costs_what_no_rule_says_a_word_at_most(
    size: str, sentence: str
) -> None:
    """Base alone hears "my potter's arrived yesterday"; listening for agent-123's words, "my potter's all
    arrived yesterday"."""
    agent = greeting_agent("agent-123")
    alone = MoonshineSTT(MODELS, model=size)
    boost = agent.stt.keyword_boost
    listening = MoonshineSTT(MODELS, keywords=listened_words(agent), keyword_boost=boost, model=size)
    frame = await speech(sentence)

    heard_alone, heard_listening = await hear(alone, frame), await hear(listening, frame)

    assert word_errors(sentence, heard_alone) <= 1, heard_alone
    assert word_errors(sentence, heard_listening) <= word_errors(sentence, heard_alone) + 1, heard_listening


def test_the_vocabulary_spells_each_word_in_the_models_tokens_at_a_sentences_start_and_within_it(
    moonshine: MoonshineSTT,
) -> None:
    tokenizer = moonshine._model._tokenizer
    vocabulary = moonshine_stt.vocabulary_of(tokenizer, ["voicebot"], bonus=2.0)

    for variant in ("voicebot", "Voicebot"):
        ids = tokenizer.encode(variant, add_special_tokens=False).ids
        assert len(ids) > 1, "a word of several tokens shows the runs"
        for end, token in enumerate(ids):
            assert token in vocabulary.continuations[tuple(ids[:end])]
        assert tokenizer.decode(ids) == variant
    assert len(vocabulary.continuations[()]) == 2


def test_sessions_of_one_agent_share_its_vocabulary_and_no_boost_favours_nothing() -> None:
    words = {"office", "wifi"}

    first = MoonshineSTT(MODELS, keywords=words, keyword_boost=2.0)
    second = MoonshineSTT(MODELS, keywords=iter(sorted(words)), keyword_boost=2.0)

    assert first._vocabulary is not None
    assert first._vocabulary is second._vocabulary
    assert MoonshineSTT(MODELS, keywords=words, keyword_boost=0.0)._vocabulary is None
    assert MoonshineSTT(MODELS, keyword_boost=2.0)._vocabulary is None


# Heard by base listening for the agent's words (boost 2) one token at a time: "can you see a sound", "I'd
# like a beater", "the network network is terrible", "are you open on bank Harley-based", "can you ask for a
# return, my call". A beam of three keeps the readings that start less likely and end more so.
MISHEARD_GREEDILY = [
    ("faq", "can you sing a song"),
    ("faq", "I'd like a pizza"),
    ("faq", "the network at work is terrible"),
    ("agent-123", "are you open on bank holidays"),
    ("agent-123", "can you ask her to return my call"),
]


async def test_a_beam_of_readings_hears_word_for_word_what_one_reading_at_a_time_mishears() -> None:
    greedy_errors, beam_errors = [], []
    for agent_id, sentence in MISHEARD_GREEDILY:
        agent = greeting_agent(agent_id)
        words, boost = listened_words(agent), agent.stt.keyword_boost
        greedy = MoonshineSTT(MODELS, keywords=words, keyword_boost=boost)
        beam = MoonshineSTT(MODELS, keywords=words, keyword_boost=boost, beam_width=3)
        samples, rate = await espeak(sentence)
        frame = as_vad_segment(resample(samples, rate, 16000), 16000)

        greedy_errors.append(word_errors(sentence, await hear(greedy, frame)))
        beam_errors.append(word_errors(sentence, await hear(beam, frame)))

    assert sum(errors > 0 for errors in greedy_errors) >= 4, greedy_errors
    assert sum(errors == 0 for errors in beam_errors) >= 4, beam_errors
    assert sum(beam_errors) < sum(greedy_errors)
