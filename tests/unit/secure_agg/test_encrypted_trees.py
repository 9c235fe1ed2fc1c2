"""Boosted trees grown from CKKS-summed histograms are the trees a central fit grows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedrisk.data.datasets import load_dataset
from fedrisk.data.partitions import parse_partition, partition_frame
from fedrisk.ml.features import FeatureStats
from fedrisk.ml.trees import (
    BoostingState,
    Shard,
    TreeBinning,
    TreeParams,
    base_margin_of,
)
from secure_agg.aggregation import CkksAggregation
from secure_agg.keys import generate_context, public_context
from secure_agg.params import HEParams
from tests.support.trees import central_trees


def test_encrypted_boosting_grows_the_central_trees() -> None:
    # Arrange: synthetic parties (missing values and categoricals included), skewed sizes.
    dataset = load_dataset("synthetic", rng=np.random.default_rng(0), n_rows=2400)
    schema = dataset.schema
    parties = partition_frame(
        dataset.frame,
        schema,
        parse_partition("quantity"),
        n_parties=3,
        rng=np.random.default_rng(1),
    )
    params = TreeParams(
        n_trees=6, max_depth=3, subsample=0.8, early_stopping_rounds=2, max_bins=32, seed=7
    )
    secret = generate_context(HEParams())
    party_channel = CkksAggregation(secret)
    server = CkksAggregation(public_context(secret))
    enc_stats = server.sum_records(
        [
            party_channel.encode(FeatureStats.from_frame(p.train, schema, n_bins=256).to_vector())
            for p in parties
        ]
    )
    target = schema.target_column
    assert target is not None

    def shard_of(
        stats: FeatureStats, binning: TreeBinning, frame: pd.DataFrame, name: str
    ) -> Shard:
        return Shard.split(name, binning.transform(frame), frame[target].to_numpy(), params=params)

    # Act, federated: each party decrypts the pooled statistics and every pooled histogram
    # sum itself and advances its own state; the server only adds ciphertexts.
    stats = FeatureStats.from_vector(party_channel.decode(enc_stats), schema, n_bins=256)
    binning = TreeBinning.from_stats(stats, max_bins=params.max_bins)
    states = [BoostingState(binning, params, base_margin=base_margin_of(stats)) for _ in parties]
    shards = [shard_of(stats, binning, p.train, p.name) for p in parties]
    while not states[0].done:
        records = [
            party_channel.encode(s.local_vector(sh)) for s, sh in zip(states, shards, strict=True)
        ]
        pooled = server.sum_records(records)
        for s in states:
            s.apply(party_channel.decode(pooled))

    # Act, central: plain sums over the same shards and bins.
    central = central_trees(parties, schema, params, stats_bins=256)

    # Assert: same bins, same trees node for node, at every party.
    assert central.binning.to_dict() == binning.to_dict()
    assert len(central.trees) >= 2
    expected = [t.to_dict() for t in central.trees]
    for s in states:
        assert s.done and [t.to_dict() for t in s.trees] == expected
        assert s.losses == central.losses
    splits = [f for t in central.trees for f in t.feature if f >= 0]
    kinds = {binning.features[f].kind for f in splits}
    assert kinds == {"numeric", "categorical"}
    assert any(
        t.default_left[n] for t in central.trees for n in range(t.n_nodes) if t.feature[n] >= 0
    )
