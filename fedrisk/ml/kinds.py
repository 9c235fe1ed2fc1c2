"""The closed sets of the ML layer (model kinds, optimizers), importable without torch.

The config models (run config, simulation spec, study config) and the ``fedrisk`` CLI take their
allowed values from here, so a CLI can refuse ``--model foo`` before importing any trainer.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = ["MODEL_KINDS", "OPTIMIZERS", "ModelKind", "NeuralKind", "Optimizer", "neural_kind"]

ModelKind = Literal["lr", "mlp", "gbdt"]
"""Logistic regression, a small ReLU multilayer perceptron, or histogram gradient-boosted trees."""

MODEL_KINDS: Final[tuple[ModelKind, ...]] = get_args(ModelKind)

NeuralKind = Literal["lr", "mlp"]
"""The kinds trained by gradient descent on a weight vector (torch trainers, FedAvg)."""


def neural_kind(kind: ModelKind) -> NeuralKind:
    """``kind`` as a weight-vector kind.

    Raises
    ------
    ValueError
        If ``kind`` is not trained as a weight vector (e.g. ``gbdt``).
    """
    if kind == "lr" or kind == "mlp":
        return kind
    raise ValueError(f"model kind must be one of {get_args(NeuralKind)} here; got {kind!r}")


Optimizer = Literal["default", "adam", "sgd"]
"""``default`` lets the model kind choose (see ``fedrisk.ml.training.TrainConfig.for_model``)."""

OPTIMIZERS: Final[tuple[Optimizer, ...]] = get_args(Optimizer)
