"""The vertical run's hyper-parameters, taken from the federation's run config."""

from __future__ import annotations

from fedrisk.federation.run_config import FederationConfig
from fedrisk.ml.vertical import VerticalParams


def params_of(config: FederationConfig) -> VerticalParams:
    """``rounds`` are epochs; the rest maps one to one."""
    return VerticalParams(
        epochs=config.rounds,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate or VerticalParams().learning_rate,
        l2=config.l2,
        patience=config.patience,
        seed=config.seed,
    )
