"""What one simulated federated experiment runs: :class:`SimulationSpec`, checked when built.

It imports pydantic and the data layer's partition parser, no torch and no Flower, so
``fedrisk simulate`` builds the spec, and refuses every mistake, before it imports a trainer or
starts a SuperLink.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fedrisk.data.catalog import LOADABLE_DATASET_NAMES
from fedrisk.data.partitions import parse_partition
from fedrisk.decisions.stages import Stage
from fedrisk.federation.run_config import MIN_SECURE_PARTIES
from fedrisk.ml.kinds import ModelKind, Optimizer, ServerOptimizerKind
from fedrisk.ml.privacy import DpMode

__all__ = ["SimulationSpec"]


class SimulationSpec(BaseModel):
    """One federated experiment: data, split, model and federation settings.

    Notes
    -----
    ``allow_fewer_parties`` lifts the floor of 3 parties. With 2, each party can subtract its own
    update from the decrypted aggregate and read the other's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    parties: int = Field(ge=1)
    partition: str
    model: ModelKind
    rounds: int = Field(ge=1)
    seed: int = Field(default=0, ge=0)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    stage: Stage = "application"
    local_epochs: int = Field(default=1, ge=1)
    learning_rate: float = Field(default=0.0, ge=0.0)
    optimizer: Optimizer = "default"
    proximal_mu: float = Field(default=0.0, ge=0.0, le=100.0)
    server_optimizer: ServerOptimizerKind = "fedavg"
    server_learning_rate: float = Field(default=0.01, gt=0.0, le=10.0)
    release_party: str = "party_0"
    round_timeout: float = Field(default=600.0, gt=0.0)
    allow_fewer_parties: bool = False
    hidden: tuple[Annotated[int, Field(ge=1)], ...] = (64, 32)
    trees: int = Field(default=300, ge=1, le=2000)
    """The gbdt kind's tree budget."""
    dp_mode: DpMode = "off"
    """Differential privacy (:mod:`fedrisk.ml.privacy`); ``dp_epsilon`` is then the budget."""
    dp_epsilon: float = Field(default=0.0, ge=0.0)
    dp_delta: float = Field(default=1e-5, gt=0.0, lt=0.1)
    dp_clip_norm: float = Field(default=1.0, gt=0.0)
    dp_sampling_rate: float = Field(default=0.05, gt=0.0, le=1.0)
    tree_depth: int = Field(default=5, ge=1, le=10)
    tree_learning_rate: float = Field(default=0.1, gt=0.0, le=1.0)
    tree_lambda: float = Field(default=1.0, ge=0.0, le=1000.0)
    tree_bins: int = Field(default=255, ge=2, le=1000)
    tree_colsample: float = Field(default=1.0, gt=0.0, le=1.0)
    """The gbdt kind's depth, shrinkage, λ, bins per feature and per-tree column share."""

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if value not in LOADABLE_DATASET_NAMES:
            raise ValueError(
                f"dataset must be one of {', '.join(LOADABLE_DATASET_NAMES)}; got {value!r}"
            )
        return value

    @field_validator("partition")
    @classmethod
    def _partition_syntax(cls, value: str) -> str:
        parse_partition(value)  # its ConfigError (a ValueError) names the syntax
        return value

    @model_validator(mode="after")
    def _privacy_budget(self) -> Self:
        if self.dp_mode != "off" and self.dp_epsilon <= 0:
            raise ValueError(
                f"dp_epsilon must be a positive budget with DP ({self.dp_mode}); "
                f"got {self.dp_epsilon}"
            )
        return self

    @model_validator(mode="after")
    def _party_floor(self) -> Self:
        if self.parties < MIN_SECURE_PARTIES and not self.allow_fewer_parties:
            raise ValueError(
                f"parties must be at least {MIN_SECURE_PARTIES}; got {self.parties}. With fewer, "
                "each party can subtract its own update from the aggregate and recover another "
                "party's. Allow fewer parties (--allow-fewer-parties) to accept that."
            )
        return self
