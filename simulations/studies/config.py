"""Which cells a study runs: partition kinds, the study presets and the key of each cell."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from fedrisk.errors import ConfigError
from fedrisk.ml.kinds import ModelKind
from simulations.scenarios import SCENARIOS, Scenario

_Preset = TypeVar("_Preset", bound=BaseModel)

PartitionKind = Literal["iid", "label", "feature", "quantity"]

PARTITION_KINDS: tuple[PartitionKind, ...] = ("iid", "label", "feature", "quantity")
PARTITION_LABELS: dict[str, str] = {
    "iid": "IID",
    "label": "label skew",
    "feature": "feature skew",
    "quantity": "quantity skew",
}
SMALL_LENDER_SHARE = 0.05
"""A party with at most this share of all rows counts as a small lender (cold start)."""
TARGET_GAP = 0.01
"""The federated encrypted model should be within this AUC of the centralized one."""


class StudyConfig(BaseModel):
    """Which cells a study runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str
    tasks: tuple[str, ...] = Field(min_length=1)
    partitions: tuple[PartitionKind, ...] = Field(min_length=1)
    models: tuple[ModelKind, ...] = Field(min_length=1)
    seeds: tuple[int, ...] = Field(min_length=1)
    plaintext_seeds: tuple[int, ...] = ()
    """Seeds that also run the plaintext (INSECURE) federation."""
    dirichlet_alpha: float = Field(default=0.3, gt=0.0)
    rounds: int | None = Field(default=None, ge=1)
    """Override every scenario's rounds (tests); None keeps each scenario's own."""
    trees: int | None = Field(default=None, ge=1, le=2000)
    """Override the gbdt tree budget (tests); None keeps the run config's default."""

    def wants_plaintext(self, model: ModelKind, seed: int) -> bool:
        """Whether the cell also runs the plaintext federation.

        Never for ``gbdt``: its histograms are sums of integers that CKKS returns exactly, so
        the encrypted run grows the plaintext run's trees node for node (tested), and a second
        multi-minute boosting run would measure nothing.
        """
        return seed in self.plaintext_seeds and model != "gbdt"


PRESETS: dict[str, StudyConfig] = {
    "smoke": StudyConfig(
        preset="smoke",
        tasks=("smoke-synthetic",),
        partitions=("quantity",),
        models=("lr",),
        seeds=(0,),
        plaintext_seeds=(0,),
        rounds=2,
    ),
    "full": StudyConfig(
        preset="full",
        tasks=tuple(SCENARIOS),
        partitions=PARTITION_KINDS,
        models=("lr", "mlp", "scorecard", "gbdt"),
        seeds=(0, 1, 2),
        plaintext_seeds=(0,),
    ),
}
"""``smoke``: synthetic, 3 parties, 2 rounds, 1 seed, LR (about 2 minutes, for tests).
``full``: the issue's matrix, 4 tasks × 4 partitions × 4 models × 3 seeds = 192 cells plus
48 plaintext runs (none for gbdt, whose encrypted trees are the plaintext ones); hours, so run
it in the background, it resumes)."""


def get_preset(name: str) -> StudyConfig:
    """The study preset ``name``.

    Raises
    ------
    ConfigError
        If there is no such preset.
    """
    return preset_named(PRESETS, name, what="preset")


def preset_named(presets: dict[str, _Preset], name: str, *, what: str) -> _Preset:
    """``presets[name]``, or a :class:`ConfigError` listing the names (``what`` says which)."""
    try:
        return presets[name]
    except KeyError as e:
        raise ConfigError(f"{what} must be one of {', '.join(presets)}; got {name!r}") from e


def narrow(
    config: StudyConfig,
    *,
    tasks: Sequence[str] | None = None,
    partitions: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
) -> StudyConfig:
    """``config`` restricted to some of its tasks, partitions and models (None: all), in the
    preset's order; the results of a narrowed study resume under the full preset.

    Raises
    ------
    ConfigError
        If a name is not one of the preset's.
    """
    update: dict[str, tuple[str, ...]] = {}
    for field, chosen in (("tasks", tasks), ("partitions", partitions), ("models", models)):
        if chosen is None:
            continue
        offered: tuple[str, ...] = getattr(config, field)
        unknown = [c for c in chosen if c not in offered]
        if unknown or not chosen:
            raise ConfigError(
                f"{field} must be some of {', '.join(offered)}; got {', '.join(chosen) or 'none'}"
            )
        update[field] = tuple(c for c in offered if c in chosen)
    return StudyConfig.model_validate({**config.model_dump(), **update})


def partition_text(scenario: Scenario, kind: PartitionKind, *, alpha: float = 0.3) -> str:
    """The partition string (``parse_partition`` syntax) of ``kind`` for ``scenario``."""
    if kind == "iid":
        return "iid"
    if kind == "label":
        return f"dirichlet:{alpha:g}"
    if kind == "feature":
        return scenario.feature_skew
    if kind == "quantity":
        return "quantity"
    raise ConfigError(f"partition kind must be one of {', '.join(PARTITION_KINDS)}; got {kind!r}")


def cell_key(task: str, partition: str, model: str, seed: int) -> str:
    """The key of a cell in ``results.json``."""
    return f"{task}|{partition}|{model}|seed{seed}"
