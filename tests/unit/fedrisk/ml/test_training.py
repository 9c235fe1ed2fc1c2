"""Tests for local (federated-round) training, early-stopped baselines and calibrated PDs."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from fedrisk.data.schema import DatasetSchema, FeatureKind, FeatureSpec
from fedrisk.errors import ConfigError, ModelError, SchemaError
from fedrisk.ml import metrics
from fedrisk.ml.models import ModelSpec, build_model, get_logit_offset, model_to_vector
from fedrisk.ml.training import (
    TrainConfig,
    default_config,
    logit_offset_for,
    pos_weight_for,
    predict_proba,
    train_centralized,
    train_local,
    train_with_early_stopping,
)

SCHEMA = DatasetSchema(
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


def loans(n: int, seed: int, *, base: float = -2.5) -> pd.DataFrame:
    """Rows whose default log-odds are linear in the features (so LR is well specified)."""
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


def matrix(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    z = -2.0 + x @ np.array([1.0, -0.8, 0.5, 0.0, 0.3, 0.0])
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return x, y


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    # Small-batch training on a shared 2-core box is 5-20x faster on one thread (no OpenMP
    # spin-waits); restore the setting so other test modules are unaffected.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_train_config_is_validated() -> None:
    with pytest.raises(ValidationError):
        TrainConfig(learning_rate=0)
    with pytest.raises(ValidationError):
        TrainConfig(batch_size=0)
    with pytest.raises(ValidationError):
        TrainConfig(validation_fraction=1.0)
    with pytest.raises(ValidationError):
        TrainConfig(lr=0.1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="momentum"):
        TrainConfig(optimizer="adam", momentum=0.9)


def test_for_model_applies_overrides_on_tuned_defaults() -> None:
    config = TrainConfig.for_model("mlp", local_epochs=3)
    assert config.local_epochs == 3
    assert config.learning_rate == default_config("mlp").learning_rate
    with pytest.raises(ConfigError, match="overrides"):
        TrainConfig.for_model("lr", batch_size=-1)
    with pytest.raises(ConfigError, match="model_kind"):
        default_config("tree")  # type: ignore[arg-type]


def test_pos_weight_and_logit_offset() -> None:
    assert pos_weight_for(0.2) == pytest.approx(4.0)
    assert logit_offset_for(0.2) == pytest.approx(math.log(0.25))
    assert logit_offset_for(0.2, class_weight="none") == 0.0
    assert logit_offset_for(0.5) == 0.0
    for bad in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="pos_rate"):
            pos_weight_for(bad)


def test_train_local_is_deterministic_and_uses_no_global_rng() -> None:
    # Arrange
    x, y = matrix(1000, 0)
    spec = ModelSpec(kind="mlp", n_features=6, hidden=(8, 4))
    config = TrainConfig(local_epochs=2, batch_size=64)
    before = torch.get_rng_state()

    # Act
    vectors = []
    for _ in range(2):
        model = build_model(spec, generator=gen(1))
        train_local(model, x, y, config=config, generator=gen(2))
        vectors.append(model_to_vector(model))
    other = build_model(spec, generator=gen(1))
    train_local(other, x, y, config=config, generator=gen(3))

    # Assert
    np.testing.assert_array_equal(vectors[0], vectors[1])
    assert not np.array_equal(vectors[0], model_to_vector(other))
    assert torch.equal(before, torch.get_rng_state())


def test_train_local_runs_exactly_local_epochs_and_sets_offset() -> None:
    # Arrange
    x, y = matrix(500, 1)
    model = build_model(ModelSpec(kind="lr", n_features=6), generator=gen())

    # Act
    report = train_local(
        model, x, y, config=TrainConfig(local_epochs=3), generator=gen(), pos_weight=4.0
    )

    # Assert
    assert report.epochs == 3 and len(report.train_losses) == 3
    assert report.n_examples == 500
    assert report.pos_weight == 4.0
    assert get_logit_offset(model) == pytest.approx(-math.log(4.0))
    assert report.train_losses[-1] < report.train_losses[0]


def test_train_local_rejects_bad_inputs() -> None:
    model = build_model(ModelSpec(kind="lr", n_features=6), generator=gen())
    x, y = matrix(50, 0)
    config = TrainConfig()
    with pytest.raises(ModelError, match="shape"):
        train_local(model, x[:, :5], y, config=config, generator=gen())
    with pytest.raises(ModelError, match="0 and 1"):
        train_local(model, x, y + 1, config=config, generator=gen())
    x_nan = x.copy()
    x_nan[3, 2] = np.nan
    with pytest.raises(ModelError, match="finite"):
        train_local(model, x_nan, y, config=config, generator=gen())
    with pytest.raises(ConfigError, match="pos_weight"):
        train_local(model, x, y, config=config, generator=gen(), pos_weight=0.0)


@pytest.mark.parametrize("kind", ["lr", "mlp"])
def test_balanced_training_gives_calibrated_pd(kind: Literal["lr", "mlp"]) -> None:
    # Arrange: about 15 % bad.
    x, y = matrix(20_000, 2)
    x_test, y_test = matrix(20_000, 3)
    model = build_model(ModelSpec(kind=kind, n_features=6, hidden=(16, 8)), generator=gen())

    # Act
    train_with_early_stopping(model, x, y, config=default_config(kind), generator=gen())
    p = predict_proba(model, x_test)

    # Assert: the mean PD matches the bad rate; without the offset it would be near 0.5.
    assert 0.1 < y_test.mean() < 0.2
    assert p.mean() == pytest.approx(y_test.mean(), abs=0.02)
    assert metrics.auc(y_test, p) > 0.75
    assert metrics.brier(y_test, p) < metrics.brier(y_test, np.full(p.shape, y_test.mean()))


def test_early_stopping_restores_the_best_epoch() -> None:
    # Arrange: pure noise, so validation loss stops improving quickly.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 20)).astype(np.float32)
    y = rng.integers(0, 2, 400)
    model = build_model(ModelSpec(kind="mlp", n_features=20, hidden=(32,)), generator=gen())
    config = TrainConfig(learning_rate=0.05, max_epochs=200, patience=3, batch_size=32)

    # Act
    report = train_with_early_stopping(model, x, y, config=config, generator=gen())

    # Assert
    assert report.best_epoch is not None
    assert report.epochs == report.best_epoch + config.patience < config.max_epochs
    assert report.val_losses.index(min(report.val_losses)) + 1 == report.best_epoch
    assert report.n_examples == 360


def test_predict_proba_shape_and_range() -> None:
    x, _ = matrix(300, 0)
    model = build_model(ModelSpec(kind="mlp", n_features=6), generator=gen())
    p = predict_proba(model, x)
    assert p.shape == (300,) and p.dtype == np.float64
    assert ((p > 0) & (p < 1)).all()
    assert predict_proba(model, x[:0]).shape == (0,)


@pytest.mark.parametrize("kind", ["lr", "mlp"])
def test_train_centralized_on_synthetic_loans(kind: Literal["lr", "mlp"]) -> None:
    # Arrange
    train, test = loans(6000, 0), loans(3000, 1)

    # Act
    result = train_centralized(
        train,
        test,
        SCHEMA,
        model_kind=kind,
        rng=np.random.default_rng(0),
    )

    # Assert
    assert result.auc > 0.7
    assert result.gini == pytest.approx(2 * result.auc - 1)
    assert 0 < result.ks < 1
    assert (result.n_train, result.n_test) == (6000, 3000)
    assert result.spec.n_features == result.preprocessor.n_features_out == 3 + 3 + 1
    x_test = result.preprocessor.transform(test)
    p = predict_proba(result.model, x_test)
    assert metrics.auc(test["bad"], p) == pytest.approx(result.auc)


def test_train_centralized_is_reproducible_from_rng() -> None:
    train, test = loans(2000, 0), loans(1000, 1)
    a = train_centralized(train, test, SCHEMA, model_kind="mlp", rng=np.random.default_rng(5))
    b = train_centralized(train, test, SCHEMA, model_kind="mlp", rng=np.random.default_rng(5))
    np.testing.assert_array_equal(model_to_vector(a.model), model_to_vector(b.model))


def test_train_centralized_needs_a_target() -> None:
    train = loans(100, 0)
    with pytest.raises(SchemaError, match="target column bad"):
        train_centralized(
            train.drop(columns=["bad"]), train, SCHEMA, model_kind="lr", rng=np.random.default_rng()
        )
    passive = SCHEMA.model_copy(update={"target_column": None})
    with pytest.raises(SchemaError, match="must have a target"):
        train_centralized(train, train, passive, model_kind="lr", rng=np.random.default_rng())


TAIWAN = Path(os.environ.get("FEDRISK_DATA_DIR", Path(__file__).parents[5] / "shared" / "data"))


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize(("kind", "bar"), [("lr", 0.70), ("mlp", 0.76)])
def test_taiwan_centralized_reaches_reference_auc(kind: Literal["lr", "mlp"], bar: float) -> None:
    # Arrange
    if not (TAIWAN / "UCI_Credit_Card.csv.gz").exists():
        pytest.skip(f"UCI_Credit_Card.csv.gz not found in {TAIWAN} (set FEDRISK_DATA_DIR)")
    datasets = pytest.importorskip(
        "fedrisk.data.datasets", reason="fedrisk.data.datasets not available"
    )
    from sklearn.model_selection import train_test_split

    data = datasets.load_dataset("taiwan", data_dir=TAIWAN)
    target = data.schema.target_column
    train, test = train_test_split(
        data.frame, test_size=0.2, stratify=data.frame[target], random_state=42
    )

    # Act
    result = train_centralized(
        train, test, data.schema, model_kind=kind, rng=np.random.default_rng(0)
    )

    # Assert
    assert result.auc >= bar
    assert result.ks >= 0.3
