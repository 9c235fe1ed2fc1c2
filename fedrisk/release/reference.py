"""The reference score distribution a released artifact carries, for drift monitoring (PSI).

At release the party that decrypts the pooled evaluation histograms (per-class counts of the
global model's PD over every party's test split, :func:`fedrisk.ml.metrics.score_histograms`)
coarsens them into ``n_bands`` PD bands of about equal reference mass. The artifact then carries
the band edges, each band's share and bad rate, and the pooled AUC/KS: what a lender compares
its live applications and matured loans with. No party's own data enters it beyond the pooled
counts that every party already agreed to publish as AUC/KS.
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedrisk.errors import SchemaError
from fedrisk.ml.metrics import auc_from_histograms, histogram_bin_edges, ks_from_histograms


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


def reference_from_histograms(hist: npt.ArrayLike, *, n_bands: int = 10) -> ScoreReference:
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
    )
