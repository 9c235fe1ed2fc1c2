"""The federated run's configuration shared by parties and server, parsed once on entry."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from fedrisk.decisions.stages import Stage
from fedrisk.errors import ConfigError
from fedrisk.federation.identifiers import IdentifierKind
from fedrisk.ml.kinds import ModelKind, Optimizer, ServerOptimizerKind
from fedrisk.ml.privacy import DpMode, PrivacyPlan, plan_privacy

MIN_SECURE_PARTIES = 3

RunConfigValue = str | int | float | bool
"""What a Flower run-config value may be (a TOML scalar)."""


class FederationConfig(BaseModel):
    """Everything a federated run needs; keys mirror the FAB's ``[tool.flwr.app.config]``.

    Notes
    -----
    ``plaintext`` exists only to measure what encryption costs. It is never the default and the
    server logs a loud warning when it is set. ``allow_fewer_parties`` lifts the 3-party floor:
    with 2 parties each one can subtract its own update from the aggregate and read the other's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    run_id: str = Field(default="", alias="run-id")
    rounds: int = Field(default=3, ge=1, le=1000)
    model: ModelKind = "lr"
    hidden: tuple[Annotated[int, Field(ge=1)], ...] = (64, 32)
    seed: int = Field(default=0, ge=0)
    plaintext: bool = False
    min_parties: int = Field(default=MIN_SECURE_PARTIES, ge=1, alias="min-parties")
    allow_fewer_parties: bool = Field(default=False, alias="allow-fewer-parties")
    fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    round_timeout: float = Field(default=600.0, gt=0.0, alias="round-timeout")
    local_epochs: int = Field(default=1, ge=1, le=100, alias="local-epochs")
    batch_size: int = Field(default=256, ge=1, alias="batch-size")
    learning_rate: float = Field(default=0.0, ge=0.0, alias="learning-rate")
    # Adam restarts at every party each round; under strong label skew its averaged steps are
    # biased, and plain SGD (with the matching learning rate) tracks the centralized model.
    optimizer: Optimizer = "default"
    # Client drift under label skew: FedProx's proximal term at the parties, and FedAdam /
    # FedYogi steps that every party applies alike to the decrypted average.
    proximal_mu: float = Field(default=0.0, ge=0.0, le=100.0, alias="proximal-mu")
    server_optimizer: ServerOptimizerKind = Field(default="fedavg", alias="server-optimizer")
    server_learning_rate: float = Field(default=0.01, gt=0.0, le=10.0, alias="server-learning-rate")
    release_party: str = Field(default="party_0", alias="release-party")
    stage: Stage = "application"
    public_context: str = Field(default="", alias="public-context")
    server_dir: str = Field(default="", alias="server-dir")
    sim_workspace: str = Field(default="", alias="sim-workspace")
    resume: bool = False
    trees: int = Field(default=300, ge=1, le=2000)
    """The gbdt kind's tree budget (early stopping usually ends the run sooner)."""
    layout: Literal["horizontal", "vertical"] = "horizontal"
    """Horizontal: same columns, different customers. Vertical: one guest (labels) and hosts
    (features) with the same customers; ``rounds`` counts epochs (docs/vertical.md)."""
    l2: float = Field(default=1e-3, ge=0.0)
    patience: int = Field(default=3, ge=1, le=1000)
    """Vertical early stopping: epochs without a better validation AUC before stopping."""
    dp_mode: DpMode = Field(default="off", alias="dp-mode")
    """Differential privacy (:mod:`fedrisk.ml.privacy`): ``sample`` (DP-SGD at every party) or
    ``client`` (clipped updates with distributed Gaussian noise)."""
    dp_epsilon: float = Field(default=0.0, ge=0.0, le=1000.0, alias="dp-epsilon")
    """The run's ε budget at ``dp-delta``; must be positive when ``dp-mode`` is on."""
    dp_delta: float = Field(default=1e-5, gt=0.0, lt=0.1, alias="dp-delta")
    dp_clip_norm: float = Field(default=1.0, gt=0.0, le=1000.0, alias="dp-clip-norm")
    dp_noise_multiplier: float = Field(default=0.0, ge=0.0, le=1e4, alias="dp-noise-multiplier")
    """σ; 0 calibrates it to the budget over the planned rounds."""
    dp_sampling_rate: float = Field(default=0.05, gt=0.0, le=1.0, alias="dp-sampling-rate")
    """Poisson rate of a DP-SGD step (sample mode)."""
    masking: bool = True
    """Pairwise masks under the encryption (:mod:`secure_agg.masking`), with 3 or more parties:
    the coordinator colluding with a party then reads only sums. Off only to measure its cost."""
    mask_self: bool = Field(default=False, alias="mask-self")
    """Self masks besides the pairwise ones (SecAgg's double masking): a coordinator that
    falsely declares a live party dropped still reads noise. Off by default: it costs one
    ``query.unmask`` exchange per masked exchange (a deployed round ~1.7-2.3x, measured)."""
    mask_threshold: int = Field(default=0, ge=0, alias="mask-threshold")
    """Survivors needed to rebuild dropped parties' masks; 0 means ``ceil(2n/3)``."""
    tree_depth: int = Field(default=5, ge=1, le=10, alias="tree-depth")
    tree_learning_rate: float = Field(default=0.1, gt=0.0, le=1.0, alias="tree-learning-rate")
    tree_lambda: float = Field(default=1.0, ge=0.0, le=1000.0, alias="tree-lambda")
    tree_bins: int = Field(default=255, ge=2, le=1000, alias="tree-bins")
    tree_colsample: float = Field(default=1.0, gt=0.0, le=1.0, alias="tree-colsample")
    """The gbdt kind's depth, shrinkage, λ, bins per feature and per-tree column share."""
    vertical_guest: str = Field(default="", alias="vertical-guest")
    """Vertical: the label holder's party name; with ``vertical-id-column`` set, the run aligns
    the parties by private set intersection first (``server.coordinator.alignment``)."""
    vertical_id_column: str = Field(default="", alias="vertical-id-column")
    """Vertical: the identifier column every party's own table holds ("" = the parties hold
    already-aligned rows)."""
    vertical_id_kind: IdentifierKind = Field(default="opaque", alias="vertical-id-kind")
    vertical_parties: str = Field(
        default="", alias="vertical-parties", pattern=r"^([A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*)?$"
    )
    """Vertical: every party of the run, comma-separated ("" = unchecked, the simulation
    engine). A deployed pin fixes it, and each party refuses any other party named in a step."""

    @field_validator("hidden", mode="before")
    @classmethod
    def _parse_hidden(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return tuple(int(part) for part in value.split(",") if part.strip())
            except ValueError as e:
                raise ValueError(f"hidden must be comma-separated integers; got {value!r}") from e
        return value

    @field_serializer("hidden")
    def _hidden_text(self, hidden: tuple[int, ...]) -> str:
        return ",".join(str(width) for width in hidden)

    @model_validator(mode="after")
    def _check_party_floor(self) -> FederationConfig:
        if self.min_parties < MIN_SECURE_PARTIES and not self.allow_fewer_parties:
            raise ValueError(
                f"min-parties must be at least {MIN_SECURE_PARTIES}; got {self.min_parties}. "
                "With fewer than 3 parties each party can subtract its own update from the "
                "aggregate and recover another party's update. Set allow-fewer-parties=true "
                "only if every party accepts that."
            )
        return self

    @model_validator(mode="after")
    def _check_privacy_budget(self) -> FederationConfig:
        if self.dp_mode == "off":
            return self
        if self.dp_epsilon <= 0:
            raise ValueError(
                f"dp-epsilon must be a positive budget when dp-mode is {self.dp_mode!r}; "
                f"got {self.dp_epsilon}"
            )
        if self.model == "gbdt":
            raise ValueError(f"dp-mode must be 'off' for the gbdt model; got {self.dp_mode!r}")
        if self.dp_mode == "sample" and self.proximal_mu > 0:
            # DP-SGD's clipped per-row steps have no proximal term: refuse, never ignore it.
            raise ValueError(f"proximal-mu must be 0 with dp-mode 'sample'; got {self.proximal_mu}")
        self.privacy_plan()  # refuses a noise multiplier that spends more than the budget
        return self

    def privacy_plan(self) -> PrivacyPlan | None:
        """The run's DP plan (None without DP); computed once per configuration.

        Raises
        ------
        fedrisk.ml.privacy.PrivacyBudgetError
            If ``dp-noise-multiplier`` spends more than ``dp-epsilon`` over the planned rounds.
        """
        if self.dp_mode == "off":
            return None
        return _privacy_plan(
            self.dp_mode,
            epsilon=self.dp_epsilon,
            delta=self.dp_delta,
            clip_norm=self.dp_clip_norm,
            noise_multiplier=self.dp_noise_multiplier,
            sampling_rate=self.dp_sampling_rate,
            rounds=self.rounds,
            local_epochs=self.local_epochs,
            min_parties=self.min_parties,
        )

    def with_calibrated_noise(self) -> FederationConfig:
        """This configuration with ``dp-noise-multiplier`` set to the calibrated σ, so the parties
        check one accountant evaluation instead of calibrating again on every message."""
        plan = self.privacy_plan()
        if plan is None or self.dp_noise_multiplier > 0:
            return self
        return self.model_copy(update={"dp_noise_multiplier": plan.noise_multiplier})

    @property
    def vertical_roster(self) -> tuple[str, ...]:
        """The parties of a vertical run (``vertical-parties``); empty when unchecked."""
        return tuple(name for name in self.vertical_parties.split(",") if name)

    @property
    def masked(self) -> bool:
        """Whether the parties mask what they encrypt (encrypted runs with ``masking`` on)."""
        return self.masking and not self.plaintext

    @property
    def server_path(self) -> Path | None:
        """Directory where the server keeps progress, results and ciphertext checkpoints."""
        return Path(self.server_dir) if self.server_dir else None

    def to_run_config(self) -> dict[str, RunConfigValue]:
        """Flower's run config for this run: every key of the FAB's ``[tool.flwr.app.config]``.

        ``parse_run_config`` of the result gives this configuration back.
        """
        return self.model_dump(by_alias=True)


@functools.lru_cache(maxsize=16)
def _privacy_plan(mode: DpMode, **settings: Any) -> PrivacyPlan:
    """:func:`plan_privacy`, cached: the run config is parsed on every message of a run."""
    if mode == "off":
        raise ValueError("dp-mode 'off' has no privacy plan")
    return plan_privacy(mode, **settings)


def run_config_keys() -> list[str]:
    """Every run-config key, as the FAB and ``--run-config`` spell it."""
    return [info.alias or name for name, info in FederationConfig.model_fields.items()]


def parse_run_config(raw: Mapping[str, object]) -> FederationConfig:
    """Validate a run config once, on entry: Flower's ``context.run_config``, or settings keyed
    by run-config keys or field names.

    Raises
    ------
    ConfigError
        Listing every bad setting as ``<key> must be …; got …``.
    """
    try:
        return FederationConfig.model_validate(dict(raw))
    except ValidationError as e:
        problems = [_describe(error) for error in e.errors()]
        listed = (
            f" {problems[0]}" if len(problems) == 1 else "".join(f"\n  - {p}" for p in problems)
        )
        raise ConfigError(f"invalid run config:{listed}") from e


def _describe(error: ErrorDetails) -> str:
    """One problem as ``<key> must be …; got …``, named by its run-config key."""
    name = str(error["loc"][0]) if error["loc"] else "run config"
    field = FederationConfig.model_fields.get(name)
    key = (field.alias or name) if field is not None else name
    got = error.get("input")
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        return f"run-config keys must be among {run_config_keys()}; got {key!r}"
    if message.startswith("Value error, "):
        # The model's own validators already say "<key> must be …; got …".
        return message.removeprefix("Value error, ")
    expected = message.removeprefix("Input should be ")
    if expected.startswith("a valid "):
        expected = expected.split(",")[0]  # "a valid integer, unable to parse …": the first part
    return f"{key} must be {expected}; got {got!r}"
