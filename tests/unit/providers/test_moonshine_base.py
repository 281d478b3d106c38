"""`make models` writes Moonshine base as moonshine-cpp ships it, its weights as floats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from voicebot.errors import ModelMissing
from voicebot.providers import moonshine_base
from voicebot.providers.moonshine_stt import model_files


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return moonshine_base.write(tmp_path_factory.mktemp("models"))


def session(model: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])


def outputs(model: onnxruntime.InferenceSession, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    result: list[np.ndarray] = model.run(None, inputs)
    return result


def test_the_files_go_where_the_recogniser_looks_with_moonshines_licence(written: tuple[Path, Path]) -> None:
    models_dir = written[0].parents[1]

    assert written == model_files("base", models_dir)
    assert "MIT License" in (models_dir / "moonshine-base" / "LICENSE").read_text()


def test_the_encoder_and_a_decoding_step_compute_what_the_shipped_files_compute(
    written: tuple[Path, Path],
) -> None:
    encoder, decoder = (session(path) for path in moonshine_base.shipped_files()[:2])
    encoder_written, decoder_written = (session(path) for path in written)
    audio = {"input_values": np.random.default_rng(5).normal(0, 0.1, (1, 16000)).astype(np.float32)}
    (hidden,) = outputs(encoder, audio)
    (hidden_written,) = outputs(encoder_written, audio)
    np.testing.assert_allclose(hidden_written, hidden, atol=1e-4)

    # Empty caches, shaped (batch, heads, positions, head size) as the decoder declares them.
    caches = {
        value.name: np.zeros((1, value.shape[1], 0, value.shape[3]), dtype=np.float32)
        for value in decoder_written.get_inputs()
        if value.name.startswith("past_key_values.")
    }
    step = {
        "input_ids": np.array([[1]], dtype=np.int64),
        "encoder_hidden_states": hidden,
        "use_cache_branch": np.array([False]),
        **caches,
    }
    logits, *_ = outputs(decoder, step)
    logits_written, *_ = outputs(decoder_written, step)
    np.testing.assert_allclose(logits_written, logits, atol=1e-3)
    assert logits_written.argmax() == logits.argmax()


def test_without_moonshine_cpp_installed_it_says_make_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moonshine_base, "PACKAGE", "moonshine_cpp_not_installed")

    with pytest.raises(ModelMissing, match="run `make install`"):
        moonshine_base.shipped_files()
