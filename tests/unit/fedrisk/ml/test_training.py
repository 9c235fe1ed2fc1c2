"""Tests for federated-round and early-stopped training, the trainers and calibrated PDs."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from fedrisk.data.splits import split_frame
from fedrisk.errors import ConfigError, ModelError, SchemaError
from fedrisk.ml import metrics
from fedrisk.ml.inference import NumpyScorer
from fedrisk.ml.models import ModelSpec, build_model, get_logit_offset, model_to_vector
from fedrisk.ml.training import (
    EarlyStopping,
    LocalEpochs,
    TrainConfig,
    default_config,
    logit_offset_for,
    pos_weight_for,
    train_centralized,
    train_local,
    train_with_early_stopping,
)
from tests.support.loans import LOANS_SCHEMA as SCHEMA
from tests.support.loans import loans


def matrix(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    z = -2.0 + x @ np.array([1.0, -0.8, 0.5, 0.0, 0.3, 0.0])
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return x, y


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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


def test_proximal_term_keeps_a_round_near_its_start() -> None:
    # Arrange: one party's data, the same start and shuffling, with and without FedProx.
    x, y = matrix(1000, 4)
    spec = ModelSpec(kind="mlp", n_features=6, hidden=(8, 4))
    start = model_to_vector(build_model(spec, generator=gen(1)))

    def drift(mu: float) -> float:
        model = build_model(spec, generator=gen(1))
        config = TrainConfig(local_epochs=3, batch_size=64, learning_rate=0.05, proximal_mu=mu)
        report = train_local(model, x, y, config=config, generator=gen(2))
        assert all(math.isfinite(v) for v in report.train_losses)
        return float(np.linalg.norm(model_to_vector(model) - start))

    # Act
    plain, prox, strong = drift(0.0), drift(1.0), drift(100.0)

    # Assert: the pull towards the start grows with mu.
    assert strong < prox < plain


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
    report = train_with_early_stopping(model, x, y, config=default_config(kind), generator=gen())
    p = NumpyScorer(model.spec, model_to_vector(model), logit_offset=report.logit_offset)
    p = p.predict_proba(x_test)

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


def test_early_stopping_validation_split_is_stratified_and_seeded() -> None:
    # Arrange: 50 bad rows in 1000; a 10 % validation split holds 5 of them and 95 good ones.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 6)).astype(np.float32)
    y = np.zeros(1000, dtype=np.int64)
    y[rng.choice(1000, 50, replace=False)] = 1
    config = TrainConfig(validation_fraction=0.1, max_epochs=2, patience=1)

    # Act
    reports = [
        train_with_early_stopping(
            build_model(ModelSpec(kind="lr", n_features=6), generator=gen()),
            x,
            y,
            config=config,
            generator=gen(seed),
        )
        for seed in (4, 4, 5)
    ]

    # Assert
    assert reports[0].n_examples == 900
    assert reports[0].val_losses == reports[1].val_losses
    assert reports[0].val_losses != reports[2].val_losses


@pytest.mark.parametrize("kind", ["lr", "mlp"])
def test_trainers_return_the_weights_their_training_function_leaves(
    kind: Literal["lr", "mlp"],
) -> None:
    # Arrange
    x, y = matrix(600, 4)
    spec = ModelSpec(kind=kind, n_features=6, hidden=(8,))
    config = TrainConfig(local_epochs=2, max_epochs=4, patience=2)
    start = model_to_vector(build_model(spec, generator=gen(9)))

    # Act
    local, local_report = LocalEpochs(config, generator=gen(1), pos_weight=3.0).train(
        spec, x, y, weights=start
    )
    early, early_report = EarlyStopping(config, rng=np.random.default_rng(2)).train(
        spec, x, y, weights=None
    )

    # Assert: the same training, called directly, gives the same vectors
    twin = build_model(spec, generator=gen(9))
    train_local(twin, x, y, config=config, generator=gen(1), pos_weight=3.0)
    np.testing.assert_array_equal(local, model_to_vector(twin))
    assert local_report.logit_offset == pytest.approx(-math.log(3.0))
    seed = int(np.random.default_rng(2).integers(0, 2**63 - 1))
    generator = gen(seed)
    twin = build_model(spec, generator=generator)
    train_with_early_stopping(twin, x, y, config=config, generator=generator)
    np.testing.assert_array_equal(early, model_to_vector(twin))
    assert early_report.best_epoch is not None


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
    pipeline = result.pipeline
    assert pipeline.spec_.n_features == pipeline.preprocessor_.n_features_out == 3 + 3 + 1
    assert pipeline.report_ is not None and pipeline.report_.best_epoch is not None
    assert metrics.auc(test["bad"], pipeline.predict_proba(test)) == result.auc


def test_train_centralized_is_reproducible_from_rng() -> None:
    train, test = loans(2000, 0), loans(1000, 1)
    a = train_centralized(train, test, SCHEMA, model_kind="mlp", rng=np.random.default_rng(5))
    b = train_centralized(train, test, SCHEMA, model_kind="mlp", rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a.pipeline.weights_, b.pipeline.weights_)
    assert a.auc == b.auc


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
    data = datasets.load_dataset("taiwan", data_dir=TAIWAN)
    target = data.schema.target_column
    assert target is not None
    train, test = split_frame(data.frame, target=target, rng=np.random.default_rng(42))

    # Act
    result = train_centralized(
        train, test, data.schema, model_kind=kind, rng=np.random.default_rng(0)
    )

    # Assert
    assert result.auc >= bar
    assert result.ks >= 0.3
