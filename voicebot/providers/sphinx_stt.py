"""Offline speech-to-text with pocketsphinx, whose wheel ships an English model."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import structlog
from livekit import rtc
from pocketsphinx import Decoder

from voicebot.providers.audio import SAMPLE_RATE, to_16k_mono
from voicebot.providers.offline_stt import OfflineSTT
from voicebot.providers.rules_llm import words

GRAMMAR = "phrases"

log = structlog.get_logger(__name__)


@dataclass
class _Recogniser:
    """One pocketsphinx decoder and the single thread that may touch it (it is not thread-safe)."""

    phrases: tuple[str, ...]
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "sphinx"))
    _decoder: Decoder | None = None

    def decode(self, pcm: bytes) -> tuple[str, float]:
        """Text and confidence for 16 kHz mono PCM; runs on `executor` only."""
        decoder = self._decoder or self._load()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        if hypothesis is None:
            return "", 0.0
        return hypothesis.hypstr, float(hypothesis.prob)

    def _load(self) -> Decoder:
        if self.phrases:
            # Without the general language model a decoder takes ~28 MB instead of ~96 MB.
            decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", lm=None)
            alternatives = " | ".join(f"( {phrase} )" for phrase in self.phrases)
            decoder.add_jsgf_string(
                GRAMMAR, f"#JSGF V1.0;\ngrammar {GRAMMAR};\npublic <utt> = {alternatives};\n"
            )
            decoder.activate_search(GRAMMAR)
        else:
            decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
        self._decoder = decoder
        return decoder


_recognisers: dict[tuple[str, ...], _Recogniser] = {}
_recognisers_lock = threading.Lock()


def _recogniser(phrases: tuple[str, ...]) -> _Recogniser:
    # Sessions of the same agent share one decoder: its model is the memory, not the session.
    with _recognisers_lock:
        if phrases not in _recognisers:
            _recognisers[phrases] = _Recogniser(phrases)
        return _recognisers[phrases]


def _known_words() -> frozenset[str]:
    from pocketsphinx import get_model_path

    dictionary = f"{get_model_path()}/en-us/cmudict-en-us.dict"
    with open(dictionary, encoding="utf-8") as entries:
        return frozenset(line.split(maxsplit=1)[0].split("(")[0] for line in entries if line.strip())


class SphinxSTT(OfflineSTT):
    """Recognises an agent's phrases (a JSGF grammar), or open English when no phrases are given."""

    _dictionary: frozenset[str] | None = None

    def __init__(self, phrases: Sequence[str] = (), language: str = "en-US") -> None:
        super().__init__(language)
        self.phrases = self._usable(phrases)
        self._recogniser = _recogniser(self.phrases)

    @property
    def model(self) -> str:
        """Which model listens: the phrase grammar or the general English model."""
        return "pocketsphinx/grammar" if self.phrases else "pocketsphinx/en-us"

    @property
    def provider(self) -> str:
        """The provider name metrics and logs show."""
        return "pocketsphinx"

    @classmethod
    def _usable(cls, phrases: Sequence[str]) -> tuple[str, ...]:
        if not phrases:
            return ()
        if cls._dictionary is None:
            cls._dictionary = _known_words()
        usable: list[str] = []
        for phrase in phrases:
            kept = [word for word in words(phrase) if word in cls._dictionary]
            if len(kept) < len(words(phrase)):
                unknown = sorted(set(words(phrase)) - set(kept))
                log.warning("stt_words_unknown", phrase=phrase, unknown=unknown)
            if kept and " ".join(kept) not in usable:
                usable.append(" ".join(kept))
        return tuple(usable)

    async def recognise(self, frame: rtc.AudioFrame) -> tuple[str, float, float]:
        """Text, confidence and seconds of audio of one segment, on the decoder's own thread."""
        loop = asyncio.get_running_loop()
        pcm = await loop.run_in_executor(self._recogniser.executor, to_16k_mono, frame)
        text, confidence = await loop.run_in_executor(self._recogniser.executor, self._recogniser.decode, pcm)
        return text, confidence, len(pcm) / 2 / SAMPLE_RATE
