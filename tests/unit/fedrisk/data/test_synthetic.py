"""Tests for fedrisk.data.synthetic: seeding, schema validity, population mixes and learnability."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from fedrisk.data.schema import DatasetSchema, FeatureKind
from fedrisk.data.synthetic import (
    SEGMENTS,
    SYNTHETIC_SCHEMA,
    SYNTHETIC_VIEWS,
    generate_horizontal,
    generate_pooled,
    generate_vertical,
    synthetic_view_schema,
)
from fedrisk.data.validation import validate_frame
from fedrisk.errors import ConfigError

TARGET = "default_12m"


@pytest.fixture(scope="module")
def pooled() -> pd.DataFrame:
    return generate_pooled(n_rows=20_000, rng=np.random.default_rng(0))


def design_matrix(frame: pd.DataFrame, schema: DatasetSchema) -> np.ndarray:
    """Plain reference preprocessing (mean impute + missing flag, log1p, scale, one-hot)."""
    blocks: list[pd.DataFrame | pd.Series] = []
    for spec in schema.features:
        column = frame[spec.name]
        if spec.kind is FeatureKind.NUMERIC:
            values = np.log1p(column) if spec.transform == "log1p" else column
            missing = values.isna()
            values = values.fillna(values.mean())
            blocks.append((values - values.mean()) / (values.std() + 1e-9))
            if missing.any():
                blocks.append(missing.astype(float))
        else:
            blocks.append(pd.get_dummies(column.fillna("<missing>"), dtype=float))
    return pd.concat(blocks, axis=1).to_numpy()


def lr_test_auc(frame: pd.DataFrame, schema: DatasetSchema, y: np.ndarray) -> float:
    x = design_matrix(frame, schema)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    model = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    return float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))


def test_same_seed_same_data_other_seed_other_data() -> None:
    first = generate_pooled(n_rows=500, rng=np.random.default_rng(3))
    again = generate_pooled(n_rows=500, rng=np.random.default_rng(3))
    other = generate_pooled(n_rows=500, rng=np.random.default_rng(4))

    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)


def test_pooled_frame_validates_and_has_the_segment_column(pooled: pd.DataFrame) -> None:
    validate_frame(pooled, SYNTHETIC_SCHEMA, source="synthetic")

    assert list(pooled.columns) == [*SYNTHETIC_SCHEMA.columns, "segment"]
    assert pooled["customer_id"].tolist() == list(range(1, len(pooled) + 1))
    assert set(pooled["segment"]) == set(SEGMENTS)
    assert pooled[TARGET].dtype == np.int64


def test_feature_mix_numeric_categorical_money_and_nullable(pooled: pd.DataFrame) -> None:
    features = SYNTHETIC_SCHEMA.features

    kinds = {f.kind for f in features}
    log1p = [f.name for f in features if f.transform == "log1p"]
    nullable = [f.name for f in features if f.nullable]

    assert kinds == {FeatureKind.NUMERIC, FeatureKind.CATEGORICAL}
    assert {"income", "online_spend_12m", "avg_monthly_bill"} <= set(log1p)
    assert all(pooled[name].isna().any() for name in nullable)
    assert pooled["income"].isna().mean() == pytest.approx(0.05, abs=0.03)
    # Missing income is informative: it happens more among defaulters.
    missing_income = pooled["income"].isna()
    assert pooled.loc[missing_income, TARGET].mean() > pooled.loc[~missing_income, TARGET].mean()


def test_bad_rate_is_realistic_and_differs_by_segment(pooled: pd.DataFrame) -> None:
    rates = pooled.groupby("segment")[TARGET].mean()

    assert 0.10 <= pooled[TARGET].mean() <= 0.20
    assert rates["bank"] < rates["ecommerce"] < rates["telecom"]


def test_labels_are_learnable_and_views_complement_each_other(pooled: pd.DataFrame) -> None:
    y = pooled[TARGET].to_numpy()

    all_features = lr_test_auc(pooled, SYNTHETIC_SCHEMA, y)
    bank_only = lr_test_auc(pooled, synthetic_view_schema("bank"), y)

    assert 0.75 <= all_features <= 0.85
    assert bank_only < all_features - 0.01


def test_horizontal_parties_are_disjoint_with_segment_mixes() -> None:
    parties = generate_horizontal(
        rows_per_party={"bank_a": 3000, "ecommerce_b": 3000, "telecom_c": 2000, "other": 500},
        rng=np.random.default_rng(1),
    )

    ids = pd.concat([frame["customer_id"] for frame in parties.values()])
    assert ids.is_unique
    assert {name: len(frame) for name, frame in parties.items()} == {
        "bank_a": 3000,
        "ecommerce_b": 3000,
        "telecom_c": 2000,
        "other": 500,
    }
    for frame in parties.values():
        validate_frame(frame, SYNTHETIC_SCHEMA)
        assert list(frame.columns) == [*SYNTHETIC_SCHEMA.columns, "segment"]
    assert set(parties["bank_a"]["segment"]) == {"bank"}
    assert set(parties["other"]["segment"]) == {"bank"}  # fourth party: segments in turn
    assert parties["ecommerce_b"]["age"].mean() < parties["bank_a"]["age"].mean() - 5
    assert parties["ecommerce_b"]["online_spend_12m"].notna().all()
    assert parties["telecom_c"]["online_spend_12m"].isna().mean() > 0.3


def test_vertical_views_share_customers_and_only_bank_has_the_label() -> None:
    views = generate_vertical(n_customers=2000, rng=np.random.default_rng(2))

    assert set(views) == set(SYNTHETIC_VIEWS)
    for name, frame in views.items():
        schema = synthetic_view_schema(name)
        validate_frame(frame, schema, source=name)
        assert list(frame.columns) == schema.columns
        assert frame["customer_id"].tolist() == views["bank"]["customer_id"].tolist()
    assert TARGET in views["bank"].columns
    assert TARGET not in views["ecommerce"].columns
    assert TARGET not in views["telecom"].columns
    held = [c for view in SYNTHETIC_VIEWS.values() for c in view]
    assert sorted(held) == sorted(SYNTHETIC_SCHEMA.feature_names)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda rng: generate_pooled(n_rows=0, rng=rng), "n_rows must be a positive integer"),
        (lambda rng: generate_vertical(n_customers=-1, rng=rng), "n_customers must be"),
        (lambda rng: generate_horizontal(rows_per_party={}, rng=rng), "at least one party"),
        (
            lambda rng: generate_horizontal(rows_per_party={"bank": 0}, rng=rng),
            r"rows_per_party\['bank'\] must be a positive integer",
        ),
        (lambda rng: synthetic_view_schema("retail"), "view must be one of"),
    ],
)
def test_bad_arguments_are_config_errors(
    call: Callable[[np.random.Generator], object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        call(np.random.default_rng(0))
