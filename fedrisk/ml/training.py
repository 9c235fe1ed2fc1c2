"""Training of risk models: one federated round at a party, early-stopped baselines, calibrated PDs.

The two ways to train are :class:`LocalEpochs` (one federated round) and :class:`EarlyStopping`
(baselines); both are :class:`fedrisk.ml.pipeline.Trainer` objects that a
:class:`fedrisk.ml.pipeline.RiskPipeline` is given to fit with.

Class imbalance and calibration
-------------------------------
Defaults are rare, so training weights the bad class by ``pos_weight`` (``"balanced"``:
``(1 - pi) / pi`` for a bad rate ``pi``). Weighting shifts the optimum of the loss by exactly
``log(pos_weight)`` on the logit scale, so the calibrated log-odds of default are
``logit + logit_offset`` with ``logit_offset = -log(pos_weight)``; for ``"balanced"`` that is
``logit(pi)``. :class:`fedrisk.ml.inference.NumpyScorer` (behind every
:class:`fedrisk.ml.pipeline.RiskPipeline`) adds the offset.

In a federated run every party must weight with the same, global ``pos_weight``: compute the
global bad rate from summed counts (:attr:`fedrisk.ml.features.FeatureStats.positive_rate` of the
merged statistics), pass ``pos_weight_for(rate)`` to :func:`train_local` at every party, and
store ``logit_offset_for(rate)`` with the released model. Local rates would give each party a
different prior shift, and no single offset would undo their average.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from fedrisk.data.schema import DatasetSchema
from fedrisk.data.splits import stratified_split
from fedrisk.errors import ConfigError, ModelError
from fedrisk.ml import metrics
from fedrisk.ml.inference import logit_offset_for, pos_weight_for
from fedrisk.ml.kinds import ModelKind, network_kind
from fedrisk.ml.models import (
    ModelSpec,
    RiskModel,
    build_model,
    load_vector,
    model_to_vector,
    set_logit_offset,
)
from fedrisk.ml.pipeline import FeatureEncoder, RiskPipeline, TrainReport, target_values
from fedrisk.ml.woe import BinningConfig, fit_woe_encoder

__all__ = [
    "CentralResult",
    "EarlyStopping",
    "LocalEpochs",
    "TrainConfig",
    "TrainReport",
    "configure_torch",
    "default_config",
    "finish_round",
    "logit_offset_for",
    "make_optimizer",
    "pos_weight_for",
    "resolve_pos_weight",
    "train_centralized",
    "train_local",
    "train_with_early_stopping",
    "training_tensors",
]

FloatArray = npt.NDArray[np.float64]


class TrainConfig(BaseModel):
    """Optimisation settings shared by federated rounds and centralised baselines.

    ``local_epochs`` applies to :func:`train_local` (one federated round);
    ``max_epochs``, ``patience`` and ``validation_fraction`` to
    :func:`train_with_early_stopping`. ``momentum`` is used by SGD only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    local_epochs: int = Field(default=1, ge=1, le=1000)
    batch_size: int = Field(default=256, ge=1, le=10_000_000)
    learning_rate: float = Field(default=0.01, gt=0.0, le=10.0)
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    class_weight: Literal["balanced", "none"] = "balanced"
    max_epochs: int = Field(default=50, ge=1, le=10_000)
    patience: int = Field(default=5, ge=1, le=10_000)
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=0.9)
    proximal_mu: float = Field(default=0.0, ge=0.0, le=100.0)
    """FedProx (Li et al. 2020): :func:`train_local` adds ``μ/2 ‖w − w_start‖²`` to the loss, so
    a party's round cannot drift far from the global model it started from (0: plain FedAvg)."""

    @classmethod
    def for_model(cls, model_kind: ModelKind, **overrides: object) -> TrainConfig:
        """Defaults tuned for ``model_kind`` (see :func:`default_config`) with ``overrides``.

        Raises
        ------
        ConfigError
            If ``model_kind`` is unknown or an override is invalid.
        """
        base = default_config(model_kind).model_dump()
        try:
            return cls.model_validate({**base, **overrides})
        except ValidationError as e:
            raise ConfigError(f"train config overrides must be valid; {e}") from e

    @model_validator(mode="after")
    def _momentum_only_for_sgd(self) -> TrainConfig:
        if self.optimizer != "sgd" and self.momentum != 0.0:
            raise ValueError(f"momentum must be 0 unless optimizer is 'sgd'; got {self.momentum}")
        return self


def default_config(model_kind: ModelKind) -> TrainConfig:
    """Settings tuned on UCI Taiwan (24k rows) that also suit smaller credit datasets.

    A scorecard trains its LR on WOE features with the LR settings.

    Raises
    ------
    ConfigError
        If ``model_kind`` is not ``"lr"``, ``"mlp"`` or ``"scorecard"``.
    """
    if model_kind in ("lr", "scorecard"):
        return TrainConfig(learning_rate=0.02, batch_size=256, weight_decay=1e-4)
    if model_kind == "mlp":
        return TrainConfig(learning_rate=0.003, batch_size=256, weight_decay=1e-4, patience=6)
    raise ConfigError(f"model_kind must be 'lr', 'mlp' or 'scorecard'; got {model_kind!r}")


WEIGHT_DECAYS: dict[str, tuple[float, ...]] = {
    "lr": (0.0, 1e-3, 1e-2, 3e-2),
    "mlp": (0.0, 1e-4, 1e-3),
    "scorecard": (0.0, 1e-3, 1e-2),
}
"""The regularisation a tuned central baseline chooses from, on its validation split."""


def configure_torch(*, threads: int = 1, deterministic: bool = True) -> None:
    """Set process-wide torch options; call once from an entry point, never from library code.

    Parameters
    ----------
    threads
        Intra-op threads (and inter-op threads, if torch has not started them yet). One is
        the right choice for these small models: on a busy 2-core machine, UCI Taiwan MLP
        training took 0.8 s with 1 thread and 17 s with 2 (OpenMP spin-waits between
        256-row batches). Results are bit-identical either way.
    deterministic
        Ask torch for deterministic kernels (warn-only where none exists); nearly free on CPU.

    Raises
    ------
    ConfigError
        If ``threads < 1``.
    """
    if threads < 1:
        raise ConfigError(f"threads must be >= 1; got {threads}")
    torch.set_num_threads(threads)
    # Only settable before the first parallel region; later calls keep the current pool.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


@dataclass(frozen=True)
class CentralResult:
    """A centralised (pooled-data) pipeline and its test metrics."""

    auc: float
    ks: float
    gini: float
    brier: float
    log_loss: float
    n_train: int
    n_test: int
    pipeline: RiskPipeline = field(repr=False)


def _as_tensors(
    model: nn.Module, x: npt.ArrayLike, y: npt.ArrayLike | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not isinstance(model, RiskModel):
        raise ModelError(f"model must be a RiskModel from build_model; got {type(model).__name__}")
    features = np.ascontiguousarray(x, dtype=np.float32)
    n_features = model.spec.n_features
    if features.ndim != 2 or features.shape[1] != n_features:
        raise ModelError(f"X must have shape (n, {n_features}); got {features.shape}")
    if not np.isfinite(features).all():
        raise ModelError("X must be finite; got NaN/inf (preprocess the data first)")
    if y is None:
        return torch.from_numpy(features), None
    labels = np.asarray(y)
    if labels.shape != (features.shape[0],):
        raise ModelError(f"y must have shape ({features.shape[0]},); got {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ModelError(f"y must contain only 0 and 1; got values {np.unique(labels)[:5]}")
    return torch.from_numpy(features), torch.from_numpy(labels.astype(np.float32))


def resolve_pos_weight(y: torch.Tensor, config: TrainConfig, pos_weight: float | None) -> float:
    """The bad class's weight: ``pos_weight`` if given, else from ``config`` and ``y``."""
    if pos_weight is not None:
        if not (math.isfinite(pos_weight) and pos_weight > 0):
            raise ConfigError(f"pos_weight must be a positive number; got {pos_weight}")
        return float(pos_weight)
    n = int(y.shape[0])
    n_pos = int(y.sum().item())
    if config.class_weight == "none" or n_pos in (0, n):
        # A party holding one class cannot estimate a balance; federated runs pass the global
        # weight explicitly.
        return 1.0
    return pos_weight_for(n_pos / n)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """A fresh optimiser of ``config``'s kind over ``model``'s parameters."""
    if config.optimizer == "adam":
        return torch.optim.Adam(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
    return torch.optim.SGD(
        model.parameters(),
        lr=config.learning_rate,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def _run_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.BCEWithLogitsLoss,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    generator: torch.Generator,
    proximal: tuple[float, list[torch.Tensor]] | None = None,
) -> float:
    model.train()
    n = int(x.shape[0])
    order = torch.randperm(n, generator=generator)
    total = 0.0
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]), y[idx])
        total += float(loss.detach()) * int(idx.shape[0])
        if proximal is not None:
            mu, anchor = proximal
            drift = sum(
                ((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True)
            )
            loss = loss + 0.5 * mu * drift
        loss.backward()
        optimizer.step()
    return total / n


def training_tensors(
    model: nn.Module,
    X: npt.ArrayLike,  # noqa: N803 - the usual name for a design matrix
    y: npt.ArrayLike,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked float32 features and 0/1 targets for training ``model``.

    Raises
    ------
    ModelError
        If the shapes do not fit the model, a feature is not finite or a target is not 0/1.
    """
    features, labels = _as_tensors(model, X, y)
    assert labels is not None
    return features, labels


def _eval_loss(
    model: nn.Module, loss_fn: nn.BCEWithLogitsLoss, x: torch.Tensor, y: torch.Tensor
) -> float:
    model.eval()
    with torch.no_grad():
        return float(loss_fn(model(x), y))


def train_local(
    model: nn.Module,
    X: npt.ArrayLike,  # noqa: N803 - the usual name for a design matrix
    y: npt.ArrayLike,
    *,
    config: TrainConfig,
    generator: torch.Generator,
    pos_weight: float | None = None,
) -> TrainReport:
    """Train ``model`` in place for exactly ``config.local_epochs`` epochs (one federated round).

    Parameters
    ----------
    model
        A model from :func:`fedrisk.ml.models.build_model`.
    X, y
        Preprocessed features (float32, no NaN) and 0/1 targets.
    config
        Optimiser settings; a fresh optimiser is made per call.
    generator
        Shuffling order; the same generator state gives bit-identical weights.
    pos_weight
        Weight of the bad class. Default: from ``config.class_weight`` and the local bad rate;
        federated runs pass the global one (see the module notes).

    Returns
    -------
    TrainReport
        Also sets the model's logit offset to ``-log(pos_weight)``.
    """
    features, labels = _as_tensors(model, X, y)
    assert labels is not None
    if features.shape[0] == 0:
        raise ModelError("X must have at least one row; got 0")
    weight = resolve_pos_weight(labels, config, pos_weight)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weight, dtype=torch.float32))
    optimizer = make_optimizer(model, config)
    proximal = (
        (config.proximal_mu, [p.detach().clone() for p in model.parameters()])
        if config.proximal_mu > 0
        else None
    )
    losses = [
        _run_epoch(
            model,
            optimizer,
            loss_fn,
            features,
            labels,
            batch_size=config.batch_size,
            generator=generator,
            proximal=proximal,
        )
        for _ in range(config.local_epochs)
    ]
    return finish_round(model, losses, n_examples=int(features.shape[0]), pos_weight=weight)


def finish_round(
    model: nn.Module, losses: Sequence[float], *, n_examples: int, pos_weight: float
) -> TrainReport:
    """End a round's training: eval mode, the logit offset ``-log(pos_weight)``, its report."""
    model.eval()
    offset = -math.log(pos_weight)
    set_logit_offset(model, offset)
    return TrainReport(
        epochs=len(losses),
        train_losses=tuple(losses),
        n_examples=n_examples,
        pos_weight=pos_weight,
        logit_offset=offset,
    )


def train_with_early_stopping(
    model: nn.Module,
    X: npt.ArrayLike,  # noqa: N803 - the usual name for a design matrix
    y: npt.ArrayLike,
    *,
    config: TrainConfig,
    generator: torch.Generator,
    pos_weight: float | None = None,
) -> TrainReport:
    """Train ``model`` in place until the validation loss stops improving (baselines).

    A stratified ``config.validation_fraction`` of the rows is held out
    (:func:`fedrisk.data.splits.stratified_split`, seeded from ``generator``); training stops
    after ``config.patience`` epochs without a lower weighted validation loss, or at
    ``config.max_epochs``, and the best epoch's weights are restored.

    Raises
    ------
    ModelError
        If there are fewer than 2 rows or the inputs are malformed.
    """
    features, labels = _as_tensors(model, X, y)
    assert labels is not None
    if features.shape[0] < 2:
        raise ModelError(f"X must have at least 2 rows for a validation split; got {len(labels)}")
    weight = resolve_pos_weight(labels, config, pos_weight)
    # The split draws from a numpy generator seeded by the caller's torch generator, so one
    # generator still decides the whole run.
    split_seed = int(torch.randint(0, 2**62, (), generator=generator))
    train_rows, val_rows = stratified_split(
        labels.numpy(),
        test_fraction=config.validation_fraction,
        rng=np.random.default_rng(split_seed),
    )
    train_idx, val_idx = torch.from_numpy(train_rows), torch.from_numpy(val_rows)
    x_train, y_train = features[train_idx], labels[train_idx]
    x_val, y_val = features[val_idx], labels[val_idx]
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weight, dtype=torch.float32))
    optimizer = make_optimizer(model, config)
    best_loss = math.inf
    best_epoch = 0
    best_state = copy.deepcopy(model.state_dict())
    train_losses: list[float] = []
    val_losses: list[float] = []
    for epoch in range(1, config.max_epochs + 1):
        train_losses.append(
            _run_epoch(
                model,
                optimizer,
                loss_fn,
                x_train,
                y_train,
                batch_size=config.batch_size,
                generator=generator,
            )
        )
        val_loss = _eval_loss(model, loss_fn, x_val, y_val)
        val_losses.append(val_loss)
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    offset = -math.log(weight)
    set_logit_offset(model, offset)
    return TrainReport(
        epochs=len(train_losses),
        train_losses=tuple(train_losses),
        n_examples=int(x_train.shape[0]),
        pos_weight=weight,
        logit_offset=offset,
        val_losses=tuple(val_losses),
        best_epoch=best_epoch,
    )


def _model_at(spec: ModelSpec, weights: npt.ArrayLike) -> RiskModel:
    """A model holding ``weights``; builds without drawing from any generator."""
    model = RiskModel(spec)
    load_vector(model, weights)
    return model


@dataclass(frozen=True, eq=False)
class EarlyStopping:
    """Trainer of baselines: :func:`train_with_early_stopping`, initialised from ``rng``.

    Each :meth:`train` call draws one torch seed from ``rng``; it seeds the initial weights,
    the validation split and the shuffling.
    """

    config: TrainConfig
    rng: np.random.Generator
    pos_weight: float | None = None

    def train(
        self,
        spec: ModelSpec,
        x: npt.NDArray[np.float32],
        y: npt.NDArray[np.int64],
        *,
        weights: FloatArray | None,
    ) -> tuple[FloatArray, TrainReport]:
        """Train from ``weights`` (fresh when None) until validation loss stops improving."""
        generator = torch.Generator().manual_seed(int(self.rng.integers(0, 2**63 - 1)))
        model = (
            build_model(spec, generator=generator) if weights is None else _model_at(spec, weights)
        )
        report = train_with_early_stopping(
            model, x, y, config=self.config, generator=generator, pos_weight=self.pos_weight
        )
        return model_to_vector(model), report


@dataclass(frozen=True, eq=False)
class LocalEpochs:
    """Trainer of one federated round: :func:`train_local` for ``config.local_epochs`` epochs.

    ``generator`` shuffles the rows (and initialises the model when no weights are given);
    federated parties pass the global ``pos_weight`` (see the module notes).
    """

    config: TrainConfig
    generator: torch.Generator
    pos_weight: float | None = None

    def train(
        self,
        spec: ModelSpec,
        x: npt.NDArray[np.float32],
        y: npt.NDArray[np.int64],
        *,
        weights: FloatArray | None,
    ) -> tuple[FloatArray, TrainReport]:
        """Train ``config.local_epochs`` epochs from ``weights`` (fresh when None)."""
        if weights is None:
            model = build_model(spec, generator=self.generator)
        else:
            model = _model_at(spec, weights)
        report = self.fit_model(model, x, y)
        return model_to_vector(model), report

    def fit_model(
        self, model: RiskModel, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]
    ) -> TrainReport:
        """The round's training of ``model`` in place (:func:`train_local`); subclasses such as
        :class:`fedrisk.ml.dp_sgd.DpSgdEpochs` train it another way."""
        return train_local(
            model, x, y, config=self.config, generator=self.generator, pos_weight=self.pos_weight
        )


def train_centralized(
    train_frame: pd.DataFrame,
    test_frame: pd.DataFrame,
    schema: DatasetSchema,
    *,
    model_kind: ModelKind,
    config: TrainConfig | None = None,
    rng: np.random.Generator,
    hidden: tuple[int, ...] = (64, 32),
    binning: Literal["none", "quantile"] = "none",
    bin_features: Sequence[str] | None = None,
    weight_decays: Sequence[float] | None = None,
    woe_config: BinningConfig | None = None,
) -> CentralResult:
    """Fit a :class:`~fedrisk.ml.pipeline.RiskPipeline` on pooled data, then score the test frame.

    Parameters
    ----------
    train_frame, test_frame
        Rows with the schema's features and target.
    schema
        Dataset schema.
    model_kind
        ``"lr"``, ``"mlp"`` or ``"scorecard"`` (WOE binning from the two statistics passes of
        :func:`fedrisk.ml.woe.fit_woe_encoder`, then an LR on the WOE features).
    config
        Training settings; default :func:`default_config` for ``model_kind``.
    rng
        Seeds the torch generator for initialisation, validation split and shuffling.
    hidden
        MLP hidden widths.
    binning, bin_features
        Passed to :class:`fedrisk.ml.features.Preprocessor` (not used by a scorecard).
    weight_decays
        Tune the regularisation: fit once per weight decay, every fit early-stopped on the same
        validation split from the same start, and keep the fit with the lowest validation loss.
        None trains once with ``config.weight_decay``. :data:`WEIGHT_DECAYS` holds the grids the
        tuned baselines use.
    woe_config
        The scorecard's binning settings.

    Raises
    ------
    SchemaError
        If the schema has no target or a frame lacks columns or has non-0/1 targets.
    """
    cfg = default_config(model_kind) if config is None else config
    # Both checked before training, so a bad test frame fails at once, not after the fit.
    target_values(train_frame, schema, source="train_frame")
    y_test = target_values(test_frame, schema, source="test_frame")
    encoder: FeatureEncoder | None = (
        fit_woe_encoder(train_frame, schema, woe_config) if model_kind == "scorecard" else None
    )
    # One seed for every tuning candidate: the same validation rows, initialisation and
    # shuffling, so the candidates differ only in their regularisation. A single fit draws from
    # ``rng`` itself, as it always did, so untuned results do not move.
    seed = None if weight_decays is None else int(rng.integers(0, 2**63 - 1))
    best: RiskPipeline | None = None
    best_loss = math.inf
    for decay in (cfg.weight_decay,) if weight_decays is None else weight_decays:
        trainer = EarlyStopping(
            cfg.model_copy(update={"weight_decay": decay}),
            rng=rng if seed is None else np.random.default_rng(seed),
        )
        pipeline = _fit_central(
            train_frame,
            schema,
            model_kind=model_kind,
            encoder=encoder,
            trainer=trainer,
            hidden=hidden,
            binning=binning,
            bin_features=bin_features,
        )
        report = pipeline.report_
        loss = min(report.val_losses) if report is not None and report.val_losses else math.inf
        if best is None or loss < best_loss:
            best, best_loss = pipeline, loss
    assert best is not None
    p_test = best.predict_proba(test_frame)
    return CentralResult(
        auc=metrics.auc(y_test, p_test),
        ks=metrics.ks(y_test, p_test),
        gini=metrics.gini(y_test, p_test),
        brier=metrics.brier(y_test, p_test),
        log_loss=metrics.log_loss(y_test, p_test),
        n_train=len(train_frame),
        n_test=int(y_test.shape[0]),
        pipeline=best,
    )


def _fit_central(
    frame: pd.DataFrame,
    schema: DatasetSchema,
    *,
    model_kind: ModelKind,
    encoder: FeatureEncoder | None,
    trainer: EarlyStopping,
    hidden: tuple[int, ...],
    binning: Literal["none", "quantile"],
    bin_features: Sequence[str] | None,
) -> RiskPipeline:
    if encoder is None:
        return RiskPipeline(
            schema,
            model_kind=network_kind(model_kind),
            hidden=hidden,
            binning=binning,
            bin_features=bin_features,
            trainer=trainer,
        ).fit(frame)
    # A scorecard's LR starts at zero, as build_model starts every LR.
    spec = ModelSpec(kind="lr", n_features=encoder.n_features_out)
    start = np.zeros(encoder.n_features_out + 1)
    return RiskPipeline.from_fitted(
        encoder, spec, start, logit_offset=0.0, trainer=trainer
    ).partial_fit(frame)
