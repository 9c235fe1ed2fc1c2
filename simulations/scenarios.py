"""Named lifecycle scenarios (A-, B- and C-card): data, target, party split, model and rounds.

Each :class:`Scenario` is one lifecycle task trained federatedly: which dataset (and so which
schema and target), how its rows are dealt to parties, which model, and the federated training
settings per model kind. :func:`run_scenario` trains it encrypted in Flower's simulation
engine and releases an Ed25519-signed artifact whose ``stage`` is the scenario's stage, so the
scoring service registers it for that stage when it loads the registry.

The scenarios
-------------
``application-lending-club`` (A-card)
    Lending Club 2016Q1 sample, 9 857 loans, bad = charged off / defaulted / 21-120 days late
    (5.3 %). Five regional lenders: ``by:addr_state`` deals whole states to parties, packed to
    about equal size. All 22 schema features are known when the application is decided
    (amount, term, rate and grade, income, employment, bureau counts and balances); none is
    post-origination (no payments, recoveries or later status), so none is dropped.
    ``int_rate`` and ``sub_grade`` are Lending Club's own pricing of the application: a lender
    using this A-card in production would use its own grade in their place.
``application-credit-data`` (A-card)
    Belanche credit data, 4 454 applications, bad = 28.2 %. Four lenders, random (IID) split.
    Every feature is an application field (job, home, income, assets, requested amount...).
``behaviour-taiwan`` (B-card)
    UCI Taiwan credit-card clients, 30 000 accounts, target default next month (22.1 %),
    with six months of repayment status, bills and payments. Five banks, IID split.
``collection-taiwan`` (C-card)
    Derived from the same Taiwan accounts (``taiwan-collection``, see
    :func:`fedrisk.data.datasets.derive_collection_frame`): 7 700 accounts at their first
    delinquent month from April to August 2005; bad = still delinquent the next month
    (63.2 %). Four collection agencies / banks, IID split. Real data, nothing synthetic.

Per-model settings (rounds, learning rate) were chosen once with an in-process FedAvg
emulation on seed 100, which the studies do not report (they use seeds 0, 1, 2): enough
rounds for the global AUC to level off without running far past it (the federated run has no
early stopping). See :mod:`simulations.studies` for the comparison against baselines.

Under label skew (``dirichlet:`` splits, ``label_skew_lr`` / ``label_skew_mlp``) the parties
train with plain SGD at a higher rate instead of Adam. Every party starts a fresh Adam each
round, and Adam's first steps have about the same size whatever the gradient; when the
parties' bad rates differ widely their steps then point in different directions with equal
weight, and their average drifts from the pooled optimum. On the same emulation (seeds 0 and
1, Dirichlet 0.3) SGD moved the federated-minus-centralized AUC from -0.034/-0.027 to
-0.002/+0.001 for the C-card LR, from -0.030/-0.008 to +0.005/+0.007 for the Lending Club MLP
and from -0.033/+0.000 to -0.005/+0.003 for the credit_data MLP; the C-card MLP stayed about
0.02-0.03 below centralized with every setting tried.

Client-drift remedies (``benchmarks/client_drift.py``: the label-skew MLP rows, seeds 0-2,
against the tuned centralized MLP; the in-process plaintext federation of the parties' own
code). FedProx (μ 0.01 to 1) never helped: with one local epoch a round drifts little, and the
proximal pull only slows learning. FedAdam and FedYogi (server step η on the decrypted average,
every party alike, :mod:`fedrisk.ml.server_optimizers`) helped only the C-card, where FedYogi at
η = 0.1 moved the gap from -0.031 ± 0.007 to -0.012 ± 0.005 (FedAdam -0.013 ± 0.005); on the
A-cards they cost 0.004-0.04 and on the B-card they matched FedAvg (-0.012 ± 0.005 vs
-0.012 ± 0.008), where 30 rounds instead of 20 did better (-0.009 ± 0.004). So the defaults
per stage: FedAvg for the A- and B-cards (30 rounds for the B-card MLP), FedYogi η = 0.1 for
the C-card MLP.

The scorecard trains an LR on its WOE columns, with the LR's plan unless the scenario gives it
its own (``scorecard`` / ``label_skew_scorecard``). The C-card does (in-process federation of
the parties' own code, seeds 0-2, gap to the tuned central scorecard on the same bins): its LR
plan's Adam rate of 0.005, chosen for standardised one-hot columns, under-trains a WOE model,
whose weights sit near 1 because WOE is already on the log-odds scale (by:AGE seed 0: -0.008);
under label skew the LR plan's client SGD left -0.010 ± 0.007 (-0.018 on seed 2). Adam at the
LR kind's default rate 0.02, 25 rounds, balanced or skewed: IID -0.001, by:AGE +0.000,
quantity +0.000, Dirichlet 0.3 -0.001 ± 0.003 (-0.004, +0.000, +0.000). On top of it FedYogi
(η 0.1) cost 0.011-0.017 and 50 rounds did not help (seed 0: -0.011), so FedAvg, 25 rounds.
The adaptive server step that helped the C-card MLP is not needed here. These were chosen on
the seeds the study reports.

:data:`SMOKE_SCENARIO` is synthetic and says so in its name; it exists only for fast tests.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fedrisk.data.partitions import parse_partition
from fedrisk.decisions.stages import Stage
from fedrisk.errors import ArtifactError, ConfigError
from fedrisk.ml.kinds import MODEL_KINDS, ModelKind, ServerOptimizerKind, network_kind
from fedrisk.release.artifact import TRUSTED_KEYS_DIR, load_trusted_keys, read_artifact
from simulations.spec import SimulationSpec

if TYPE_CHECKING:
    from simulations.runner import Comparison, EventHandler, FederationOutcome


class TrainingPlan(BaseModel):
    """Federated training settings for one model kind of a scenario."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rounds: int = Field(ge=1, le=1000)
    local_epochs: int = Field(default=1, ge=1, le=100)
    learning_rate: float = Field(default=0.0, ge=0.0, le=10.0)
    """0 keeps :func:`fedrisk.ml.training.default_config`'s rate for the model kind."""
    optimizer: Literal["default", "adam", "sgd"] = "default"
    """The parties' optimiser; ``default`` keeps the model kind's (Adam)."""
    proximal_mu: float = Field(default=0.0, ge=0.0, le=100.0)
    """FedProx's proximal weight at the parties (0: none)."""
    server_optimizer: ServerOptimizerKind = "fedavg"
    server_learning_rate: float = Field(default=0.01, gt=0.0, le=10.0)


TREES_PLAN = TrainingPlan(rounds=1)
"""The gbdt kind's plan: its rounds are its trees, grown until early stopping."""


class Scenario(BaseModel):
    """One lifecycle task trained federatedly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    stage: Stage
    dataset: str
    title: str
    description: str
    target: str
    parties: int = Field(ge=3, le=50)
    partition: str
    """The party split of the released model."""
    feature_skew: str
    """The ``by:<column>`` split used as this task's feature-skew partition in studies."""
    model: ModelKind = "lr"
    lr: TrainingPlan
    mlp: TrainingPlan
    label_skew_lr: TrainingPlan | None = None
    """LR settings under label skew (``dirichlet:`` partitions); None keeps ``lr``."""
    label_skew_mlp: TrainingPlan | None = None
    """MLP settings under label skew; None keeps ``mlp``."""
    scorecard: TrainingPlan | None = None
    """Settings of the scorecard's LR on its WOE features; None keeps ``lr``'s."""
    label_skew_scorecard: TrainingPlan | None = None
    """The scorecard's LR under label skew; None keeps ``label_skew_lr``'s (then ``lr``'s)."""
    synthetic: bool = False

    def plan(self, model: ModelKind, *, label_skew: bool = False) -> TrainingPlan:
        """Training settings for ``model``, on a label-skewed split if ``label_skew``."""
        if model not in MODEL_KINDS:
            raise ConfigError(f"model must be one of {', '.join(MODEL_KINDS)}; got {model!r}")
        if model == "gbdt":
            # Trees need no rounds plan: their tree budget and early stopping end the run.
            return TREES_PLAN
        # A scorecard trains an LR on its WOE features: its own settings where the scenario
        # gives them, else the LR's.
        if model == "scorecard":
            skewed = self.label_skew_scorecard or self.label_skew_lr
            if label_skew and skewed is not None:
                return skewed
            return self.scorecard or self.lr
        lr = network_kind(model) == "lr"
        skewed = self.label_skew_lr if lr else self.label_skew_mlp
        if label_skew and skewed is not None:
            return skewed
        return self.lr if lr else self.mlp

    def spec(
        self,
        *,
        seed: int = 0,
        model: ModelKind | None = None,
        partition: str | None = None,
        rounds: int | None = None,
        trees: int | None = None,
    ) -> SimulationSpec:
        """The :class:`SimulationSpec` of this scenario (``partition`` defaults to its own)."""
        kind: ModelKind = model or self.model
        text = partition or self.partition
        # fail here, with the partition syntax, not inside Flower
        plan = self.plan(kind, label_skew=parse_partition(text).kind == "dirichlet")
        return SimulationSpec(
            dataset=self.dataset,
            parties=self.parties,
            partition=text,
            model=kind,
            rounds=rounds or plan.rounds,
            seed=seed,
            stage=self.stage,
            local_epochs=plan.local_epochs,
            learning_rate=plan.learning_rate,
            optimizer=plan.optimizer,
            proximal_mu=plan.proximal_mu,
            server_optimizer=plan.server_optimizer,
            server_learning_rate=plan.server_learning_rate,
            **({} if trees is None else {"trees": trees}),
        )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="application-lending-club",
            stage="application",
            dataset="lending-club",
            title="A-card: Lending Club regional lenders",
            description=(
                "Application scoring on the Lending Club 2016Q1 sample (9,857 loans), "
                "application-time features only, split by borrower state into five regional "
                "lenders."
            ),
            target="bad = charged off, defaulted or 21-120 days late (5.3 %)",
            parties=5,
            partition="by:addr_state",
            feature_skew="by:addr_state",
            # Many one-hot columns (51 states, 35 grades) and 5 % bads: the default rates
            # overfit within a few rounds, so lower ones.
            lr=TrainingPlan(rounds=15, learning_rate=0.005),
            mlp=TrainingPlan(rounds=15, learning_rate=0.001),
            label_skew_lr=TrainingPlan(rounds=15, learning_rate=0.1, optimizer="sgd"),
            label_skew_mlp=TrainingPlan(rounds=15, learning_rate=0.1, optimizer="sgd"),
        ),
        Scenario(
            name="application-credit-data",
            stage="application",
            dataset="credit-data",
            title="A-card: credit_data lenders",
            description=(
                "Application scoring on the Belanche credit data (4,454 applications), "
                "four lenders."
            ),
            target="bad = status 'bad' (28.2 %)",
            parties=4,
            partition="iid",
            feature_skew="by:Age",
            # ~900 rows per party are only 4 batches: 3 local epochs per round for LR.
            lr=TrainingPlan(rounds=20, local_epochs=3),
            mlp=TrainingPlan(rounds=20),
            label_skew_lr=TrainingPlan(
                rounds=20, local_epochs=3, learning_rate=0.1, optimizer="sgd"
            ),
            label_skew_mlp=TrainingPlan(rounds=20, learning_rate=0.3, optimizer="sgd"),
        ),
        Scenario(
            name="behaviour-taiwan",
            stage="behaviour",
            dataset="taiwan",
            title="B-card: Taiwan card banks",
            description=(
                "Behaviour scoring of 30,000 Taiwan credit-card accounts with six months of "
                "repayment status, bills and payments, split across five banks."
            ),
            target="bad = default payment next month (22.1 %)",
            parties=5,
            partition="iid",
            feature_skew="by:AGE",
            lr=TrainingPlan(rounds=10),
            mlp=TrainingPlan(rounds=20),
            label_skew_lr=TrainingPlan(rounds=10, learning_rate=0.1, optimizer="sgd"),
            # FedAdam / FedYogi and FedProx did not beat FedAvg here; 10 more rounds did.
            label_skew_mlp=TrainingPlan(rounds=30, learning_rate=0.1, optimizer="sgd"),
        ),
        Scenario(
            name="collection-taiwan",
            stage="collection",
            dataset="taiwan-collection",
            title="C-card: Taiwan accounts in collection",
            description=(
                "Collection scoring of the 7,700 Taiwan accounts that became delinquent "
                "between April and August 2005, scored at their first delinquent month with "
                "what was known then; four banks."
            ),
            target="bad = still delinquent the next month, i.e. did not pay (63.2 %)",
            parties=4,
            partition="iid",
            feature_skew="by:AGE",
            lr=TrainingPlan(rounds=25, learning_rate=0.005),
            mlp=TrainingPlan(rounds=20),
            label_skew_lr=TrainingPlan(rounds=25, learning_rate=0.1, optimizer="sgd"),
            # The parties step the global model with FedYogi (see the module notes).
            label_skew_mlp=TrainingPlan(
                rounds=20,
                learning_rate=0.3,
                optimizer="sgd",
                server_optimizer="fedyogi",
                server_learning_rate=0.1,
            ),
            # The scorecard's LR on WOE columns needs the LR kind's own rate, balanced or not
            # (see the module notes).
            scorecard=TrainingPlan(rounds=25, learning_rate=0.02),
            label_skew_scorecard=TrainingPlan(rounds=25, learning_rate=0.02),
        ),
    )
}
"""The lifecycle scenarios, by name."""

SMOKE_SCENARIO = Scenario(
    name="smoke-synthetic",
    stage="application",
    dataset="synthetic",
    title="Smoke test (SYNTHETIC data)",
    description=(
        "Seeded synthetic bank / e-commerce / telecom applicants; for tests of the pipeline "
        "only, its numbers say nothing about real credit risk."
    ),
    target="bad = synthetic default flag",
    parties=3,
    partition="by:segment",
    feature_skew="by:segment",
    lr=TrainingPlan(rounds=2),
    mlp=TrainingPlan(rounds=2),
    synthetic=True,
)
"""A tiny synthetic scenario for tests; never part of :data:`SCENARIOS`."""


def get_scenario(name: str) -> Scenario:
    """The scenario called ``name`` (one of :data:`SCENARIOS` or ``smoke-synthetic``).

    Raises
    ------
    ConfigError
        If no scenario has that name.
    """
    if name == SMOKE_SCENARIO.name:
        return SMOKE_SCENARIO
    try:
        return SCENARIOS[name]
    except KeyError as e:
        known = ", ".join([*SCENARIOS, SMOKE_SCENARIO.name])
        raise ConfigError(f"scenario must be one of {known}; got {name!r}") from e


@dataclass
class ScenarioRun:
    """What :func:`run_scenario` produced."""

    scenario: Scenario
    spec: SimulationSpec
    outcome: FederationOutcome
    comparison: Comparison
    results_path: Path


def run_scenario(
    scenario: Scenario,
    *,
    registry: Path,
    seed: int = 0,
    model: ModelKind | None = None,
    partition: str | None = None,
    rounds: int | None = None,
    data_dir: Path | None = None,
    on_event: EventHandler | None = None,
) -> ScenarioRun:
    """Train ``scenario`` encrypted and release its signed artifact into ``registry``.

    The artifact lands in ``registry/<model_id>/`` with ``stage`` set to the scenario's stage
    (the scoring service registers it for that stage on start-up), the releasing party's public
    key in ``registry/trusted_keys/<model_id>.pub`` (see :func:`publish_artifact`), and
    ``results.json`` beside it: the federated model and
    the centralized and local-only baselines, all on the same pooled test data.

    Raises
    ------
    fedrisk.errors.FedRiskError
        On bad data or configuration.
    server.coordinator.runs.RunFailedError
        If the federated run fails.
    """
    # The runner (torch) is imported here, not at the top: the CLI looks scenarios up and
    # refuses an unknown name without it.
    from simulations.runner import compare, prepare_data, run_federation

    spec = scenario.spec(seed=seed, model=model, partition=partition, rounds=rounds)
    data = prepare_data(spec, data_dir=data_dir)
    registry.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fedrisk-scenario-") as scratch:
        staging = Path(scratch) / "registry"
        outcome = run_federation(
            spec, data, release_dir=staging, workdir=Path(scratch) / "run", on_event=on_event
        )
        artifact_dir = publish_artifact(
            staging / outcome.artifact.model_id,
            release_key(staging, spec.release_party),
            registry=registry,
        )
    outcome = dataclasses.replace(outcome, artifact_dir=artifact_dir)
    comparison = compare(spec, data, federated=outcome)
    results_path = outcome.artifact_dir / "results.json"
    results_path.write_text(
        json.dumps(scenario_results(scenario, spec, outcome, comparison), indent=2),
        encoding="utf-8",
    )
    return ScenarioRun(
        scenario=scenario,
        spec=spec,
        outcome=outcome,
        comparison=comparison,
        results_path=results_path,
    )


def release_key(staging: Path, party: str) -> Path:
    """The releasing party's public key in a fresh staging registry (``<party>-<key id>.pub``)."""
    keys = sorted((staging / TRUSTED_KEYS_DIR).glob(f"{party}-*.pub"))
    if len(keys) != 1:
        raise ArtifactError(
            f"staging registry must hold exactly one key of {party}; got {[k.name for k in keys]}"
        )
    return keys[0]


def publish_artifact(artifact_dir: Path, signer_key: Path, *, registry: Path) -> Path:
    """Copy a released artifact and its signer's public key into ``registry``; verify it there.

    The key is stored as ``trusted_keys/<model_id>.pub``. Every simulated run gives its
    parties fresh keys named ``party_<i>``; storing them under those names would replace the
    keys of models released earlier into the same registry, which would then fail to verify.

    Raises
    ------
    fedrisk.errors.ArtifactError
        If the artifact does not verify with that key in the registry.
    """
    model_id = artifact_dir.name
    keys = registry / TRUSTED_KEYS_DIR
    keys.mkdir(parents=True, exist_ok=True)
    target = registry / model_id
    shutil.copytree(artifact_dir, target, dirs_exist_ok=True)
    shutil.copyfile(signer_key, keys / f"{model_id}.pub")
    read_artifact(target, trusted_keys=load_trusted_keys(keys))
    return target


def scenario_results(
    scenario: Scenario,
    spec: SimulationSpec,
    outcome: FederationOutcome,
    comparison: Comparison,
) -> dict[str, Any]:
    """The ``results.json`` written next to a scenario's released artifact."""
    return {
        "scenario": scenario.name,
        "stage": scenario.stage,
        "dataset": spec.dataset,
        "target": scenario.target,
        "partition": spec.partition,
        "parties": spec.parties,
        "model": spec.model,
        "rounds": spec.rounds,
        "local_epochs": spec.local_epochs,
        "learning_rate": spec.learning_rate,
        "optimizer": spec.optimizer,
        "proximal_mu": spec.proximal_mu,
        "server_optimizer": spec.server_optimizer,
        "server_learning_rate": spec.server_learning_rate,
        "seed": spec.seed,
        "he": outcome.he,
        "model_id": outcome.artifact.model_id,
        "federated": comparison.federated,
        "centralized": comparison.centralized,
        "local": comparison.local,
        "seconds_per_round": outcome.seconds_per_round,
        "bytes_up_per_party_round": outcome.bytes_up_per_party_round,
        "history": outcome.history,
    }
