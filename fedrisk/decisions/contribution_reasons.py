"""Reason codes from exact per-feature contributions to the logit (boosted trees' TreeSHAP).

A feature costs ``factor · φ`` score points, where ``φ`` is its contribution to the bad-vs-good
logit: with the base value, the contributions add up to the logit, so the points add up to the
score's distance from the base applicant's score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from fedrisk.decisions.reasons import (
    DEFAULT_MAX_REASONS,
    ReasonCode,
    ReasonCodeTable,
    top_reasons,
)
from fedrisk.decisions.scorecard import ScorecardScaling
from fedrisk.errors import DecisionError

__all__ = ["ContributionRanker"]

ContributionFn = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float64]]
"""Transformed rows ``(n, ...)`` -> per-feature logit contributions ``(n, n_features)``."""


class ContributionRanker:
    """Ranks reasons by each feature's contribution to the logit.

    Parameters
    ----------
    contributions
        The model's exact contributions per raw feature, in ``features`` order.
    table
        Reason-code table covering every feature.
    scaling
        Scorecard scaling; converts logit contributions to points.
    features
        The raw features, in the order ``contributions`` returns them.

    Raises
    ------
    DecisionError
        If a feature has no table entry.
    """

    def __init__(
        self,
        contributions: ContributionFn,
        *,
        table: ReasonCodeTable,
        scaling: ScorecardScaling,
        features: Sequence[str],
        max_reasons: int = DEFAULT_MAX_REASONS,
    ) -> None:
        missing = [f for f in features if f not in table.features]
        if missing:
            raise DecisionError(f"table must have an entry for every feature; missing {missing}")
        self._contributions = contributions
        self._entries = [table.entry(name) for name in features]
        self._factor = scaling.factor
        self._max_reasons = max_reasons

    def rank_transformed(
        self, x: npt.NDArray[np.float32], *, logits: npt.ArrayLike | None = None
    ) -> list[list[ReasonCode]]:
        """Per row, at most ``max_reasons`` reasons with ``points > 0``, largest first."""
        del logits  # the contributions already sum to them
        points = self._factor * self._contributions(x)
        return [top_reasons(row, self._entries, max_reasons=self._max_reasons) for row in points]
