"""Scorecard scaling: map a probability of default to points (base score, base odds, PDO).

API
---
``ScorecardScaling(base_score=600, base_odds=50.0, pdo=20)`` (pydantic, frozen, extra="forbid")
    ``.factor`` -> float            points per unit of log-odds, ``pdo / ln 2``
    ``.offset`` -> float            ``base_score - factor * ln(base_odds)``
    ``.score(pd)`` -> ndarray       ``offset + factor * ln((1 - pd) / pd)``, pd clipped to
                                    ``[1e-9, 1 - 1e-9]``
    ``.score_one(pd)`` -> float     the same for one applicant
    ``.score_from_logit(logit)``    score from the model's bad-vs-good logit (no clipping loss)
    ``.pd_from_score(score)`` -> ndarray   the inverse of ``score``
    ``.points_from_logit_delta(d)`` points lost when the bad-vs-good logit rises by ``d``

``PointsRow(feature, bin, count, bad_rate, woe, iv, points)`` (pydantic, frozen)
    One line of a points scorecard.
``points_table(scaling, bins, *, weights, intercept)`` -> list[PointsRow]
    The points of every bin of a logistic regression on WOE features: a row's points are
    ``-factor * weight * woe`` plus an equal share of ``offset - factor * intercept``, so an
    applicant's points over its bins add up to ``score_from_logit`` of the model's logit.

The scaling travels with a model: it is the ``scorecard`` field of
``fedrisk.release.artifact.ModelArtifact``; a scorecard model also carries its points table.
Higher score means lower risk. With the defaults a PD of 1/51 (odds 50:1 good:bad) scores 600, and
every doubling of the good:bad odds adds 20 points.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

PD_CLIP = 1e-9
"""PDs are clipped to ``[PD_CLIP, 1 - PD_CLIP]`` so scores stay finite."""

FloatArray = npt.NDArray[np.float64]


class ScorecardScaling(BaseModel):
    """Linear scaling of the good:bad log-odds into scorecard points.

    Parameters
    ----------
    base_score
        Points given at ``base_odds``.
    base_odds
        Good:bad odds that score ``base_score`` (50.0 means 50 goods per bad, PD = 1/51).
    pdo
        Points to double the odds.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_score: float = 600.0
    base_odds: float = 50.0
    pdo: float = 20.0

    @field_validator("base_score", "base_odds", "pdo")
    @classmethod
    def _positive(cls, value: float, info: ValidationInfo) -> float:
        name = info.field_name
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
        return value

    @property
    def factor(self) -> float:
        """Points per unit of natural log-odds: ``pdo / ln 2``."""
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        """Score at good:bad odds of 1: ``base_score - factor * ln(base_odds)``."""
        return self.base_score - self.factor * math.log(self.base_odds)

    def score(self, pd: npt.ArrayLike) -> FloatArray:
        """Scorecard points for probabilities of default (higher is safer).

        Parameters
        ----------
        pd
            Probability of default, scalar or array; clipped to ``[1e-9, 1 - 1e-9]``.

        Returns
        -------
        numpy.ndarray
            float64 points, same shape as ``pd``.
        """
        p = np.clip(np.asarray(pd, dtype=np.float64), PD_CLIP, 1.0 - PD_CLIP)
        return np.asarray(self.offset + self.factor * np.log((1.0 - p) / p), dtype=np.float64)

    def score_one(self, pd: float) -> float:
        """Scorecard points for one probability of default."""
        return float(self.score(pd))

    def score_from_logit(self, logit: npt.ArrayLike) -> FloatArray:
        """Scorecard points from the model's bad-vs-good logit ``ln(pd / (1 - pd))``.

        Clipped to the same range as :meth:`score` so both agree everywhere.
        """
        bound = math.log((1.0 - PD_CLIP) / PD_CLIP)
        z = np.clip(np.asarray(logit, dtype=np.float64), -bound, bound)
        return np.asarray(self.offset - self.factor * z, dtype=np.float64)

    def pd_from_score(self, score: npt.ArrayLike) -> FloatArray:
        """Probability of default for scorecard points (inverse of :meth:`score`)."""
        s = np.asarray(score, dtype=np.float64)
        # ln(good/bad) = (score - offset) / factor, so pd = 1 / (1 + exp(that))
        log_odds_good = (s - self.offset) / self.factor
        return np.asarray(0.5 * (1.0 - np.tanh(0.5 * log_odds_good)), dtype=np.float64)

    def points_from_logit_delta(self, delta_logit: npt.ArrayLike) -> FloatArray:
        """Points lost when the bad-vs-good logit rises by ``delta_logit`` (positive = worse)."""
        return np.asarray(self.factor * np.asarray(delta_logit, dtype=np.float64), dtype=np.float64)


class PointsRow(BaseModel):
    """One bin of a points scorecard, as a credit committee reads it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature: str
    bin: str
    count: int
    bad_rate: float | None
    woe: float
    iv: float
    """This bin's share of the feature's information value."""
    points: float


@dataclass(frozen=True)
class BinSummary:
    """What the points table needs of one feature's bins (from the WOE binning)."""

    feature: str
    labels: Sequence[str]
    goods: Sequence[float]
    bads: Sequence[float]
    woe: Sequence[float]
    bin_ivs: Sequence[float]


def points_table(
    scaling: ScorecardScaling,
    bins: Sequence[BinSummary],
    *,
    weights: Mapping[str, float],
    intercept: float,
) -> list[PointsRow]:
    """Points per bin of a logistic regression on WOE features.

    Parameters
    ----------
    scaling
        PDO and base odds.
    bins
        The bins of every feature in the scorecard (features with weight 0 may be left out).
    weights
        The model's coefficient of each feature's WOE, on the bad-vs-good logit.
    intercept
        The model's bias plus its calibration offset.

    Returns
    -------
    list of PointsRow
        Rows in feature then bin order, points rounded to 0.01. The constant
        ``offset - factor * intercept`` is shared equally by the features, so every feature's
        points are comparable and an applicant's total is the model's score.
    """
    if not bins:
        return []
    share = (scaling.offset - scaling.factor * intercept) / len(bins)
    rows: list[PointsRow] = []
    for feature in bins:
        weight = weights[feature.feature]
        for label, good, bad, woe, iv in zip(
            feature.labels, feature.goods, feature.bads, feature.woe, feature.bin_ivs, strict=True
        ):
            n = good + bad
            rows.append(
                PointsRow(
                    feature=feature.feature,
                    bin=label,
                    count=round(n),
                    bad_rate=bad / n if n > 0 else None,
                    woe=woe,
                    iv=iv,
                    points=round(share - scaling.factor * weight * woe, 2),
                )
            )
    return rows
