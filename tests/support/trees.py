"""The oracle of the federated boosted trees: the central fit over the same parties' rows."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from fedrisk.data.partitions import PartyData
from fedrisk.data.schema import DatasetSchema
from fedrisk.ml.features import FeatureStats
from fedrisk.ml.trees import (
    TREE_STATS_BINS,
    BoostingState,
    Shard,
    TreeBinning,
    TreeParams,
    base_margin_of,
    fit_central,
)


def central_trees(
    parties: Sequence[PartyData],
    schema: DatasetSchema,
    params: TreeParams,
    *,
    stats_bins: int = TREE_STATS_BINS,
) -> BoostingState:
    """Boost centrally over every party's training rows, each party a shard under its own name
    (its validation and subsampling streams), on the bins of the pooled statistics at the
    federation's resolution (``stats_bins``): what a federated run must release, node for
    node."""
    target = schema.target_column
    assert target is not None
    pooled = FeatureStats.from_frame(
        pd.concat([p.train for p in parties], ignore_index=True), schema, n_bins=stats_bins
    )
    binning = TreeBinning.from_stats(pooled, max_bins=params.max_bins)
    shards = [
        Shard.split(p.name, binning.transform(p.train), p.train[target].to_numpy(), params=params)
        for p in parties
    ]
    return fit_central(shards, binning, params, base_margin=base_margin_of(pooled))
