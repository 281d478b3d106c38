"""Offline speech-to-text of any English with Moonshine base or tiny (MIT), run by onnxruntime."""

from __future__ import annotations

import asyncio
import importlib.resources
import math
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import structlog
from livekit import rtc
from tokenizers import Tokenizer

from voicebot.errors import ModelMissing
from voicebot.providers.audio import SAMPLE_RATE, to_16k_mono
from voicebot.providers.offline_stt import OfflineSTT
from voicebot.providers.pools import MeasuredPool

DEFAULT_MODEL = "base"
FILES = ("encoder_model.onnx", "decoder_model_merged.onnx")
"""A model's encoder and decoder, under [models] dir in moonshine-<model>/, as `make models` writes them:
tiny's quantized ones unpacked from moonshine-js, base's made from moonshine-cpp (moonshine_base.py)."""
START_TOKEN = 1
END_TOKEN = 2
TOKENS_PER_S = 6.5
"""Tokens a second of English speech takes at most, bar a margin; a decoder that runs past it is looping."""
EXTRA_TOKENS = 10
MIN_AUDIO_S = 0.1
# What counts as voiced in a segment (20 ms windows, RMS of float samples), and how much is kept around it.
VOICED_WINDOW_S = 0.02
VOICED_SHARE_OF_PEAK = 0.05
VOICED_FLOOR = 0.003
KEEP_BEFORE_S = 0.25
KEEP_AFTER_S = 0.2
# Above this probability of ending at the first step, a segment holds no words (noise, a cough, silence).
NO_SPEECH_END_PROBABILITY = 0.95
"""Shorter segments (a click the VAD let through) are no speech; Moonshine takes 0.1 s at the least."""
MAX_CHUNK_S = 30.0
"""Moonshine reads at most 64 s at once; longer segments are recognised in pieces of this length."""
POOL_THREADS = min(2, os.cpu_count() or 1)
"""Recognitions that may run at once, process-wide; each runs its operators on its own thread alone, so
Moonshine never takes more cores than this, whatever the number of sessions."""

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Vocabulary:
    """Words an agent expects to hear, as the tokens that spell them: while decoding, a token that begins one
    of them, or continues the one under way, has its score raised by `bonus` (contextual biasing, as
    Deepgram's keywords do for its recogniser)."""

    continuations: dict[tuple[int, ...], np.ndarray]
    """For each run of tokens that begins a word (the empty run included), the tokens that may come next."""
    bonus: float

    def favoured(self, under_way: tuple[tuple[int, ...], ...]) -> np.ndarray:
        """The tokens that begin a word or go on with one of the runs `under_way`, each once."""
        return np.concatenate([self.continuations[run] for run in {(), *under_way}])

    def after(self, under_way: tuple[tuple[int, ...], ...], token: int) -> tuple[tuple[int, ...], ...]:
        """The runs under way once `token` follows: those it begins or goes on with."""
        grown = ((*run, token) for run in {(), *under_way})
        return tuple(run for run in grown if run in self.continuations)


def vocabulary_of(tokenizer: Tokenizer, words: Iterable[str], bonus: float) -> Vocabulary:
    """The vocabulary of `words`, each as said mid-sentence and as a sentence's first word."""
    nexts: dict[tuple[int, ...], set[int]] = {}
    for word in set(words):
        for variant in {word.lower(), word.capitalize()}:
            ids = tuple(tokenizer.encode(variant, add_special_tokens=False).ids)
            for end in range(len(ids)):
                nexts.setdefault(ids[:end], set()).add(ids[end])
    return Vocabulary({run: np.array(sorted(ids), dtype=np.intp) for run, ids in nexts.items()}, bonus)


def model_files(name: str, models_dir: Path) -> tuple[Path, Path]:
    """Where model `name`'s encoder and decoder are."""
    directory = models_dir / f"moonshine-{name}"
    return directory / FILES[0], directory / FILES[1]


def _session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    # One thread per recognition: the pool bounds how many run at once, and onnxruntime's default (a
    # thread per core, per session) would have concurrent recognitions fight over the same cores.
    # One thread is as fast as two for a recognition alone here: the decoder's operators are small.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    # Weights stay prepacked for the matrix products (onnxruntime's default), though for base, stored as
    # floats, that is a second copy (~120 MB resident): the beam's three readings decoded at once took 38-49
    # ms a step unpacked and 16 prepacked (a single reading 14 and 12).
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class _Moonshine:
    """A Moonshine model's encoder, decoder and tokenizer; several threads may run one onnxruntime session."""

    def __init__(self, name: str, models_dir: Path) -> None:
        files = model_files(name, models_dir)
        tokenizer = Path(str(importlib.resources.files("moonshine_onnx") / "assets" / "tokenizer.json"))
        for path in files:
            if not path.is_file():
                raise ModelMissing(path, "run `make models` (or set [models] dir to where they are)")
        if not tokenizer.is_file():
            raise ModelMissing(tokenizer, "run `make install` (models.lock installs useful-moonshine-onnx)")
        self.name = name
        self._encoder = _session(files[0])
        self._decoder = _session(files[1])
        self._tokenizer = Tokenizer.from_file(str(tokenizer))
        # present.{i}.{decoder,encoder}.{key,value} come back as next step's past_key_values.{i}...
        self._outputs = [output.name for output in self._decoder.get_outputs()]
        self._pasts = [name.replace("present.", "past_key_values.", 1) for name in self._outputs[1:]]
        # ... shaped (batch, heads, positions, head size); the sizes differ between tiny and base.
        cache = next(i for i in self._decoder.get_inputs() if i.name.startswith("past_key_values."))
        self._empty_cache = np.zeros((1, cache.shape[1], 0, cache.shape[3]), dtype=np.float32)
        self._vocabularies: dict[tuple[frozenset[str], float], Vocabulary] = {}
        self._vocabularies_lock = threading.Lock()

    def vocabulary(self, words: Iterable[str], bonus: float) -> Vocabulary:
        """`words` spelled in this model's tokens; every session of an agent gets the same one."""
        key = (frozenset(words), bonus)
        with self._vocabularies_lock:
            if key not in self._vocabularies:
                self._vocabularies[key] = vocabulary_of(self._tokenizer, key[0], bonus)
            return self._vocabularies[key]

    def transcribe(
        self, audio: np.ndarray, vocabulary: Vocabulary | None = None, beam_width: int = 1
    ) -> tuple[str, float]:
        """Text and confidence for 16 kHz mono float32 `audio`, following `beam_width` readings at once;
        blocks for ~25 ms a second of it at width 1 on a finished sentence."""
        size = int(MAX_CHUNK_S * SAMPLE_RATE)
        pieces = (audio[start : start + size] for start in range(0, len(audio), size))
        long_enough = (piece for piece in pieces if len(piece) >= MIN_AUDIO_S * SAMPLE_RATE)
        results = [self._piece(piece, vocabulary, beam_width) for piece in long_enough]
        text = " ".join(text for text, _ in results if text)
        return text, min((confidence for _, confidence in results), default=0.0)

    def _piece(self, audio: np.ndarray, vocabulary: Vocabulary | None, width: int) -> tuple[str, float]:
        """Beam search over the decoder's tokens, `width` hypotheses at a time (1: greedy)."""
        hidden = self._encoder.run(None, {"input_values": audio[None, :]})[0]
        past: dict[str, Any] = dict.fromkeys(self._pasts, self._empty_cache)
        beams = [_Hypothesis()]
        ended: list[_Hypothesis] = []
        bound = math.ceil(len(audio) / SAMPLE_RATE * TOKENS_PER_S) + EXTRA_TOKENS
        for step in range(bound):
            logits, *present = self._decoder.run(
                self._outputs,
                {
                    "input_ids": np.array([[beam.last_token] for beam in beams], dtype=np.int64),
                    "encoder_hidden_states": np.repeat(hidden, len(beams), axis=0),
                    # The first step computes the cross-attention cache from the encoder's output; later
                    # steps reuse it and only grow the decoder's own.
                    "use_cache_branch": np.array([step > 0]),
                    **past,
                },
            )
            scores = logits[:, -1]
            log_probabilities = _log_softmax(scores)
            if step == 0 and math.exp(log_probabilities[0, END_TOKEN]) < NO_SPEECH_END_PROBABILITY:
                # Given a VAD segment with silence around the speech (Silero keeps 0.5 s before it),
                # Moonshine often ends at once: a third of short questions came back empty. Speech it ends
                # on at the first step had that end at 0.9 or less; noise and silence at 0.99 and more.
                scores[:, END_TOKEN] = -np.inf
                log_probabilities = _log_softmax(scores)
            ranked = log_probabilities + np.array([[beam.score] for beam in beams])
            if vocabulary is not None:
                for row, beam in enumerate(beams):
                    # Once per token, even one that starts a word and continues another.
                    ranked[row, vocabulary.favoured(beam.under_way)] += vocabulary.bonus
            beams, rows, just_ended, best_ends = _extend(beams, ranked, log_probabilities, vocabulary, width)
            ended += just_ended
            # A search ends when its best hypothesis does (width 1: greedy), or when width hypotheses have.
            if best_ends or len(ended) >= width or not beams:
                break
            chosen = np.array(rows)
            for name, value in zip(self._pasts, present, strict=True):
                # The cross-attention cache is the same for every hypothesis, made at the first step.
                past[name] = (value if step == 0 or ".decoder." in name else past[name])[chosen]
        else:
            log.info("stt_decoding_cut_short", tokens=bound, audio_s=round(len(audio) / SAMPLE_RATE, 3))
        best = max(ended or beams, key=_per_token)
        text: str = self._tokenizer.decode(list(best.tokens))
        # The geometric mean of the tokens' probabilities as the model alone scored them, the end's included.
        return text.strip(), math.exp(best.log_probability / (len(best.tokens) + 1))


@dataclass(frozen=True)
class _Hypothesis:
    """One way the decoder may go on: its tokens, and the vocabulary's words it has begun and may finish."""

    tokens: tuple[int, ...] = ()
    score: float = 0.0
    """What ranks it: the model's log-probability with the vocabulary's bonuses added."""
    log_probability: float = 0.0
    """The model's alone (its confidence)."""
    under_way: tuple[tuple[int, ...], ...] = ()

    @property
    def last_token(self) -> int:
        return self.tokens[-1] if self.tokens else START_TOKEN


def _extend(
    beams: list[_Hypothesis],
    ranked: np.ndarray,
    log_probabilities: np.ndarray,
    vocabulary: Vocabulary | None,
    width: int,
) -> tuple[list[_Hypothesis], list[int], list[_Hypothesis], bool]:
    """The best `width` hypotheses that go on, the row each grew from, those that end among the best
    candidates, and whether the best candidate of all ends."""
    flat = ranked.ravel()
    # An ending candidate takes no place among those that go on, so 2 x width always leaves enough.
    count = min(2 * width, flat.size)
    best = np.argpartition(-flat, count - 1)[:count]
    best = best[np.argsort(-flat[best])]
    grown: list[_Hypothesis] = []
    rows: list[int] = []
    ended: list[_Hypothesis] = []
    tokens_per_row = ranked.shape[1]
    for index in best:
        if not np.isfinite(flat[index]) or len(rows) == width:
            break
        row, token = divmod(int(index), tokens_per_row)
        beam = beams[row]
        log_probability = beam.log_probability + float(log_probabilities[row, token])
        if token == END_TOKEN:
            ended.append(replace(beam, score=float(flat[index]), log_probability=log_probability))
            continue
        under_way = vocabulary.after(beam.under_way, token) if vocabulary is not None else ()
        grown.append(_Hypothesis((*beam.tokens, token), float(flat[index]), log_probability, under_way))
        rows.append(row)
    return grown, rows, ended, int(best[0]) % tokens_per_row == END_TOKEN


def _per_token(hypothesis: _Hypothesis) -> float:
    """What the search chooses by among finished readings: its score a token, so length is no penalty."""
    return hypothesis.score / (len(hypothesis.tokens) + 1)


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    """Log-probabilities of each row of the decoder's scores."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    result: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return result


_models: dict[tuple[str, Path], _Moonshine] = {}
_models_lock = threading.Lock()
_pool = MeasuredPool(POOL_THREADS, "moonshine")


def _model(name: str, directory: Path) -> _Moonshine:
    # Every session shares one model: it is the memory (tiny ~100 MB resident, ~160 MB once a 10 s segment
    # has grown onnxruntime's arenas; base ~350 MB more, its weights as floats), and a session adds none.
    with _models_lock:
        key = (name, directory.resolve())
        if key not in _models:
            _models[key] = _Moonshine(*key)
        return _models[key]


def _recognise(
    model: _Moonshine, frame: rtc.AudioFrame, vocabulary: Vocabulary | None, beam_width: int
) -> tuple[str, float, float]:
    """Text, confidence and seconds of speech of `frame`; CPU work for the pool's threads."""
    pcm = np.frombuffer(to_16k_mono(frame), dtype=np.int16)
    audio = pcm.astype(np.float32) / 32768.0
    audio_s = len(audio) / SAMPLE_RATE
    if audio_s < MIN_AUDIO_S:
        return "", 0.0, audio_s
    speech = _around_speech(audio)
    if speech is None:
        return "", 0.0, audio_s
    return *model.transcribe(speech, vocabulary, beam_width), audio_s


def _around_speech(audio: np.ndarray) -> np.ndarray | None:
    """`audio` cut to its voiced part and a little silence either side; None if nothing in it is voiced.

    Silero hands over 0.5 s of what came before the speech; Moonshine misheard or dropped words with that
    much silence ahead of them, and heard best with about a quarter of a second.
    """
    window = int(VOICED_WINDOW_S * SAMPLE_RATE)
    usable = len(audio) // window * window
    if usable == 0:
        return None
    levels = np.sqrt(np.mean(audio[:usable].reshape(-1, window) ** 2, axis=1))
    voiced = np.flatnonzero(levels > max(levels.max() * VOICED_SHARE_OF_PEAK, VOICED_FLOOR))
    if voiced.size == 0:
        return None
    start = max(0, voiced[0] * window - int(KEEP_BEFORE_S * SAMPLE_RATE))
    end = min(len(audio), (voiced[-1] + 1) * window + int(KEEP_AFTER_S * SAMPLE_RATE))
    return audio[start:end]


class MoonshineSTT(OfflineSTT):
    """Recognises any English speech, offline. The first one built loads its model: not on the event loop."""

    def __init__(
        self,
        models_dir: Path,
        language: str = "en-US",
        keywords: Iterable[str] = (),
        keyword_boost: float = 0.0,
        model: str = DEFAULT_MODEL,
        beam_width: int = 1,
    ) -> None:
        super().__init__(language)
        self._model = _model(model, models_dir)
        self._beam_width = beam_width
        words = frozenset(keywords)
        favoured = keyword_boost > 0 and bool(words)
        self._vocabulary = self._model.vocabulary(words, keyword_boost) if favoured else None

    @property
    def model(self) -> str:
        """The model that listens."""
        return f"moonshine/{self._model.name}"

    @property
    def provider(self) -> str:
        """The provider name metrics and logs show."""
        return "moonshine"

    async def recognise(self, frame: rtc.AudioFrame) -> tuple[str, float, float]:
        """Text, confidence and seconds of audio of one segment, from the shared pool's threads."""
        return await asyncio.get_running_loop().run_in_executor(
            _pool, _recognise, self._model, frame, self._vocabulary, self._beam_width
        )
