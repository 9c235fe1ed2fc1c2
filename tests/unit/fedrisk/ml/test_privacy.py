"""Differential privacy: the accountant meets the budget, over-budget plans are refused, updates
are clipped, and the noise has the calibrated scale."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest
import torch
from torch import nn

from fedrisk.data.datasets import load_dataset
from fedrisk.errors import ConfigError
from fedrisk.federation.run_config import parse_run_config
from fedrisk.ml.dp_sgd import clipped_noisy_gradient, train_local_dp
from fedrisk.ml.features import Preprocessor
from fedrisk.ml.metrics import auc
from fedrisk.ml.models import ModelSpec, build_model, model_to_vector
from fedrisk.ml.privacy import (
    PrivacyPlan,
    clip_update,
    noisy_client_update,
    party_epsilons,
    plan_privacy,
)
from fedrisk.ml.training import default_config, train_local
from fedrisk.release.artifact import PrivacyRecord


def _plan(mode: Literal["sample", "client"], **settings: Any) -> PrivacyPlan:
    """A plan with a budget of 3 at delta 1e-5 over 5 rounds, changed by ``settings``."""
    defaults: dict[str, Any] = {
        "epsilon": 3.0,
        "delta": 1e-5,
        "clip_norm": 1.0,
        "noise_multiplier": 0.0,
        "sampling_rate": 1.0,
        "rounds": 5,
        "local_epochs": 1,
        "min_parties": 3,
    }
    return plan_privacy(mode, **{**defaults, **settings})


@pytest.fixture(scope="module")
def design() -> tuple[np.ndarray, np.ndarray]:
    """A real preprocessed design matrix: 1,500 synthetic credit rows."""
    ds = load_dataset("synthetic", rng=np.random.default_rng(5), n_rows=1500)
    target = ds.schema.target_column
    assert target is not None
    prep = Preprocessor(ds.schema).fit(ds.frame)
    return prep.transform(ds.frame), ds.frame[target].to_numpy()


@pytest.mark.parametrize("mode", ["sample", "client"])
def test_a_run_asked_for_epsilon_3_spends_at_most_3(mode: str) -> None:
    config = parse_run_config(
        {"dp-mode": mode, "dp-epsilon": 3.0, "dp-delta": 1e-5, "rounds": 5}
    ).with_calibrated_noise()

    plan = config.privacy_plan()

    assert plan is not None
    assert config.dp_noise_multiplier == plan.noise_multiplier > 0
    assert 2.9 < plan.epsilon() <= 3.0
    # The parties re-check the calibrated run config: one accountant evaluation, same plan.
    assert parse_run_config(config.to_run_config()).privacy_plan() == plan
    # More rounds at the same noise spend more than the budget.
    assert plan.epsilon(10) > 3.0


def test_a_noise_multiplier_that_overspends_the_budget_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"dp-epsilon budget must cover the run; .*epsilon=\d"):
        parse_run_config(
            {"dp-mode": "sample", "dp-epsilon": 3.0, "dp-noise-multiplier": 0.6, "rounds": 5}
        )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"dp-mode": "sample"}, "dp-epsilon must be a positive budget"),
        ({"dp-mode": "client", "dp-epsilon": 1.0, "model": "gbdt"}, "dp-mode must be 'off'"),
        ({"dp-mode": "laplace", "dp-epsilon": 1.0}, "dp-mode must be"),
        (
            {"dp-mode": "sample", "dp-epsilon": 3.0, "proximal-mu": 0.1},
            "proximal-mu must be 0 with dp-mode 'sample'",
        ),
    ],
)
def test_incomplete_dp_settings_are_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_run_config(settings)


def test_per_party_accountants_count_the_rounds_each_party_trained() -> None:
    plan = _plan("sample", noise_multiplier=1.2, sampling_rate=0.05, rounds=3)
    history = [
        {"round": 1, "train_parties": ["a", "b", "c"]},
        {"round": 2, "train_parties": ["a", "b"]},
        {"round": 3, "train_parties": ["a", "b"]},
    ]

    spent = party_epsilons(plan, history, ["a", "b", "c"])
    record = PrivacyRecord.from_plan(plan, history=history, parties=["a", "b", "c"])

    assert spent["a"] == spent["b"] == pytest.approx(plan.epsilon()) and spent["a"] <= 3.0
    assert 0 < spent["c"] < spent["a"]
    assert record.epsilon == spent["a"]
    assert record.epsilon_per_party == spent
    assert (record.clip_norm, record.noise_multiplier, record.mode) == (
        1.0,
        plan.noise_multiplier,
        "sample",
    )


def test_client_updates_of_real_training_are_clipped(design) -> None:
    x, y = design
    spec = ModelSpec(kind="lr", n_features=x.shape[1])
    model = build_model(spec, generator=torch.Generator().manual_seed(0))
    start = model_to_vector(model)
    train_local(
        model, x, y, config=default_config("lr"), generator=torch.Generator().manual_seed(1)
    )
    trained = model_to_vector(model)
    raw = float(np.linalg.norm(trained - start))
    plan = PrivacyPlan("client", 3.0, 1e-5, raw / 4, 1e-9, 1.0, 5, 1, 3)

    clipped = clip_update(trained - start, plan.clip_norm)
    sent = noisy_client_update(start, trained, plan=plan, rng=np.random.default_rng(0))

    assert raw > 0
    assert np.linalg.norm(clipped) == pytest.approx(plan.clip_norm)
    np.testing.assert_allclose(clipped, (trained - start) / 4)  # the direction is kept
    assert np.linalg.norm(sent - start) == pytest.approx(plan.clip_norm, rel=1e-6)
    np.testing.assert_array_equal(clip_update(clipped / 2, plan.clip_norm), clipped / 2)


@pytest.mark.parametrize("kind", ["lr", "mlp"])
def test_dp_sgd_clips_every_real_row_gradient(design, kind: str) -> None:
    x, y = design
    spec = ModelSpec(kind=kind, n_features=x.shape[1], hidden=(16,) if kind == "mlp" else ())
    model = build_model(spec, generator=torch.Generator().manual_seed(0))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(3.0))
    xb, yb = torch.from_numpy(x[:64]), torch.from_numpy(y[:64].astype(np.float32))
    clip = 0.05

    grads, norms = clipped_noisy_gradient(
        model,
        loss_fn,
        xb,
        yb,
        clip_norm=clip,
        noise_std=0.0,
        expected_batch=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    one, _ = clipped_noisy_gradient(
        model,
        loss_fn,
        xb[:1],
        yb[:1],
        clip_norm=clip,
        noise_std=0.0,
        expected_batch=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    model.zero_grad()
    loss_fn(model(xb[:1]), yb[:1]).backward()
    reference = torch.cat([p.grad.reshape(-1) for p in model.parameters()])

    total = torch.cat([g.reshape(-1) for g in grads.values()])
    single = torch.cat([g.reshape(-1) for g in one.values()])
    assert (norms > clip).any()  # the bound bites on real rows
    assert float(total.norm()) <= 64 * clip * (1 + 1e-5)
    # One row: its own gradient (autograd's), scaled to the clip norm.
    assert float(single.norm()) == pytest.approx(min(clip, float(reference.norm())), rel=1e-4)
    torch.testing.assert_close(single, reference * min(1.0, clip / float(reference.norm())))


def test_dp_sgd_noise_has_the_calibrated_scale() -> None:
    spec = ModelSpec(kind="mlp", n_features=40, hidden=(64, 32))
    model = build_model(spec, generator=torch.Generator().manual_seed(0))
    sigma, clip, expected = 1.3, 0.7, 50.0

    grads, _ = clipped_noisy_gradient(
        model,
        nn.BCEWithLogitsLoss(),
        torch.zeros(0, 40),
        torch.zeros(0),
        clip_norm=clip,
        noise_std=sigma * clip,
        expected_batch=expected,
        generator=torch.Generator().manual_seed(7),
    )
    noise = torch.cat([g.reshape(-1) for g in grads.values()]).numpy()

    # 4,737 coordinates: the sample standard deviation is within 4 % at 4 standard errors.
    assert noise.size > 4000
    assert np.std(noise) == pytest.approx(sigma * clip / expected, rel=0.04)
    assert abs(np.mean(noise)) < 4 * sigma * clip / expected / np.sqrt(noise.size)


def test_client_noise_shares_add_up_to_the_calibrated_noise() -> None:
    plan = _plan("client", clip_norm=0.5, min_parties=4)
    start = np.zeros(20_000)
    rng = np.random.default_rng(3)

    shares = [noisy_client_update(start, start, plan=plan, rng=rng) for _ in range(4)]
    total = np.sum(shares, axis=0)

    assert np.std(shares[0]) == pytest.approx(plan.noise_multiplier * 0.5 / 2, rel=0.03)
    assert np.std(total) == pytest.approx(plan.noise_multiplier * 0.5, rel=0.03)


def test_dp_sgd_training_runs_and_learns(design) -> None:
    x, y = design
    spec = ModelSpec(kind="lr", n_features=x.shape[1])
    model = build_model(spec, generator=torch.Generator().manual_seed(0))

    report = train_local_dp(
        model,
        x,
        y,
        config=default_config("lr").model_copy(update={"local_epochs": 2}),
        clip_norm=1.0,
        noise_multiplier=1.0,
        sampling_rate=0.1,
        generator=torch.Generator().manual_seed(2),
    )

    with torch.no_grad():
        scores = model(torch.from_numpy(x)).numpy()
    assert report.epochs == 2 and report.n_examples == len(y)
    assert auc(y, scores) > 0.7
