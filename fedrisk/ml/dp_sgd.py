"""Sample-level DP-SGD for the torch risk models: per-row clipped gradients plus Gaussian noise.

Each step draws a Poisson sample of the rows (every row independently with rate ``q``), computes
every sampled row's gradient with ``torch.func`` (``vmap`` over ``grad`` of a functional call),
clips each to L2 norm ``C`` over all parameters, sums them, adds ``N(0, (σC)^2 I)`` and divides
by the expected batch size ``q n``; the optimiser (Adam or SGD, with its weight decay) then steps
on that noisy mean, which is post-processing. This is the algorithm of Abadi et al. (2016) as
Opacus implements it (``GradSampleModule`` + ``DPOptimizer`` with Poisson sampling); the
accountant for it lives in :mod:`fedrisk.ml.privacy`.

Notes
-----
Why not Opacus itself: Opacus 1.6.0 installs beside torch 2.13.0, but our models are plain stacks
of ``nn.Linear`` whose per-row gradients ``torch.func`` computes in a few lines, the run accounts
with ``dp-accounting`` (Flower's DP extra) in both DP modes, and a federated round is a fixed
number of steps that a ``DPDataLoader`` would add nothing to. One dependency fewer, the same
mechanism. The sampling and the noise must be unpredictable to everyone but the party: the
party passes generators seeded from secret entropy, never from the run's public seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedrisk.errors import ModelError
from fedrisk.ml.models import RiskModel
from fedrisk.ml.pipeline import TrainReport
from fedrisk.ml.training import (
    LocalEpochs,
    TrainConfig,
    finish_round,
    make_optimizer,
    resolve_pos_weight,
    training_tensors,
)

__all__ = ["DpSgdEpochs", "clipped_noisy_gradient", "train_local_dp"]


def clipped_noisy_gradient(
    model: nn.Module,
    loss_fn: nn.BCEWithLogitsLoss,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    clip_norm: float,
    noise_std: float,
    expected_batch: float,
    generator: torch.Generator,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One DP-SGD gradient: ``(sum_i clip(g_i) + N(0, noise_std^2 I)) / expected_batch``.

    Returns the gradient per parameter name and the per-row gradient norms before clipping.
    """
    params = {name: p.detach() for name, p in model.named_parameters()}

    def row_loss(
        weights: dict[str, torch.Tensor], row: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        logit = functional_call(model, weights, (row.unsqueeze(0),))
        loss: torch.Tensor = loss_fn(logit, target.unsqueeze(0))
        return loss

    if x.shape[0] > 0:
        per_row = vmap(grad(row_loss), in_dims=(None, 0, 0))(params, x, y)
        flat = torch.cat([g.reshape(g.shape[0], -1) for g in per_row.values()], dim=1)
        norms = flat.norm(dim=1)
        factors = (clip_norm / (norms + 1e-12)).clamp(max=1.0)
        summed = {name: torch.einsum("i,i...->...", factors, g) for name, g in per_row.items()}
    else:
        norms = torch.zeros(0)
        summed = {name: torch.zeros_like(p) for name, p in params.items()}
    noisy = {
        name: (g + noise_std * torch.randn(g.shape, generator=generator, dtype=g.dtype))
        / expected_batch
        for name, g in summed.items()
    }
    return noisy, norms


def train_local_dp(
    model: nn.Module,
    X: npt.ArrayLike,  # noqa: N803 - the usual name for a design matrix
    y: npt.ArrayLike,
    *,
    config: TrainConfig,
    clip_norm: float,
    noise_multiplier: float,
    sampling_rate: float,
    generator: torch.Generator,
    pos_weight: float | None = None,
) -> TrainReport:
    """Train ``model`` in place with DP-SGD for ``config.local_epochs * ceil(1/q)`` steps.

    Parameters
    ----------
    model
        A model from :func:`fedrisk.ml.models.build_model`.
    X, y
        Preprocessed features and 0/1 targets.
    config
        Optimiser settings (``batch_size`` is unused: the batch is a Poisson sample).
    clip_norm, noise_multiplier, sampling_rate
        ``C``, ``σ`` and ``q`` of the plan (:class:`fedrisk.ml.privacy.PrivacyPlan`).
    generator
        Draws the Poisson samples and the noise; secret at a party (see the module notes).
    pos_weight
        Weight of the bad class (the federation's global one).
    """
    features, labels = training_tensors(model, X, y)
    n = int(features.shape[0])
    if n == 0:
        raise ModelError("X must have at least one row; got 0")
    if not 0.0 < sampling_rate <= 1.0:
        raise ModelError(f"sampling_rate must be in (0, 1]; got {sampling_rate}")
    weight = resolve_pos_weight(labels, config, pos_weight)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weight, dtype=torch.float32))
    optimizer = make_optimizer(model, config)
    steps_per_epoch = math.ceil(1.0 / sampling_rate)
    expected_batch = max(sampling_rate * n, 1.0)
    model.train()
    losses: list[float] = []
    for _ in range(config.local_epochs):
        total = 0.0
        for _ in range(steps_per_epoch):
            chosen = torch.rand(n, generator=generator) < sampling_rate
            xb, yb = features[chosen], labels[chosen]
            noisy, _norms = clipped_noisy_gradient(
                model,
                loss_fn,
                xb,
                yb,
                clip_norm=clip_norm,
                noise_std=noise_multiplier * clip_norm,
                expected_batch=expected_batch,
                generator=generator,
            )
            optimizer.zero_grad(set_to_none=True)
            for name, p in model.named_parameters():
                p.grad = noisy[name]
            optimizer.step()
            if xb.shape[0]:
                with torch.no_grad():
                    total += float(loss_fn(model(xb), yb)) * int(xb.shape[0])
        losses.append(total / n)
    return finish_round(model, losses, n_examples=n, pos_weight=weight)


@dataclass(frozen=True, eq=False)
class DpSgdEpochs(LocalEpochs):
    """Trainer of one federated round with DP-SGD (:func:`train_local_dp`).

    ``generator`` draws the samples and the noise (and a fresh model when no weights are given);
    ``clip_norm``, ``noise_multiplier`` and ``sampling_rate`` come from the run's
    :class:`fedrisk.ml.privacy.PrivacyPlan`.
    """

    clip_norm: float = 1.0
    noise_multiplier: float = 1.0
    sampling_rate: float = 0.05

    def fit_model(
        self, model: RiskModel, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]
    ) -> TrainReport:
        """Train ``model`` in place for ``config.local_epochs`` DP-SGD epochs."""
        return train_local_dp(
            model,
            x,
            y,
            config=self.config,
            clip_norm=self.clip_norm,
            noise_multiplier=self.noise_multiplier,
            sampling_rate=self.sampling_rate,
            generator=self.generator,
            pos_weight=self.pos_weight,
        )
