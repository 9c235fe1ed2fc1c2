"""The reference an artifact carries: PD bands from pooled score histograms, feature bins from
pooled feature statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from fedrisk.data.datasets import load_dataset
from fedrisk.data.schema import DatasetSchema
from fedrisk.errors import SchemaError
from fedrisk.ml.features import FeatureStats
from fedrisk.ml.metrics import auc_from_histograms, score_histograms
from fedrisk.release.reference import (
    MISSING_BIN,
    FeatureReference,
    ScoreReference,
    feature_reference,
    reference_from_histograms,
)


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


@pytest.fixture(scope="module")
def synthetic() -> tuple[DatasetSchema, pd.DataFrame]:
    data = load_dataset("synthetic", rng=np.random.default_rng(5), n_rows=2000)
    return data.schema, data.frame


def test_feature_bins_of_merged_party_statistics_describe_the_pooled_rows(
    synthetic: tuple[DatasetSchema, pd.DataFrame],
) -> None:
    # arrange: two parties' statistics, summed as the encrypted aggregation would
    schema, frame = synthetic
    halves = (frame.iloc[:900], frame.iloc[900:])
    merged = FeatureStats.from_frame(halves[0], schema).merge(
        FeatureStats.from_frame(halves[1], schema)
    )

    # act
    features = feature_reference(merged)

    # assert: every bounded feature and category list is described; each row's own bin,
    # counted over the raw rows, gives the shares exactly
    described = {f.name for f in features}
    assert described == set(schema.feature_names)
    for feature in features:
        values = [None if pd.isna(v) else v for v in frame[feature.name]]
        counts = np.bincount([feature.bin_of(v) for v in values], minlength=len(feature.shares))
        assert counts / len(frame) == pytest.approx(feature.shares, abs=1e-12)
    income = next(f for f in features if f.name == "income")
    assert len(income.shares) >= 6 and income.labels[-1] == MISSING_BIN
    assert income.bin_of(None) == len(income.shares) - 1
    assert income.bin_of(-5.0) == 0 and income.bin_of(1e12) == len(income.cuts)


def test_feature_bins_travel_in_the_reference_json_and_refuse_bad_input(
    synthetic: tuple[DatasetSchema, pd.DataFrame],
) -> None:
    # arrange
    schema, frame = synthetic
    features = feature_reference(FeatureStats.from_frame(frame, schema))
    reference = reference_from_histograms(np.ones((2, 10)), features=features)

    # act
    again = ScoreReference.model_validate_json(reference.model_dump_json())

    # assert
    assert again == reference and again.features[3].bin_of(2500) == features[3].bin_of(2500)
    region = next(f for f in again.features if f.name == "region")
    assert region.bin_of("atlantis") == len(region.shares) - 2  # unknown category
    with pytest.raises(SchemaError, match="must be a number or null"):
        features[0].bin_of("old")
    with pytest.raises(ValidationError, match="must sum to 1"):
        FeatureReference.model_validate(
            {**features[0].model_dump(), "shares": [0.5] * len(features[0].shares)}
        )
