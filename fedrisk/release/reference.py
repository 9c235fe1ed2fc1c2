"""The reference score and feature distributions a released artifact carries, for drift
monitoring (score PSI and per-feature CSI).

At release the party that decrypts the pooled evaluation histograms (per-class counts of the
global model's PD over every party's test split, :func:`fedrisk.ml.metrics.score_histograms`)
coarsens them into ``n_bands`` PD bands of about equal reference mass. The artifact then carries
the band edges, each band's share and bad rate, and the pooled AUC/KS: what a lender compares
its live applications and matured loans with. No party's own data enters it beyond the pooled
counts that every party already agreed to publish as AUC/KS.

The per-feature reference (:func:`feature_reference`) comes from the pooled feature statistics
of the same run: the CKKS-encrypted (and pairwise-masked) sum of every party's
:class:`fedrisk.ml.features.FeatureStats` that the parties already decrypt to fit the shared
preprocessing. Its fixed-range histograms of bounded numeric features and its category counts
are coarsened into about ten equal-mass bins; no new pass over the parties' data is needed, and
nothing beyond those pooled counts enters the artifact. A numeric feature without schema bounds
has no pooled histogram, so it carries no CSI reference.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from itertools import pairwise
from typing import Final

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from fedrisk.data.schema import FeatureKind, FeatureSpec
from fedrisk.errors import SchemaError
from fedrisk.ml.features import (
    UNKNOWN_CATEGORY,
    FeatureStats,
    category_codes,
    histogram_range,
    quantile_cuts,
)
from fedrisk.ml.metrics import auc_from_histograms, histogram_bin_edges, ks_from_histograms

MISSING_BIN: Final = "__missing__"
"""Label of the bin that holds a feature's missing values."""


class FeatureReference(BaseModel):
    """Reference bins of one feature: what share of the release population fell in each.

    Numeric features: bins ``0 .. len(cuts)`` hold values whose fine pooled-histogram index
    (``fine_bins`` equal bins over the transformed schema range) has that many ``cuts`` at or
    below it; the last bin holds missing values. Categorical features: one bin per schema
    category, then unknown categories, then missing values. ``labels`` name the bins for people.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: FeatureSpec
    fine_bins: int = Field(default=0, ge=0)
    cuts: list[int] = Field(default_factory=list)
    labels: list[str]
    shares: list[float]
    count: float = Field(gt=0)
    _bounds: tuple[float, float] = PrivateAttr(default=(0.0, 0.0))

    @property
    def name(self) -> str:
        """The feature's name."""
        return self.spec.name

    @model_validator(mode="after")
    def _consistent(self) -> FeatureReference:
        if self.spec.kind is FeatureKind.NUMERIC:
            if histogram_range(self.spec) is None or self.fine_bins < 2:
                raise ValueError(
                    f"feature {self.name} must be bounded with fine_bins >= 2; got bounds "
                    f"({self.spec.min}, {self.spec.max}) and fine_bins {self.fine_bins}"
                )
            if any(b <= a for a, b in pairwise(self.cuts)) or any(
                not 0 < c < self.fine_bins for c in self.cuts
            ):
                raise ValueError(
                    f"cuts of {self.name} must increase strictly inside (0, {self.fine_bins}); "
                    f"got {self.cuts}"
                )
            n = len(self.cuts) + 2
        else:
            n = len(self.spec.categories or ()) + 2
        if len(self.shares) != n or len(self.labels) != n:
            raise ValueError(
                f"shares and labels of {self.name} must number {n}; got {len(self.shares)} and "
                f"{len(self.labels)}"
            )
        if not math.isclose(sum(self.shares), 1.0, abs_tol=1e-6):
            raise ValueError(f"shares of {self.name} must sum to 1; got {sum(self.shares)}")
        return self

    def model_post_init(self, context: object, /) -> None:
        bounds = histogram_range(self.spec)
        self._bounds = (0.0, 0.0) if bounds is None else bounds

    def bin_of(self, value: object) -> int:
        """The reference bin of one raw value (None or NaN is missing).

        Scalar Python on the request path; the same arithmetic as
        :func:`fedrisk.ml.features.histogram_index` on :func:`~fedrisk.ml.features.
        forward_transform`, so a value lands in the bin its row was counted in.

        Raises
        ------
        SchemaError
            If a numeric feature's value is not a number.
        """
        missing = len(self.shares) - 1
        if self.spec.kind is FeatureKind.CATEGORICAL:
            code = int(category_codes([value], self.spec.categories or ())[0])
            # category_codes: -1 unknown, -2 missing
            return missing if code == -2 else (missing - 1 if code == -1 else code)
        if value is None:
            return missing
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise SchemaError(
                f"feature {self.name} must be a number or null; got {type(value).__name__}"
            )
        x = float(value)
        if math.isnan(x):
            return missing
        lo_raw = -math.inf if self.spec.min is None else self.spec.min
        hi_raw = math.inf if self.spec.max is None else self.spec.max
        t = min(max(x, lo_raw), hi_raw)
        if self.spec.transform == "log1p":
            t = math.log1p(t)
        lo, hi = self._bounds
        fine = (
            0
            if hi <= lo
            else min(
                max(math.floor((t - lo) * (self.fine_bins / (hi - lo))), 0), self.fine_bins - 1
            )
        )
        return bisect_right(self.cuts, fine)


def feature_reference(
    stats: FeatureStats, *, n_bins: int = 10, features: Sequence[str] | None = None
) -> list[FeatureReference]:
    """Reference bins of every feature the pooled ``stats`` can describe.

    Bounded numeric features: their fine pooled histogram cut into about ``n_bins`` equal-mass
    bins (on the fine bins' boundaries), plus missing values. Categorical features: their
    category counts. Unbounded numeric features are left out (the statistics hold no histogram
    of them), and so is a feature without rows.

    Raises
    ------
    SchemaError
        If ``n_bins < 2``, or ``features`` names a feature the schema lacks.
    """
    if n_bins < 2:
        raise SchemaError(f"n_bins must be >= 2; got {n_bins}")
    names = stats.schema.feature_names if features is None else list(features)
    total = stats.n_rows
    out: list[FeatureReference] = []
    for name in names:
        spec = stats.schema.feature(name)
        if total < 0.5:
            continue
        if spec.kind is FeatureKind.NUMERIC:
            hist = stats.histogram(name)
            bounds = histogram_range(spec)
            if hist is None or bounds is None:
                continue
            cuts = list(quantile_cuts(hist, n_bins))
            bounds_of = [0, *cuts, len(hist)]
            counts = [float(hist[a:b].sum()) for a, b in pairwise(bounds_of)]
            counts.append(max(total - stats.count(name), 0.0))
            labels = _numeric_labels(spec, bounds, len(hist), cuts)
            fine_bins = len(hist)
        else:
            by_category = stats.category_counts(name)
            counts = list(by_category.values())
            labels = [*(spec.categories or ()), UNKNOWN_CATEGORY, MISSING_BIN]
            cuts, fine_bins = [], 0
        n = sum(counts)
        if n < 0.5:
            continue
        out.append(
            FeatureReference(
                spec=spec,
                fine_bins=fine_bins,
                cuts=cuts,
                labels=labels,
                shares=[c / n for c in counts],
                count=n,
            )
        )
    return out


def _numeric_labels(
    spec: FeatureSpec, bounds: tuple[float, float], fine_bins: int, cuts: list[int]
) -> list[str]:
    """``[low, high)`` in raw units for each value bin, then the missing bin."""
    lo, hi = bounds
    edges_t = [lo + c * (hi - lo) / fine_bins for c in cuts]
    edges = [math.expm1(e) if spec.transform == "log1p" else e for e in edges_t]
    points = [spec.min, *edges, spec.max]
    return [f"[{a:.4g}, {b:.4g})" for a, b in pairwise(points)] + [MISSING_BIN]


class ScoreReference(BaseModel):
    """PD bands of the release population: inner edges, shares, bad rates, pooled AUC/KS.

    A PD ``p`` falls in band ``k`` = the number of ``pd_edges`` that are ``<= p``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pd_edges: list[float]
    shares: list[float]
    bad_rates: list[float]
    auc: float = Field(ge=0.0, le=1.0)
    ks: float = Field(ge=0.0, le=1.0)
    count: float = Field(gt=0)
    features: list[FeatureReference] = Field(default_factory=list)
    """Per-feature reference bins for CSI (:func:`feature_reference`); empty when the release
    carried none."""

    @model_validator(mode="after")
    def _consistent(self) -> ScoreReference:
        n = len(self.pd_edges) + 1
        if len(self.shares) != n or len(self.bad_rates) != n:
            raise ValueError(
                f"shares and bad_rates must number len(pd_edges) + 1 = {n}; got "
                f"{len(self.shares)} and {len(self.bad_rates)}"
            )
        if any(not (0.0 < e < 1.0) for e in self.pd_edges) or any(
            b <= a for a, b in pairwise(self.pd_edges)
        ):
            raise ValueError(f"pd_edges must increase strictly inside (0, 1); got {self.pd_edges}")
        if not math.isclose(sum(self.shares), 1.0, abs_tol=1e-6):
            raise ValueError(f"shares must sum to 1; got {sum(self.shares)}")
        return self


def reference_from_histograms(
    hist: npt.ArrayLike,
    *,
    n_bands: int = 10,
    features: Sequence[FeatureReference] = (),
) -> ScoreReference:
    """Coarsen pooled ``(2, n_bins)`` score histograms into about ``n_bands`` equal-mass bands.

    Raises
    ------
    SchemaError
        If ``hist`` is not a pair of count rows with both classes present, or ``n_bands < 2``.
    """
    if n_bands < 2:
        raise SchemaError(f"n_bands must be >= 2; got {n_bands}")
    counts = np.maximum(np.rint(np.asarray(hist, dtype=np.float64)), 0.0)
    auc, ks = auc_from_histograms(counts), ks_from_histograms(counts)
    n_bins = counts.shape[1]
    total = counts.sum(axis=0)
    cumulative = np.cumsum(total) / total.sum()
    # a band ends at the first bin where the cumulative share reaches k / n_bands
    ends = sorted({int(np.searchsorted(cumulative, k / n_bands)) for k in range(1, n_bands)})
    # every band must hold reference mass: no edge after the last occupied bin
    ends = [e for e in ends if cumulative[e] < 1.0 - 1e-12]
    logit_edges = histogram_bin_edges(n_bins)[[e + 1 for e in ends]]
    pd_edges = (1.0 / (1.0 + np.exp(-logit_edges))).tolist()
    bounds = [0, *(e + 1 for e in ends), n_bins]
    band_total = np.array([total[a:b].sum() for a, b in pairwise(bounds)])
    band_bad = np.array([counts[1, a:b].sum() for a, b in pairwise(bounds)])
    return ScoreReference(
        pd_edges=pd_edges,
        shares=(band_total / band_total.sum()).tolist(),
        bad_rates=(band_bad / band_total).tolist(),
        auc=auc,
        ks=ks,
        count=float(total.sum()),
        features=list(features),
    )
