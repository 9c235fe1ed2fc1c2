"""Credit-risk metrics (AUC, KS, Gini, Brier, log-loss, PSI) and ROC/KS curves, exact and pooled."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from fedrisk.errors import SchemaError

__all__ = [
    "HISTOGRAM_LOGIT_RANGE",
    "KsPoints",
    "RocPoints",
    "auc",
    "auc_from_histograms",
    "brier",
    "gini",
    "histogram_bin_edges",
    "ks",
    "ks_curve",
    "ks_from_histograms",
    "log_loss",
    "psi",
    "roc_curve",
    "score_histograms",
]

FloatArray = npt.NDArray[np.float64]

#: Score histograms are uniform on ``logit(p)`` over this closed range; scores beyond it are
#: clipped into the first/last bin. ±12 covers PDs from 6e-6 to 1 - 6e-6.
HISTOGRAM_LOGIT_RANGE: tuple[float, float] = (-12.0, 12.0)


def _as_scores(values: npt.ArrayLike, *, name: str) -> FloatArray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SchemaError(f"{name} must be numeric; got {type(values).__name__}") from e
    if arr.ndim != 1:
        raise SchemaError(f"{name} must be one-dimensional; got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise SchemaError(
            f"{name} must be finite; got {int(bad.sum())} NaN/inf values (first at index {first})"
        )
    return arr


def _as_labels(y: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise SchemaError(f"y must be one-dimensional; got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr.astype(np.bool_, copy=False)
    try:
        num = arr.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise SchemaError(f"y must contain only 0 and 1; got dtype {arr.dtype}") from e
    is_pos: npt.NDArray[np.bool_] = num == 1.0
    bad = ~(is_pos | (num == 0.0))
    if bad.any():
        examples = np.unique(num[bad])[:5].tolist()
        raise SchemaError(f"y must contain only 0 and 1; got values {examples}")
    return is_pos


def _labels_and_scores(
    y: npt.ArrayLike, s: npt.ArrayLike, *, name: str, need_both: bool
) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    labels = _as_labels(y)
    scores = _as_scores(s, name=name)
    if labels.shape[0] != scores.shape[0]:
        raise SchemaError(
            f"y and {name} must have the same length; got {labels.shape[0]} and {scores.shape[0]}"
        )
    if labels.shape[0] == 0:
        raise SchemaError("y must not be empty; got 0 rows")
    if need_both:
        n_pos = int(labels.sum())
        if n_pos == 0 or n_pos == labels.shape[0]:
            raise SchemaError(
                f"y must contain both classes; got {n_pos} positives out of {labels.shape[0]}"
            )
    return labels, scores


def _as_probabilities(p: npt.ArrayLike, *, name: str = "p") -> FloatArray:
    arr = _as_scores(p, name=name)
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise SchemaError(
            f"{name} must lie in [0, 1]; got range [{arr.min():.6g}, {arr.max():.6g}]"
        )
    return arr


def _tie_grouped_counts(
    labels: npt.NDArray[np.bool_], scores: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Distinct scores (ascending) and the positive and negative counts of each."""
    distinct, inverse = np.unique(scores, return_inverse=True)
    n_groups = distinct.shape[0]
    pos = np.bincount(inverse, weights=labels.astype(np.float64), minlength=n_groups).astype(
        np.float64
    )
    total: FloatArray = np.bincount(inverse, minlength=n_groups).astype(np.float64)
    return distinct, pos, total - pos


def _auc_from_grouped(pos: FloatArray, neg: FloatArray) -> float:
    # Each positive beats every negative in a lower group and half of those in its own group
    # (Mann-Whitney U with ties).
    n_pos = float(pos.sum())
    n_neg = float(neg.sum())
    neg_below = np.cumsum(neg) - neg
    u = float(np.dot(pos, neg_below + 0.5 * neg))
    return u / (n_pos * n_neg)


def _ks_from_grouped(pos: FloatArray, neg: FloatArray) -> float:
    # Thresholds sit between groups; walking from the highest score down gives TPR and FPR
    # of "flag everything at or above this group".
    tpr = np.cumsum(pos[::-1]) / pos.sum()
    fpr = np.cumsum(neg[::-1]) / neg.sum()
    return float(max(0.0, float(np.max(tpr - fpr))))


def auc(y: npt.ArrayLike, s: npt.ArrayLike) -> float:
    """Area under the ROC curve, with ties counted as half (Mann–Whitney U).

    Parameters
    ----------
    y
        Binary labels, 1 = bad.
    s
        Scores, higher = riskier.

    Raises
    ------
    SchemaError
        If lengths differ, ``y`` is not 0/1 with both classes present, or ``s`` is not finite.
    """
    labels, scores = _labels_and_scores(y, s, name="s", need_both=True)
    _, pos, neg = _tie_grouped_counts(labels, scores)
    return _auc_from_grouped(pos, neg)


def ks(y: npt.ArrayLike, s: npt.ArrayLike) -> float:
    """Kolmogorov–Smirnov statistic ``max(TPR - FPR)`` over all score thresholds.

    Higher scores must mean riskier; a score that ranks backwards gives 0, not its mirror.

    Raises
    ------
    SchemaError
        As :func:`auc`.
    """
    labels, scores = _labels_and_scores(y, s, name="s", need_both=True)
    _, pos, neg = _tie_grouped_counts(labels, scores)
    return _ks_from_grouped(pos, neg)


class RocPoints(NamedTuple):
    """An exact ROC curve: one point per distinct score, from (0, 0) to (1, 1)."""

    fpr: FloatArray
    """Share of goods flagged."""
    tpr: FloatArray
    """Share of bads caught."""
    thresholds: FloatArray
    """Flag every score at or above this; descending, ``thresholds[0]`` is ``+inf``."""


class KsPoints(NamedTuple):
    """An exact KS chart: cumulative shares among the riskiest accounts, one point per score."""

    population: FloatArray
    """Share of all accounts flagged (riskiest first)."""
    cum_bad: FloatArray
    """Share of all bads among them (the ROC curve's TPR)."""
    cum_good: FloatArray
    """Share of all goods among them (the ROC curve's FPR)."""
    thresholds: FloatArray
    """As :attr:`RocPoints.thresholds`."""


def _descending_cumulative(
    y: npt.ArrayLike, s: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Bads and goods flagged at each threshold, highest score first, starting from none."""
    labels, scores = _labels_and_scores(y, s, name="s", need_both=True)
    distinct, pos, neg = _tie_grouped_counts(labels, scores)
    # Tied scores share one threshold, so a tie is one step of the curve (no arbitrary order).
    tp = np.r_[0.0, np.cumsum(pos[::-1])]
    fp = np.r_[0.0, np.cumsum(neg[::-1])]
    return tp, fp, np.r_[np.inf, distinct[::-1]]


def roc_curve(y: npt.ArrayLike, s: npt.ArrayLike) -> RocPoints:
    """The exact ROC curve of scores ``s`` (higher = riskier); ties form one step.

    The points are those of ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``; the
    trapezoidal area under them is :func:`auc`.

    Raises
    ------
    SchemaError
        As :func:`auc`.
    """
    tp, fp, thresholds = _descending_cumulative(y, s)
    return RocPoints(fpr=fp / fp[-1], tpr=tp / tp[-1], thresholds=thresholds)


def ks_curve(y: npt.ArrayLike, s: npt.ArrayLike) -> KsPoints:
    """The exact KS chart of scores ``s`` (higher = riskier); ties form one step.

    ``max(cum_bad - cum_good)`` over the points is :func:`ks`.

    Raises
    ------
    SchemaError
        As :func:`auc`.
    """
    tp, fp, thresholds = _descending_cumulative(y, s)
    return KsPoints(
        population=(tp + fp) / (tp[-1] + fp[-1]),
        cum_bad=tp / tp[-1],
        cum_good=fp / fp[-1],
        thresholds=thresholds,
    )


def gini(y: npt.ArrayLike, s: npt.ArrayLike) -> float:
    """Gini coefficient (accuracy ratio) ``2 * AUC - 1``."""
    return 2.0 * auc(y, s) - 1.0


def brier(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Brier score: mean squared difference between predicted PD and the 0/1 outcome.

    Raises
    ------
    SchemaError
        If lengths differ, ``y`` is not 0/1, or ``p`` is not a finite probability.
    """
    labels, _ = _labels_and_scores(y, p, name="p", need_both=False)
    probs = _as_probabilities(p)
    diff = probs - labels
    return float(np.dot(diff, diff) / diff.shape[0])


def log_loss(y: npt.ArrayLike, p: npt.ArrayLike, *, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy, with ``p`` clipped to ``[eps, 1 - eps]`` so it stays finite.

    Raises
    ------
    SchemaError
        As :func:`brier`, or if ``eps`` is not in ``(0, 0.5)``.
    """
    if not 0.0 < eps < 0.5:
        raise SchemaError(f"eps must be in (0, 0.5); got {eps}")
    labels, _ = _labels_and_scores(y, p, name="p", need_both=False)
    probs = np.clip(_as_probabilities(p), eps, 1.0 - eps)
    ll = np.where(labels, np.log(probs), np.log1p(-probs))
    return float(-ll.mean())


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike, *, n_bins: int = 10) -> float:
    """Population stability index of ``actual`` against the ``expected`` (reference) sample.

    Bins are the quantiles of ``expected`` (repeated edges merged, so a discrete score gets
    fewer bins); empty bins are floored at a share of 1e-4 so the index stays finite.
    ``PSI = sum((a - e) * ln(a / e))``; the usual reading is < 0.1 stable, > 0.25 shifted.

    Raises
    ------
    SchemaError
        If either sample is empty or not finite, or ``n_bins < 2``.
    """
    if n_bins < 2:
        raise SchemaError(f"n_bins must be >= 2; got {n_bins}")
    exp = _as_scores(expected, name="expected")
    act = _as_scores(actual, name="actual")
    if exp.size == 0 or act.size == 0:
        raise SchemaError(
            f"expected and actual must be non-empty; got {exp.size} and {act.size} values"
        )
    inner = np.unique(np.quantile(exp, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))
    # side="right": a value equal to an edge belongs to the bin above it, as in np.histogram.
    e_counts = np.bincount(np.searchsorted(inner, exp, side="right"), minlength=inner.size + 1)
    a_counts = np.bincount(np.searchsorted(inner, act, side="right"), minlength=inner.size + 1)
    e_share = np.maximum(e_counts / exp.size, 1e-4)
    a_share = np.maximum(a_counts / act.size, 1e-4)
    return float(np.sum((a_share - e_share) * np.log(a_share / e_share)))


def histogram_bin_edges(n_bins: int = 2000) -> FloatArray:
    """Edges (``n_bins + 1``, on the logit scale) of the bins used by :func:`score_histograms`."""
    lo, hi = HISTOGRAM_LOGIT_RANGE
    return np.linspace(lo, hi, n_bins + 1)


def score_histograms(y: npt.ArrayLike, p: npt.ArrayLike, *, n_bins: int = 2000) -> FloatArray:
    """Count goods and bads per score bin, for federated AUC/KS.

    Bins are uniform on ``logit(p)`` over :data:`HISTOGRAM_LOGIT_RANGE`; scores outside it
    (including p = 0 or 1) fall into the end bins. Histograms from different parties add up
    elementwise to the histogram of their union, so they can be summed under encryption.

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``(2, n_bins)``: row 0 counts y = 0 (good), row 1 y = 1 (bad).

    Raises
    ------
    SchemaError
        If lengths differ, ``y`` is not 0/1, ``p`` is not a finite probability or ``n_bins < 2``.
    """
    if n_bins < 2:
        raise SchemaError(f"n_bins must be >= 2; got {n_bins}")
    labels, _ = _labels_and_scores(y, p, name="p", need_both=False)
    probs = _as_probabilities(p)
    lo, hi = HISTOGRAM_LOGIT_RANGE
    with np.errstate(divide="ignore"):
        z = np.log(probs) - np.log1p(-probs)
    np.clip(z, lo, hi, out=z)
    idx = np.floor((z - lo) * (n_bins / (hi - lo))).astype(np.int64)
    np.clip(idx, 0, n_bins - 1, out=idx)
    pos = np.bincount(idx[labels], minlength=n_bins)
    neg = np.bincount(idx[~labels], minlength=n_bins)
    return np.stack([neg, pos]).astype(np.float64)


def _check_histograms(h: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    arr = np.asarray(h, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != 2 or arr.shape[1] < 1:
        raise SchemaError(f"h must have shape (2, n_bins); got {arr.shape}")
    if not np.isfinite(arr).all():
        raise SchemaError("h must be finite; got NaN/inf counts")
    # Counts decrypted from CKKS carry tiny noise, so a zero may come back as -1e-9.
    if arr.min() < -0.5:
        raise SchemaError(f"h must hold non-negative counts; got minimum {arr.min():.6g}")
    arr = np.maximum(arr, 0.0)
    neg, pos = arr[0], arr[1]
    if pos.sum() < 0.5 or neg.sum() < 0.5:
        raise SchemaError(
            f"h must count both classes; got {neg.sum():.6g} goods and {pos.sum():.6g} bads"
        )
    return pos, neg


def auc_from_histograms(h: npt.ArrayLike) -> float:
    """AUC from (summed) :func:`score_histograms` output; pairs in one bin count as ties.

    Raises
    ------
    SchemaError
        If ``h`` is not a ``(2, n_bins)`` array of counts with both classes present.
    """
    pos, neg = _check_histograms(h)
    return _auc_from_grouped(pos, neg)


def ks_from_histograms(h: npt.ArrayLike) -> float:
    """KS statistic ``max(TPR - FPR)`` from (summed) :func:`score_histograms` output.

    Raises
    ------
    SchemaError
        As :func:`auc_from_histograms`.
    """
    pos, neg = _check_histograms(h)
    return _ks_from_grouped(pos, neg)
