"""Loan purpose from the free-text description: char n-gram TF-IDF and logistic regression.

Character n-grams need no word segmenter, so the same model reads English and Chinese (and the
typos and mixed scripts of real descriptions). Predictions below ``min_confidence`` are meant for
a person to check; the corrected labels go back into the next :meth:`PurposeClassifier.fit` with
a larger sample weight (a human-verified label outweighs a generated or bulk one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Self

import numpy as np
import numpy.typing as npt

from fedrisk.errors import DecisionError

PURPOSES: Final = (
    "car",
    "home_improvement",
    "education",
    "medical",
    "business",
    "debt_consolidation",
    "wedding",
    "travel",
)
"""The loan purposes the classifier knows (the direction analysis's purpose dimension)."""

MAX_TEXT_CHARS: Final = 2000


@dataclass(frozen=True)
class PurposePrediction:
    """The most likely purpose of one text, its probability, and whether a person should check."""

    label: str
    confidence: float
    needs_review: bool


def _check(texts: Sequence[str], labels: Sequence[str] | None = None) -> None:
    problems = [
        f"texts[{i}] must be 1..{MAX_TEXT_CHARS} characters of text; got {t!r:.40}"
        for i, t in enumerate(texts)
        if not isinstance(t, str) or not t.strip() or len(t) > MAX_TEXT_CHARS
    ]
    if labels is not None:
        if len(labels) != len(texts):
            problems.append(f"labels must be one per text; got {len(labels)} for {len(texts)}")
        problems += [
            f"labels[{i}] must be one of {list(PURPOSES)}; got {label!r}"
            for i, label in enumerate(labels)
            if label not in PURPOSES
        ]
    if problems:
        shown = "; ".join(problems[:5])
        raise DecisionError(f"{len(problems)} problem(s) in the purpose texts: {shown}")


class PurposeClassifier:
    """Character n-gram TF-IDF and a multinomial logistic regression (scikit-learn).

    Parameters
    ----------
    ngram_range
        Lengths of the character n-grams (1-3 covers Chinese words and English stems).
    C
        Inverse regularisation strength of the logistic regression.
    min_confidence
        Predictions less probable than this are marked ``needs_review``.

    Attributes
    ----------
    classes_
        The labels seen in training, in the model's column order.
    """

    def __init__(
        self,
        *,
        ngram_range: tuple[int, int] = (1, 3),
        C: float = 10.0,  # noqa: N803 - scikit-learn's name
        min_confidence: float = 0.6,
    ) -> None:
        if not 0.0 < min_confidence <= 1.0:
            raise DecisionError(f"min_confidence must be in (0, 1]; got {min_confidence}")
        self.ngram_range = ngram_range
        self.C = C
        self.min_confidence = min_confidence

    def fit(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        sample_weight: Sequence[float] | None = None,
    ) -> Self:
        """Learn from labelled texts (at least two purposes); returns self."""
        _check(texts, labels)
        if len(set(labels)) < 2:
            raise DecisionError(f"labels must name at least 2 purposes; got {sorted(set(labels))}")
        # imported here: the scoring service reads PURPOSES at start-up and loads scikit-learn
        # only when it trains
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        self.vectorizer_ = TfidfVectorizer(
            analyzer="char", ngram_range=self.ngram_range, sublinear_tf=True, lowercase=True
        )
        features = self.vectorizer_.fit_transform(list(texts))
        # newton-cg converges in a handful of iterations on these small sparse matrices
        # (deterministic, no seed); one BLAS thread, because on a shared 2-core machine BLAS
        # threads fighting over the cores made the same fit 20-50x slower
        self.model_ = LogisticRegression(C=self.C, solver="newton-cg", max_iter=200)
        weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        with threadpool_limits(limits=1):
            self.model_.fit(features, list(labels), sample_weight=weights)
        self.classes_: tuple[str, ...] = tuple(str(c) for c in self.model_.classes_)
        return self

    def predict_proba(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Probability of each purpose (columns in ``classes_`` order) for each text."""
        if not hasattr(self, "model_"):
            raise DecisionError("the purpose classifier must be fitted before it predicts")
        _check(texts)
        features = self.vectorizer_.transform(list(texts))
        return np.asarray(self.model_.predict_proba(features), dtype=np.float64)

    def predict(self, texts: Sequence[str]) -> list[PurposePrediction]:
        """The most likely purpose of each text, with its probability."""
        proba = self.predict_proba(texts)
        best = proba.argmax(axis=1)
        return [
            PurposePrediction(
                label=self.classes_[int(k)],
                confidence=float(proba[i, k]),
                needs_review=float(proba[i, k]) < self.min_confidence,
            )
            for i, k in enumerate(best)
        ]

    def accuracy(self, texts: Sequence[str], labels: Sequence[str]) -> float:
        """Share of ``texts`` whose predicted purpose is the label."""
        _check(texts, labels)
        predicted = self.predict(texts)
        return sum(p.label == y for p, y in zip(predicted, labels, strict=True)) / len(labels)


def train_with_corrections(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    corrected_texts: Sequence[str] = (),
    corrected_labels: Sequence[str] = (),
    correction_weight: float = 5.0,
    classifier: PurposeClassifier | None = None,
) -> PurposeClassifier:
    """Fit ``classifier`` (a default one if None) on the labelled texts plus people's corrections.

    Notes
    -----
    A correction is a label a person checked on a text the model was unsure about; it gets
    ``correction_weight`` times the weight of a bulk example, so one correction moves the next
    model on that kind of text instead of being outvoted by the examples that misled it.
    """
    if correction_weight <= 0:
        raise DecisionError(f"correction_weight must be positive; got {correction_weight}")
    model = classifier or PurposeClassifier()
    weights = [1.0] * len(texts) + [correction_weight] * len(corrected_texts)
    return model.fit(
        [*texts, *corrected_texts], [*labels, *corrected_labels], sample_weight=weights
    )
