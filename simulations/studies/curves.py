"""Plot data a study stores per model: ROC and KS curves on fixed grids, scorecard histograms.

The curves themselves come from :mod:`fedrisk.ml.metrics` (exact, one point per distinct
score); here they are only sampled onto a fixed grid, so every cell stores the same small
number of points and no raw score.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from fedrisk.decisions.scorecard import ScorecardScaling
from fedrisk.ml import metrics
from simulations.studies.results import (
    KsCurve,
    ModelCurves,
    RocCurve,
    ScoreHistogram,
    rounded,
    rounded_all,
)

CURVE_POINTS = 101
SCORE_BINS = 30


def roc_on_grid(y: npt.ArrayLike, p: npt.ArrayLike, *, points: int = CURVE_POINTS) -> RocCurve:
    """ROC curve of scores ``p`` (higher = riskier) sampled on ``points`` evenly spaced FPRs.

    Raises
    ------
    fedrisk.errors.SchemaError
        As :func:`fedrisk.ml.metrics.roc_curve`.
    """
    exact = metrics.roc_curve(y, p)
    grid = np.linspace(0.0, 1.0, points)
    # At a vertical step (several points at one FPR) np.interp takes the last, highest TPR:
    # the curve's upper envelope.
    return RocCurve(fpr=rounded_all(grid), tpr=rounded_all(np.interp(grid, exact.fpr, exact.tpr)))


def ks_on_grid(y: npt.ArrayLike, p: npt.ArrayLike, *, points: int = CURVE_POINTS) -> KsCurve:
    """KS chart of scores ``p`` sampled on ``points`` evenly spaced shares of the accounts.

    Raises
    ------
    fedrisk.errors.SchemaError
        As :func:`fedrisk.ml.metrics.ks_curve`.
    """
    exact = metrics.ks_curve(y, p)
    grid = np.linspace(0.0, 1.0, points)
    bad_on_grid = np.interp(grid, exact.population, exact.cum_bad)
    good_on_grid = np.interp(grid, exact.population, exact.cum_good)
    at = int(np.argmax(bad_on_grid - good_on_grid))
    return KsCurve(
        population=rounded_all(grid),
        cum_bad=rounded_all(bad_on_grid),
        cum_good=rounded_all(good_on_grid),
        ks=rounded(metrics.ks(y, p)),
        at_population=rounded(grid[at]),
    )


def score_histogram(
    y: npt.ArrayLike, p: npt.ArrayLike, *, bins: int = SCORE_BINS
) -> ScoreHistogram:
    """Histograms of scorecard points for goods and bads (range: 0.5-99.5 % of all points)."""
    labels = np.asarray(y).astype(bool)
    points = ScorecardScaling().score(np.asarray(p, dtype=np.float64))
    low, high = np.quantile(points, [0.005, 0.995])
    low, high = 10.0 * math.floor(low / 10.0), 10.0 * math.ceil(high / 10.0)
    if high <= low:
        high = low + 10.0
    edges = np.linspace(low, high, bins + 1)
    clipped = np.clip(points, low, high)
    goods, _ = np.histogram(clipped[~labels], bins=edges)
    bads, _ = np.histogram(clipped[labels], bins=edges)
    return ScoreHistogram(
        edges=rounded_all(edges), goods=[int(v) for v in goods], bads=[int(v) for v in bads]
    )


def model_curves(y: npt.ArrayLike, p: npt.ArrayLike, *, full: bool) -> ModelCurves:
    """ROC, and with ``full`` also KS chart and score histograms, of one model."""
    if not full:
        return ModelCurves(roc=roc_on_grid(y, p))
    return ModelCurves(roc=roc_on_grid(y, p), ks=ks_on_grid(y, p), scores=score_histogram(y, p))
