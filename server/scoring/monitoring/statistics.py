"""PSI, AUC, KS and the DeLong variance of an AUC, from counts the database aggregated.

The SQL returns one row per distinct score (or PD band) with its count of bads and goods; these
functions finish the computation on those few rows, exactly as scikit-learn would on the loans
themselves (ties count one half).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

PSI_FLOOR = 1e-4
"""Share given to an empty band so the PSI stays finite (the convention of toad/optbinning)."""


def psi_from_shares(expected: Sequence[float], actual: Sequence[float]) -> float:
    """``sum((a - e) * ln(a / e))`` with both shares floored at :data:`PSI_FLOOR`."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def _ordered(
    scores: Sequence[float], bads: Sequence[float], goods: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")
    return (
        np.asarray(bads, dtype=np.float64)[order],
        np.asarray(goods, dtype=np.float64)[order],
    )


def auc_from_groups(
    scores: Sequence[float], bads: Sequence[float], goods: Sequence[float]
) -> float | None:
    """AUC of "a lower score means riskier": P(score of a bad < score of a good), ties 1/2.

    Counts may be fractional (expected bads and goods from PDs: :func:`~server.scoring.
    monitoring.queries.expected_auc`).

    None when either class is absent.
    """
    b, g = _ordered(scores, bads, goods)
    n_bad, n_good = b.sum(), g.sum()
    if n_bad == 0 or n_good == 0:
        return None
    goods_above = n_good - np.cumsum(g)  # goods with a strictly higher score
    return float(np.sum(b * (goods_above + 0.5 * g)) / (n_bad * n_good))


def ks_from_groups(
    scores: Sequence[float], bads: Sequence[int], goods: Sequence[int]
) -> float | None:
    """KS: the largest gap between the cumulative shares of bads and goods, over thresholds."""
    b, g = _ordered(scores, bads, goods)
    n_bad, n_good = b.sum(), g.sum()
    if n_bad == 0 or n_good == 0:
        return None
    return float(np.max(np.abs(np.cumsum(b) / n_bad - np.cumsum(g) / n_good)))


def delong_variance(
    scores: Sequence[float], bads: Sequence[int], goods: Sequence[int]
) -> float | None:
    """DeLong's variance of :func:`auc_from_groups` (structural components, grouped by score).

    Every bad of one score has the same component (the share of goods scored above it, ties
    one half), likewise every good, so the sample variances come from the groups exactly.
    """
    b, g = _ordered(scores, bads, goods)
    n_bad, n_good = b.sum(), g.sum()
    if n_bad < 2 or n_good < 2:
        return None
    v10 = (n_good - np.cumsum(g) + 0.5 * g) / n_good  # per bad: goods above
    v01 = (np.cumsum(b) - 0.5 * b) / n_bad  # per good: bads below
    auc = float(np.sum(b * v10) / n_bad)
    s10 = float(np.sum(b * (v10 - auc) ** 2) / (n_bad - 1))
    s01 = float(np.sum(g * (v01 - auc) ** 2) / (n_good - 1))
    return float(s10 / n_bad + s01 / n_good)


def normal_quantile(confidence: float) -> float:
    """Two-sided standard normal quantile for ``confidence`` (e.g. 1.959964 for 0.95)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, None for an empty denominator."""
    return None if denominator == 0 else numerator / denominator


def finite_or_none(value: float | None) -> float | None:
    """None for a missing or non-finite value (JSON has no NaN)."""
    return None if value is None or not math.isfinite(value) else value
