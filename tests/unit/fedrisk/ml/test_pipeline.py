"""Tests for RiskPipeline, the one estimator type: its contract, fitting and scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedrisk.errors import ConfigError, ModelError, SchemaError
from fedrisk.ml import metrics
from fedrisk.ml.features import Preprocessor
from fedrisk.ml.inference import ModelSpec, NumpyScorer, count_parameters
from fedrisk.ml.models import build_model, initial_weights, model_to_vector
from fedrisk.ml.pipeline import RiskPipeline
from fedrisk.ml.training import EarlyStopping, LocalEpochs, TrainConfig, train_local
from tests.support.loans import LOANS_SCHEMA, loans

FAST = TrainConfig(max_epochs=6, patience=2, local_epochs=2)


def fitted(kind: str = "lr", *, seed: int = 0) -> RiskPipeline:
    trainer = EarlyStopping(FAST, rng=np.random.default_rng(seed))
    return RiskPipeline(LOANS_SCHEMA, model_kind=kind, hidden=(8,), trainer=trainer).fit(
        loans(2000, seed)
    )


def test_fit_returns_the_pipeline_and_learned_state_ends_in_underscore() -> None:
    # Arrange
    pipeline = RiskPipeline(LOANS_SCHEMA, trainer=EarlyStopping(FAST, rng=np.random.default_rng(0)))
    before = set(vars(pipeline))

    # Act
    result = pipeline.fit(loans(1500, 1))

    # Assert
    assert result is pipeline
    learned = set(vars(pipeline)) - before
    assert learned == {
        "preprocessor_",
        "spec_",
        "weights_",
        "logit_offset_",
        "scorer_",
        "report_",
    }
    assert pipeline.spec_.n_features == pipeline.preprocessor_.n_features_out == 7
    assert pipeline.weights_.shape == (count_parameters(pipeline.spec_),)
    assert not pipeline.weights_.flags.writeable
    assert pipeline.report_ is not None
    assert pipeline.logit_offset_ == pipeline.report_.logit_offset


def test_get_params_are_the_constructor_arguments_and_set_params_checks_names() -> None:
    # Arrange
    trainer = EarlyStopping(FAST, rng=np.random.default_rng(0))
    pipeline = RiskPipeline(
        LOANS_SCHEMA,
        model_kind="mlp",
        hidden=(4,),
        binning="quantile",
        bin_features=["utilisation"],
        trainer=trainer,
    )

    # Act
    params = pipeline.get_params()
    clone = RiskPipeline(**params)  # type: ignore[arg-type]
    pipeline.set_params(hidden=(6, 3))

    # Assert
    assert params == {
        "schema": LOANS_SCHEMA,
        "model_kind": "mlp",
        "hidden": (4,),
        "binning": "quantile",
        "bin_features": ("utilisation",),
        "trainer": trainer,
    }
    assert clone.get_params() == params
    assert pipeline.get_params()["hidden"] == (6, 3)
    with pytest.raises(ConfigError, match="unknown"):
        pipeline.set_params(learning_rate=0.1)
    with pytest.raises(ConfigError, match="model_kind"):
        RiskPipeline(LOANS_SCHEMA, model_kind="tree")  # type: ignore[arg-type]


def test_predict_proba_is_the_numpy_scorer_on_the_preprocessed_frame() -> None:
    # Arrange
    pipeline = fitted("mlp")
    test = loans(500, 7)

    # Act
    p = pipeline.predict_proba(test)
    z = pipeline.decision_function(test)

    # Assert
    reference = NumpyScorer(
        pipeline.spec_, pipeline.weights_, logit_offset=pipeline.logit_offset_
    ).predict_proba(pipeline.preprocessor_.transform(test))
    np.testing.assert_array_equal(p, reference)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-z)), rtol=1e-12)
    assert p.shape == (500,) and p.dtype == np.float64
    assert ((p > 0) & (p < 1)).all()
    assert pipeline.predict_proba(test.iloc[:0]).shape == (0,)
    records = test.drop(columns=["bad"]).to_dict("records")
    np.testing.assert_allclose(
        pipeline.transform_records(records), pipeline.transform(test), rtol=0, atol=1e-6
    )


def test_fit_gives_a_useful_calibrated_model_and_is_seeded() -> None:
    # Arrange
    test = loans(3000, 9)

    # Act
    a, b, c = fitted(seed=3), fitted(seed=3), fitted(seed=4)
    p = a.predict_proba(test)

    # Assert
    np.testing.assert_array_equal(a.weights_, b.weights_)
    assert not np.array_equal(a.weights_, c.weights_)
    assert metrics.auc(test["bad"], p) > 0.7
    assert p.mean() == pytest.approx(test["bad"].mean(), abs=0.03)


def test_partial_fit_is_one_federated_round_from_the_current_weights() -> None:
    # Arrange: a party's round, as clients.party builds it
    train = loans(800, 2)
    prep = Preprocessor(LOANS_SCHEMA).fit(train)
    spec = ModelSpec(kind="mlp", n_features=prep.n_features_out, hidden=(8,))
    start = initial_weights(spec, generator=torch.Generator().manual_seed(11))
    trainer = LocalEpochs(FAST, generator=torch.Generator().manual_seed(5), pos_weight=4.0)
    pipeline = RiskPipeline.from_fitted(prep, spec, start, logit_offset=0.0, trainer=trainer)

    # Act
    pipeline.partial_fit(train)

    # Assert: the same as train_local on the preprocessed rows
    twin = build_model(spec, generator=torch.Generator().manual_seed(11))
    train_local(
        twin,
        prep.transform(train),
        train["bad"].to_numpy(),
        config=FAST,
        generator=torch.Generator().manual_seed(5),
        pos_weight=4.0,
    )
    np.testing.assert_array_equal(pipeline.weights_, model_to_vector(twin))
    assert pipeline.preprocessor_ is prep
    assert pipeline.logit_offset_ == pytest.approx(-math.log(4.0))
    assert pipeline.report_ is not None and pipeline.report_.epochs == FAST.local_epochs


def test_from_fitted_checks_the_parts_fit_together() -> None:
    prep = Preprocessor(LOANS_SCHEMA).fit(loans(200, 0))
    spec = ModelSpec(kind="lr", n_features=prep.n_features_out)
    weights = np.zeros(count_parameters(spec))
    with pytest.raises(ModelError, match="n_features"):
        RiskPipeline.from_fitted(
            prep, ModelSpec(kind="lr", n_features=3), np.zeros(4), logit_offset=0.0
        )
    with pytest.raises(ModelError, match="values"):
        RiskPipeline.from_fitted(prep, spec, weights[:-1], logit_offset=0.0)
    with pytest.raises(ModelError, match="logit_offset"):
        RiskPipeline.from_fitted(prep, spec, weights, logit_offset=math.inf)
    pipeline = RiskPipeline.from_fitted(prep, spec, weights, logit_offset=0.0)
    assert pipeline.report_ is None and pipeline.trainer is None
    np.testing.assert_allclose(pipeline.predict_proba(loans(10, 1)), 0.5)


def test_misuse_is_refused_with_a_clear_error() -> None:
    unfitted = RiskPipeline(LOANS_SCHEMA)
    with pytest.raises(ConfigError, match="trainer must be set"):
        unfitted.fit(loans(100, 0))
    with pytest.raises(ConfigError, match="must be fitted"):
        unfitted.predict_proba(loans(10, 0))
    with pytest.raises(ConfigError, match="must be fitted"):
        unfitted.set_params(trainer=LocalEpochs(FAST, generator=torch.Generator())).partial_fit(
            loans(10, 0)
        )
    trained = RiskPipeline(LOANS_SCHEMA, trainer=EarlyStopping(FAST, rng=np.random.default_rng()))
    with pytest.raises(SchemaError, match="target column bad"):
        trained.fit(loans(100, 0).drop(columns=["bad"]))
