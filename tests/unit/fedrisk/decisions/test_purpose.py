"""The loan-purpose classifier on generated English and Chinese descriptions: held-out accuracy,
unsure texts marked for review, a person's correction moving the next model, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from fedrisk.decisions.purpose import PURPOSES, PurposeClassifier, train_with_corrections
from fedrisk.decisions.purpose_texts import LabelledText, generate_purpose_texts
from fedrisk.errors import DecisionError

TRAIN_SEED, TEST_SEED = 0, 1


def texts(items: list[LabelledText]) -> list[str]:
    return [item.text for item in items]


def labels(items: list[LabelledText]) -> list[str]:
    return [item.label for item in items]


@pytest.fixture(scope="module")
def training() -> list[LabelledText]:
    return generate_purpose_texts(np.random.default_rng(TRAIN_SEED), 2000)


@pytest.fixture(scope="module")
def classifier(training: list[LabelledText]) -> PurposeClassifier:
    return PurposeClassifier().fit(texts(training), labels(training))


@pytest.mark.parametrize("language", ["en", "zh"])
def test_held_out_accuracy_is_at_least_0_9_in_each_language(
    classifier: PurposeClassifier, language: str
) -> None:
    # arrange: other seed, one language
    held_out = generate_purpose_texts(np.random.default_rng(TEST_SEED), 1000, language=language)  # type: ignore[arg-type]

    # act
    accuracy = classifier.accuracy(texts(held_out), labels(held_out))
    predictions = classifier.predict(texts(held_out))
    confident = [
        p.label == x.label for p, x in zip(predictions, held_out, strict=True) if not p.needs_review
    ]

    # assert: good overall, better still where it is sure, and some texts left to people
    assert accuracy >= 0.9
    assert np.mean(confident) > accuracy
    assert 0 < sum(p.needs_review for p in predictions) < len(held_out) // 4


def test_a_correction_changes_the_next_models_answer(
    classifier: PurposeClassifier, training: list[LabelledText]
) -> None:
    # arrange: a text the model is unsure about, and a person's label that differs from its guess
    pool = generate_purpose_texts(np.random.default_rng(5), 400, mix_rate=1.0)
    unsure = [
        x for x, p in zip(pool, classifier.predict(texts(pool)), strict=True) if p.needs_review
    ]
    text = unsure[0].text
    guess = classifier.predict([text])[0].label
    corrected = next(label for label in PURPOSES if label != guess)

    # act: the module's classifier is the same training without the correction
    with_correction = train_with_corrections(
        texts(training), labels(training), corrected_texts=[text], corrected_labels=[corrected]
    )

    # assert
    assert with_correction.predict([text])[0].label == corrected


def test_the_generator_is_reproducible_and_covers_both_languages() -> None:
    # act
    first = generate_purpose_texts(np.random.default_rng(3), 200)
    again = generate_purpose_texts(np.random.default_rng(3), 200)

    # assert
    assert first == again
    assert {x.language for x in first} == {"en", "zh"}
    assert {x.label for x in first} == set(PURPOSES)
    assert any("\u4e00" <= ch <= "\u9fff" for x in first if x.language == "zh" for ch in x.text)


def test_bad_input_is_refused_with_the_reason() -> None:
    # arrange
    model = PurposeClassifier()

    # act / assert
    with pytest.raises(DecisionError, match="labels\\[1\\] must be one of"):
        model.fit(["buy a car", "fix the roof"], ["car", "roof"])
    with pytest.raises(DecisionError, match="must be fitted"):
        model.predict(["buy a car"])
    with pytest.raises(DecisionError, match="n must be at least 1"):
        generate_purpose_texts(np.random.default_rng(0), 0)
    with pytest.raises(DecisionError, match="min_confidence must be in"):
        PurposeClassifier(min_confidence=0.0)
