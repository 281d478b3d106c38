"""The all-MiniLM-L6-v2 encoder run in numpy: the model's known similarities, and one vector per sentence."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from voicebot.providers.sentence_encoder import (
    DIMENSIONS,
    MODEL_PACKAGE,
    SentenceEncoder,
    model_zip,
    shared_encoder,
)


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return shared_encoder()


def test_it_reproduces_the_similarities_sentence_transformers_publishes_for_the_model(
    encoder: SentenceEncoder,
) -> None:
    # sentence-transformers' README quickstart, all-MiniLM-L6-v2: 0.6660, 0.1046 and 0.1411.
    sentences = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    vectors = encoder.encode(sentences)

    similarities = vectors @ vectors.T

    assert similarities[0, 1] == pytest.approx(0.6660, abs=5e-4)
    assert similarities[0, 2] == pytest.approx(0.1046, abs=5e-4)
    assert similarities[1, 2] == pytest.approx(0.1411, abs=5e-4)


def test_sentences_that_ask_the_same_are_near_and_an_unrelated_one_is_far(encoder: SentenceEncoder) -> None:
    opening, open_, turtles = encoder.encode(["what time do you open", "when are you open", "I like turtles"])

    assert opening @ open_ > 0.75
    assert opening @ turtles < 0.2
    assert open_ @ turtles < 0.2


def test_vectors_are_unit_length_and_a_batch_gives_each_sentence_its_own_vector(
    encoder: SentenceEncoder,
) -> None:
    # Different lengths: the shorter ones are padded in the batch, and padding must change nothing.
    sentences = ["bye", "could you have someone ring me back tomorrow morning please", "where is the office"]

    batch = encoder.encode(sentences)
    single = np.stack([encoder.encode([sentence])[0] for sentence in sentences])

    assert batch.shape == (3, DIMENSIONS)
    assert batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batch, single, atol=1e-5)


def test_nothing_to_encode_gives_no_rows(encoder: SentenceEncoder) -> None:
    assert encoder.encode([]).shape == (0, DIMENSIONS)


async def test_encoding_off_the_loop_gives_the_same_vectors(encoder: SentenceEncoder) -> None:
    np.testing.assert_array_equal(await encoder.encode_async(["bye now"]), encoder.encode(["bye now"]))


def test_the_process_has_one_encoder(encoder: SentenceEncoder) -> None:
    assert shared_encoder() is encoder


def test_the_model_is_found_without_importing_its_package() -> None:
    # Importing all_minilm_l6_v2 prints a line; finding its zip must not.
    assert model_zip().name == "model.zip"
    assert MODEL_PACKAGE not in sys.modules
