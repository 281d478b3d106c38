"""all-MiniLM-L6-v2 sentence embeddings, its BERT forward pass run in numpy."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load as load_safetensors
from threadpoolctl import threadpool_limits
from tokenizers import Tokenizer

from voicebot.providers.pools import MeasuredPool

MODEL_PACKAGE = "all_minilm_l6_v2"
DIMENSIONS = 384
# sentence-transformers' max_seq_length for this model (sentence_bert_config.json); the tokenizer.json in the
# zip says 128 and pads every input to it, which is six times the work for a spoken sentence.
MAX_TOKENS = 256

Vectors = npt.NDArray[np.float32]

# One thread for every session's encodings: a sentence takes ~4 ms, and they queue behind each other rather
# than take more of the cores from the sessions' audio work (numpy's BLAS already spreads one matmul).
_executor = MeasuredPool(1, "sentence-encoder")


class EncoderUnavailableError(RuntimeError):
    """The MiniLM model package is not installed (`make models` installs it)."""


def model_zip() -> Path:
    """Where the installed model package keeps model.zip."""
    # The package's __init__ prints a line when imported, so it is located without importing it.
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderUnavailableError(f"{MODEL_PACKAGE} is not installed; `make models` installs it")
    path = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not path.is_file():
        raise EncoderUnavailableError(f"{path} is missing")
    return path


@dataclass(frozen=True)
class _Layer:
    """One transformer layer's weights, matrices transposed once so a forward pass is `x @ w + b`."""

    qkv: Vectors  # (384, 1152): query, key and value projections side by side, one matmul for all three
    qkv_bias: Vectors
    attention_out: Vectors
    attention_out_bias: Vectors
    attention_norm: tuple[Vectors, Vectors]
    intermediate: Vectors
    intermediate_bias: Vectors
    output: Vectors
    output_bias: Vectors
    output_norm: tuple[Vectors, Vectors]


class SentenceEncoder:
    """Maps sentences to unit vectors whose dot product says how alike their meanings are."""

    def __init__(
        self, weights: dict[str, npt.NDArray[Any]], tokenizer: Tokenizer, config: dict[str, Any]
    ) -> None:
        self._tokenizer = tokenizer
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._heads = int(config["num_attention_heads"])
        self._eps = float(config["layer_norm_eps"])

        def weight(name: str) -> Vectors:
            return np.ascontiguousarray(weights[name], dtype=np.float32)

        def norm(prefix: str) -> tuple[Vectors, Vectors]:
            return weight(f"{prefix}.LayerNorm.weight"), weight(f"{prefix}.LayerNorm.bias")

        self._word = weight("embeddings.word_embeddings.weight")
        self._position = weight("embeddings.position_embeddings.weight")
        # Single sentences: every token is of type 0.
        self._token_type = weight("embeddings.token_type_embeddings.weight")[0]
        self._embedding_norm = norm("embeddings")
        self._layers = []
        for index in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{index}"
            projections = [f"{p}.attention.self.{name}" for name in ("query", "key", "value")]
            self._layers.append(
                _Layer(
                    qkv=np.ascontiguousarray(np.concatenate([weight(f"{n}.weight") for n in projections]).T),
                    qkv_bias=np.concatenate([weight(f"{n}.bias") for n in projections]),
                    attention_out=np.ascontiguousarray(weight(f"{p}.attention.output.dense.weight").T),
                    attention_out_bias=weight(f"{p}.attention.output.dense.bias"),
                    attention_norm=norm(f"{p}.attention.output"),
                    intermediate=np.ascontiguousarray(weight(f"{p}.intermediate.dense.weight").T),
                    intermediate_bias=weight(f"{p}.intermediate.dense.bias"),
                    output=np.ascontiguousarray(weight(f"{p}.output.dense.weight").T),
                    output_bias=weight(f"{p}.output.dense.bias"),
                    output_norm=norm(f"{p}.output"),
                )
            )

    @classmethod
    def load(cls, path: Path | None = None) -> SentenceEncoder:
        """The encoder from the model package's zip, read in place (nothing is extracted)."""
        with zipfile.ZipFile(path or model_zip()) as archive:
            weights = load_safetensors(archive.read("model.safetensors"))
            tokenizer = Tokenizer.from_str(archive.read("tokenizer.json").decode())
            config = json.loads(archive.read("config.json"))
            pooling = json.loads(archive.read("1_Pooling/config.json"))
        if not pooling.get("pooling_mode_mean_tokens"):
            raise EncoderUnavailableError("the model's pooling is not the mean of its tokens")
        return cls(weights, tokenizer, config)

    def encode(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised 384-dimensional row per text (CPU work: keep it off the event loop)."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        length = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), length), dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1.0
        hidden = self._forward(ids, mask)
        # Mean pooling over the real tokens, then unit length: sentence-transformers' Pooling and Normalize.
        summed = np.einsum("btd,bt->bd", hidden, mask)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit: Vectors = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit

    async def encode_async(self, texts: Sequence[str]) -> Vectors:
        """`encode` on the encoders' own thread, for callers on the event loop."""
        return await asyncio.get_running_loop().run_in_executor(_executor, self.encode, texts)

    def _forward(self, ids: npt.NDArray[np.int64], mask: Vectors) -> Vectors:
        batch, length = ids.shape
        x = self._word[ids] + self._position[:length] + self._token_type
        x = _layer_norm(x, *self._embedding_norm, self._eps)
        heads, width = self._heads, DIMENSIONS // self._heads
        # Padding is never attended to: a large negative score before the softmax.
        attention_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(width))
        for layer in self._layers:
            qkv = x @ layer.qkv + layer.qkv_bias
            # (batch, length, 3, heads, width) -> three of (batch, heads, length, width)
            q, k, v = qkv.reshape(batch, length, 3, heads, width).transpose(2, 0, 3, 1, 4)
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + attention_bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, DIMENSIONS)
            attended = context @ layer.attention_out + layer.attention_out_bias
            x = _layer_norm(x + attended, *layer.attention_norm, self._eps)
            inner = _gelu(x @ layer.intermediate + layer.intermediate_bias)
            x = _layer_norm(x + inner @ layer.output + layer.output_bias, *layer.output_norm, self._eps)
        return x


def _layer_norm(x: Vectors, weight: Vectors, bias: Vectors, eps: float) -> Vectors:
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    normed: Vectors = (x - mean) / np.sqrt(variance + np.float32(eps)) * weight + bias
    return normed


def _gelu(x: Vectors) -> Vectors:
    """BERT's exact GELU, x * Phi(x), with erf from Abramowitz and Stegun 7.1.26 (error below 1.5e-7)."""
    # numpy has no erf, and the tanh approximation BERT was not trained with moves the vectors by ~1e-3.
    z = np.abs(x) * np.float32(1 / np.sqrt(2))
    t = 1 / (1 + np.float32(0.3275911) * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1 - poly.astype(np.float32) * np.exp(-z * z))
    result: Vectors = 0.5 * x * (1 + erf)
    return result


_shared: SentenceEncoder | None = None
_shared_lock = threading.Lock()


def shared_encoder() -> SentenceEncoder:
    """The process's one encoder, loaded on first use (~90 MB of weights; blocks: call it off the loop)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            # The encoder's matrix products are small (a sentence is ~10 tokens) and sessions already run in
            # parallel on their own threads; OpenBLAS's default, a spinning thread per core for every
            # product, made two workers loading at once take over a minute on two cores instead of seconds.
            # Process-wide and lasting: nothing else in voicebot wants more.
            threadpool_limits(limits=1, user_api="blas")
            _shared = SentenceEncoder.load()
        return _shared
