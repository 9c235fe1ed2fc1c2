"""Tests for the torch-free numpy scorer against the torch models it mirrors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedrisk.errors import ModelError
from fedrisk.ml.inference import NumpyScorer, sigmoid
from fedrisk.ml.models import (
    ModelSpec,
    build_model,
    count_parameters,
    get_logit_offset,
    load_vector,
    model_to_vector,
)
from fedrisk.ml.models import set_logit_offset as set_offset

SPECS = [
    ModelSpec(kind="lr", n_features=30),
    ModelSpec(kind="mlp", n_features=30),
    ModelSpec(kind="mlp", n_features=30, hidden=(16,)),
]


def random_model(spec: ModelSpec, seed: int = 0) -> torch.nn.Module:
    model = build_model(spec, generator=torch.Generator().manual_seed(seed))
    # LR starts at zero; give every model non-trivial weights.
    rng = np.random.default_rng(seed)
    load_vector(model, rng.normal(0, 0.4, count_parameters(spec)))
    return model


@pytest.mark.parametrize("spec", SPECS, ids=["lr", "mlp", "mlp16"])
def test_numpy_scorer_matches_the_float32_torch_model(spec: ModelSpec) -> None:
    # Arrange: initial-scale weights, as after training (LR gets small random ones).
    model = build_model(spec, generator=torch.Generator().manual_seed(0))
    if spec.kind == "lr":
        load_vector(model, np.random.default_rng(0).normal(0, 0.2, count_parameters(spec)))
    set_offset(model, -1.2)
    x = np.random.default_rng(1).normal(size=(10_000, 30)).astype(np.float32)

    # Act: torch scores in float32 as it trains; the offset is the one the model carries
    scorer = NumpyScorer(spec, model_to_vector(model), logit_offset=-1.2)
    p_numpy = scorer.predict_proba(x)
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(x)).to(torch.float64)
        p_torch = torch.sigmoid(logits + get_logit_offset(model)).numpy()

    # Assert
    assert p_numpy.shape == (10_000,) and p_numpy.dtype == np.float64
    np.testing.assert_allclose(p_numpy, p_torch, rtol=0, atol=1e-6)


@pytest.mark.parametrize("spec", SPECS, ids=["lr", "mlp", "mlp16"])
def test_numpy_scorer_is_the_same_function_as_the_torch_model(spec: ModelSpec) -> None:
    # Arrange: large weights and a float64 torch twin, so only the arithmetic order differs.
    model = random_model(spec)
    x = np.random.default_rng(1).normal(size=(10_000, 30))

    # Act
    scorer = NumpyScorer(spec, model_to_vector(model), logit_offset=0.7)
    with torch.no_grad():
        raw = model.double()(torch.from_numpy(x)).numpy()

    # Assert
    np.testing.assert_allclose(scorer.logits(x), raw + 0.7, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("spec", SPECS, ids=["lr", "mlp", "mlp16"])
def test_float32_scorer_agrees_with_float64(spec: ModelSpec) -> None:
    vector = model_to_vector(random_model(spec, seed=3))
    x = np.random.default_rng(2).normal(size=(5000, 30))
    p64 = NumpyScorer(spec, vector).predict_proba(x)
    p32 = NumpyScorer(spec, vector, dtype=np.float32).predict_proba(x)
    np.testing.assert_allclose(p32, p64, atol=1e-5)


def test_single_row_and_batch_agree() -> None:
    spec = SPECS[1]
    scorer = NumpyScorer(spec, model_to_vector(random_model(spec)))
    x = np.random.default_rng(5).normal(size=(3, 30))
    batch = scorer.predict_proba(x)
    singles = np.array([scorer.predict_proba(row)[0] for row in x])
    np.testing.assert_allclose(singles, batch, rtol=0, atol=1e-15)
    assert scorer.predict_proba(x[0]).shape == (1,)


def test_scorer_rejects_bad_vector_and_input() -> None:
    spec = SPECS[1]
    vector = model_to_vector(random_model(spec))
    with pytest.raises(ModelError, match="values"):
        NumpyScorer(spec, vector[:-1])
    with pytest.raises(ModelError, match="finite"):
        NumpyScorer(spec, np.where(np.arange(vector.size) == 0, np.inf, vector))
    with pytest.raises(ModelError, match="logit_offset"):
        NumpyScorer(spec, vector, logit_offset=float("nan"))
    with pytest.raises(ModelError, match=r"shape \(n, 30\)"):
        NumpyScorer(spec, vector).logits(np.zeros((2, 29)))


def test_sigmoid_is_stable_at_extremes() -> None:
    z = np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0, np.nan])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        p = sigmoid(z)
    np.testing.assert_allclose(p[:5], [0.0, 1 / (1 + np.exp(40.0)), 0.5, 1.0, 1.0], rtol=1e-12)
    assert np.isnan(p[5])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_a_large_batch_is_one_call_equal_to_scoring_each_row(dtype: type[np.floating]) -> None:
    # Arrange: the default MLP on a Taiwan-sized one-hot input; 10,001 rows span several of the
    # scorer's internal chunks and end in a partial one. float32 rows exercise the cast buffer.
    # (Throughput is measured by benchmarks/scoring.py, not asserted here.)
    spec = ModelSpec(kind="mlp", n_features=40)
    model = random_model(spec)
    scorer = NumpyScorer(spec, model_to_vector(model), logit_offset=-0.3)
    x = np.random.default_rng(0).normal(size=(10_001, 40)).astype(dtype)

    # Act
    batch = scorer.predict_proba(x)
    singles = np.array([scorer.predict_proba(row)[0] for row in x])
    with torch.no_grad():
        reference = torch.sigmoid(model.double()(torch.from_numpy(x.astype(np.float64))) - 0.3)

    # Assert
    assert batch.shape == (10_001,) and batch.dtype == np.float64
    np.testing.assert_allclose(batch, singles, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(batch, reference.numpy(), rtol=1e-9, atol=1e-12)
    assert np.array_equal(scorer.predict_proba(x[:0]), np.empty(0))
