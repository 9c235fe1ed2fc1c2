"""A small loan schema and frames whose default log-odds are linear in the features."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedrisk.data.schema import DatasetSchema, FeatureKind, FeatureSpec

LOANS_SCHEMA = DatasetSchema(
    name="loans",
    id_column="id",
    target_column="bad",
    features=(
        FeatureSpec(name="utilisation", kind=FeatureKind.NUMERIC, min=0, max=2),
        FeatureSpec(name="income", kind=FeatureKind.NUMERIC, min=0, max=1e6, transform="log1p"),
        FeatureSpec(name="late", kind=FeatureKind.NUMERIC, min=0, max=10),
        FeatureSpec(
            name="channel", kind=FeatureKind.CATEGORICAL, categories=("branch", "web", "app")
        ),
    ),
)
"""Three numeric features and one categorical: 3 + 3 + 1 model columns after preprocessing."""


def loans(n: int, seed: int, *, base: float = -2.5) -> pd.DataFrame:
    """``n`` rows of :data:`LOANS_SCHEMA` (so logistic regression is well specified)."""
    rng = np.random.default_rng(seed)
    util = rng.uniform(0, 1.5, n)
    income = rng.lognormal(10, 0.6, n)
    late = rng.poisson(0.5, n).astype(float)
    channel = rng.choice(["branch", "web", "app"], n)
    z = base + 1.5 * util - 0.6 * (np.log1p(income) - 10) + 0.8 * late + (channel == "web") * 0.5
    bad = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "bad": bad,
            "utilisation": util,
            "income": income,
            "late": late,
            "channel": channel,
        }
    )
