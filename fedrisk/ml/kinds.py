"""The closed sets of the ML layer (model kinds, optimizers), importable without torch.

The config models (run config, simulation spec, study config) and the ``fedrisk`` CLI take their
allowed values from here, so a CLI can refuse ``--model foo`` before importing any trainer.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = ["MODEL_KINDS", "OPTIMIZERS", "ModelKind", "Optimizer"]

ModelKind = Literal["lr", "mlp", "gbdt"]
"""Logistic regression, a small ReLU multilayer perceptron, or histogram gradient-boosted trees."""

MODEL_KINDS: Final[tuple[ModelKind, ...]] = get_args(ModelKind)

Optimizer = Literal["default", "adam", "sgd"]
"""``default`` lets the model kind choose (see ``fedrisk.ml.training.TrainConfig.for_model``)."""

OPTIMIZERS: Final[tuple[Optimizer, ...]] = get_args(Optimizer)
