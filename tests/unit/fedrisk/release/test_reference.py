"""The reference PD bands an artifact carries: built from pooled score histograms."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from fedrisk.errors import SchemaError
from fedrisk.ml.metrics import auc_from_histograms, score_histograms
from fedrisk.release.reference import ScoreReference, reference_from_histograms


def test_bands_split_the_pooled_population_evenly_and_keep_its_auc() -> None:
    # arrange: two parties' histograms, summed as the encrypted aggregation would
    rng = np.random.default_rng(3)
    parts = []
    for _ in range(2):
        p = 1.0 / (1.0 + np.exp(-rng.normal(-2.0, 1.0, size=5000)))
        parts.append(score_histograms((rng.random(5000) < p).astype(int), p))
    pooled = parts[0] + parts[1]

    # act
    reference = reference_from_histograms(pooled, n_bands=10)

    # assert
    assert len(reference.shares) == 10 and reference.count == 10_000
    assert max(reference.shares) - min(reference.shares) < 0.02
    assert reference.auc == pytest.approx(auc_from_histograms(pooled), abs=1e-12)
    assert reference.bad_rates == sorted(reference.bad_rates)  # riskier bands, more bads


def test_inconsistent_bands_and_bad_input_are_refused() -> None:
    with pytest.raises(ValidationError, match="pd_edges must increase"):
        ScoreReference(pd_edges=[0.2, 0.1], shares=[0.3, 0.3, 0.4], bad_rates=[0, 0, 0],
                       auc=0.7, ks=0.3, count=10)  # fmt: skip
    with pytest.raises(SchemaError, match="n_bands must be >= 2"):
        reference_from_histograms(np.ones((2, 10)), n_bands=1)
