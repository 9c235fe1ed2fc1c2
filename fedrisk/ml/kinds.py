"""The closed sets of the ML layer (model kinds, optimizers), importable without torch.

The config models (run config, simulation spec, study config) and the ``fedrisk`` CLI take their
allowed values from here, so a CLI can refuse ``--model foo`` before importing any trainer.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = [
    "MODEL_KINDS",
    "OPTIMIZERS",
    "SERVER_OPTIMIZERS",
    "ModelKind",
    "NetworkKind",
    "Optimizer",
    "ServerOptimizerKind",
    "network_kind",
    "statistics_passes",
]

ModelKind = Literal["lr", "mlp", "scorecard", "gbdt"]
"""Logistic regression, a small ReLU multilayer perceptron, a WOE points scorecard (an LR on
weight-of-evidence features, :mod:`fedrisk.ml.woe`), or histogram gradient-boosted trees
(:mod:`fedrisk.ml.trees`)."""

MODEL_KINDS: Final[tuple[ModelKind, ...]] = get_args(ModelKind)

NetworkKind = Literal["lr", "mlp"]
"""The network a model kind trains (``fedrisk.ml.inference.ModelSpec.kind``): the kinds
trained by gradient descent on a weight vector (torch trainers, FedAvg)."""


def network_kind(kind: ModelKind) -> NetworkKind:
    """The network ``kind`` trains: a scorecard is an LR on WOE features.

    Raises
    ------
    ValueError
        If ``kind`` trains no weight vector (``gbdt``).
    """
    if kind == "mlp":
        return "mlp"
    if kind == "lr" or kind == "scorecard":
        return "lr"
    raise ValueError(f"model kind must be one of lr, mlp, scorecard here; got {kind!r}")


def statistics_passes(kind: ModelKind) -> int:
    """Encrypted statistics exchanges before round 1: a scorecard needs a second one for the
    pooled second moments of its WOE features (see :mod:`fedrisk.ml.woe`)."""
    return 2 if kind == "scorecard" else 1


Optimizer = Literal["default", "adam", "sgd"]
"""``default`` lets the model kind choose (see ``fedrisk.ml.training.TrainConfig.for_model``)."""

OPTIMIZERS: Final[tuple[Optimizer, ...]] = get_args(Optimizer)


ServerOptimizerKind = Literal["fedavg", "fedadam", "fedyogi"]
"""How the decrypted average becomes the next global model: taken as it is (FedAvg), or as the
pseudo-gradient of an Adam or Yogi step that every party applies alike
(:mod:`fedrisk.ml.server_optimizers`)."""

SERVER_OPTIMIZERS: Final[tuple[ServerOptimizerKind, ...]] = get_args(ServerOptimizerKind)
