"""A tiny federation for the deployment tests: three party names, a two-feature schema, data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedrisk.data.schema import DatasetSchema, FeatureKind, FeatureSpec

PARTIES = ("bank_a", "bank_b", "telco_c")

SCHEMA = DatasetSchema(
    name="tiny",
    id_column="id",
    target_column="bad",
    features=(
        FeatureSpec(name="income", kind=FeatureKind.NUMERIC, min=0.0, max=1e6),
        FeatureSpec(name="region", kind=FeatureKind.CATEGORICAL, categories=("north", "south")),
    ),
)


def write_party_data(path: Path, *, rows: int, seed: int) -> Path:
    """A small CSV that satisfies ``SCHEMA``."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "id": [f"c{seed}_{i}" for i in range(rows)],
            "bad": rng.integers(0, 2, size=rows),
            "income": rng.uniform(0, 1e5, size=rows).round(2),
            "region": rng.choice(["north", "south"], size=rows),
        }
    )
    frame.to_csv(path, index=False)
    return path
