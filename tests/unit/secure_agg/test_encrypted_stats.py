"""Feature statistics survive the encrypted channel: CKKS sum of parties == plaintext merge."""

from __future__ import annotations

import numpy as np
import pytest

from fedrisk.data.datasets import load_dataset
from fedrisk.data.partitions import parse_partition, partition_frame
from fedrisk.errors import DatasetNotFoundError
from fedrisk.ml.features import FeatureStats, Preprocessor
from secure_agg.aggregation import CkksAggregation
from secure_agg.keys import generate_context, public_context
from secure_agg.params import HEParams


def _encrypted_merge(frames, schema):
    secret = generate_context(HEParams())
    party = CkksAggregation(secret)
    server = CkksAggregation(public_context(secret))
    records = [party.encode(FeatureStats.from_frame(f, schema).to_vector()) for f in frames]
    return FeatureStats.from_vector(party.decode(server.sum_records(records)), schema)


@pytest.mark.parametrize("name", ["synthetic", "taiwan"])
def test_encrypted_statistics_fit_the_same_preprocessor(name: str) -> None:
    try:
        dataset = load_dataset(name, rng=np.random.default_rng(0))
    except DatasetNotFoundError as e:
        pytest.skip(f"real data missing: {e}")
    rng = np.random.default_rng(1)
    parties = partition_frame(
        dataset.frame, dataset.schema, parse_partition("iid"), n_parties=3, rng=rng
    )
    frames = [p.train for p in parties]
    plain = FeatureStats.from_frame(frames[0], dataset.schema)
    for frame in frames[1:]:
        plain = plain.merge(FeatureStats.from_frame(frame, dataset.schema))

    encrypted = _encrypted_merge(frames, dataset.schema)

    # Counts come back exact (they are rounded), sums within CKKS noise. Taiwan's raw money
    # amounts made the unscaled sums of squares ~1e16, which broke every slot in the ciphertext.
    np.testing.assert_allclose(encrypted.to_vector(), plain.to_vector(), rtol=1e-9, atol=1e-5)
    test = parties[0].test
    np.testing.assert_allclose(
        Preprocessor(dataset.schema).fit_stats(encrypted).transform(test),
        Preprocessor(dataset.schema).fit_stats(plain).transform(test),
        atol=1e-5,
    )
