"""One cell of a study: run its federations, train its baselines, measure everything.

A cell is one (task, partition, model, seed). :func:`run_cell` runs the encrypted federation
(and, for the plaintext seeds, the plaintext one) on the cell's parties; :func:`evaluate_cell`
then scores the released models and trains and scores the centralized and local-only
baselines on the same pooled test data.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch

from fedrisk.data.partitions import PartyData
from fedrisk.ml.features import Preprocessor
from fedrisk.ml.inference import sigmoid
from fedrisk.ml.kinds import ModelKind, network_kind
from fedrisk.ml.metrics import auc, ks
from fedrisk.ml.models import ModelSpec, initial_weights
from fedrisk.ml.pipeline import FeatureEncoder, RiskPipeline
from fedrisk.ml.training import (
    CentralResult,
    LocalEpochs,
    TrainConfig,
    default_config,
    train_centralized,
)
from fedrisk.ml.trees import TreeModel, tree_params_of
from fedrisk.ml.woe import fit_woe_encoder
from fedrisk.release.artifact import scorer_from_artifact
from simulations.baselines import reference_scores
from simulations.runner import (
    EventHandler,
    FederationOutcome,
    PreparedData,
    central_baseline,
    prepare_data,
    run_federation,
)
from simulations.scenarios import Scenario, publish_artifact, release_key
from simulations.spec import SimulationSpec
from simulations.studies.config import (
    SMALL_LENDER_SHARE,
    PartitionKind,
    StudyConfig,
    cell_key,
    partition_text,
)
from simulations.studies.curves import model_curves
from simulations.studies.results import (
    BaselineResult,
    CellResult,
    ColdStart,
    FederatedResult,
    ModelCurves,
    PartyResult,
    RoundPoint,
    rounded,
)
from simulations.tree_baselines import fit_central_trees

FloatArray = npt.NDArray[np.float64]
Scorer = RiskPipeline | TreeModel
"""What scores a cell's model kind on raw rows."""


@dataclass(frozen=True)
class CellScores:
    """What :func:`evaluate_cell` measured: every result of a cell but its settings."""

    encrypted: FederatedResult
    plaintext: FederatedResult | None
    centralized: BaselineResult
    party_results: list[PartyResult]
    cold_start: ColdStart
    curves: dict[str, ModelCurves]


def _target_column(data: PreparedData) -> str:
    target = data.dataset.schema.target_column
    assert target is not None  # prepare_data refuses a dataset without a target
    return target


def _auc_if_both_classes(y: npt.ArrayLike, p: npt.ArrayLike) -> float | None:
    labels = np.asarray(y)
    return rounded(auc(labels, p)) if len(np.unique(labels)) == 2 else None


def _federated_result(outcome: FederationOutcome, y: FloatArray, p: FloatArray) -> FederatedResult:
    return FederatedResult(
        auc=rounded(auc(y, p)),
        ks=rounded(ks(y, p)),
        model_id=outcome.artifact.model_id,
        seconds=rounded(outcome.seconds),
        seconds_per_round=rounded(outcome.seconds_per_round),
        bytes_up_per_party_round=rounded(outcome.bytes_up_per_party_round),
        history=[
            RoundPoint(round=int(h["round"]), auc=rounded(h["auc"]), ks=rounded(h["ks"]))
            for h in outcome.history
        ],
    )


def _train_config(spec: SimulationSpec) -> TrainConfig:
    overrides: dict[str, object] = {"local_epochs": spec.local_epochs}
    if spec.learning_rate > 0:
        overrides["learning_rate"] = spec.learning_rate
    if spec.optimizer != "default":
        overrides["optimizer"] = spec.optimizer
    return TrainConfig.for_model(spec.model, **overrides)


def local_round_auc(
    train: pd.DataFrame,
    test: pd.DataFrame,
    spec: SimulationSpec,
    data: PreparedData,
    *,
    generator: torch.Generator,
) -> list[float]:
    """A local-only model trained on the federated schedule; pooled-test AUC after each round.

    Same initial weights (the run's seed), epochs per round, batch size, learning rate and a
    fresh optimiser each round, as a party in the federation; but only its own rows, its own
    preprocessing and its own bad rate.
    """
    schema = data.dataset.schema
    # A scorecard's party bins and weighs its own evidence: its own WOE encoder.
    prep: FeatureEncoder = (
        fit_woe_encoder(train, schema)
        if spec.model == "scorecard"
        else Preprocessor(schema).fit(train)
    )
    model_spec = ModelSpec(
        kind=network_kind(spec.model), n_features=prep.n_features_out, hidden=spec.hidden
    )
    pipeline = RiskPipeline.from_fitted(
        prep,
        model_spec,
        initial_weights(model_spec, generator=torch.Generator().manual_seed(spec.seed)),
        logit_offset=0.0,  # replaced by the first round's, as at a party
        trainer=LocalEpochs(_train_config(spec), generator=generator),
    )
    y_test = test[_target_column(data)].to_numpy()
    out: list[float] = []
    for _ in range(spec.rounds):
        pipeline.partial_fit(train)
        out.append(rounded(auc(y_test, pipeline.predict_proba(test))))
    return out


def tree_round_auc(model: TreeModel, test: pd.DataFrame, y: FloatArray, rounds: int) -> list[float]:
    """A local-only forest's pooled-test AUC after each of its first ``rounds`` trees (a GBDT
    federation's rounds are its trees; a forest that stopped sooner keeps its last AUC)."""
    codes = model.forest.binning.transform(test)
    n_trees = len(model.forest.trees)
    return [
        rounded(auc(y, sigmoid(model.forest.margins(codes, n_trees=min(k, n_trees)))))
        for k in range(1, rounds + 1)
    ]


@dataclass(frozen=True)
class _Baseline:
    """A baseline model of the cell's kind and its pooled-test AUC and KS."""

    auc: float
    ks: float
    model: Scorer


def _central_model(
    spec: SimulationSpec, data: PreparedData, *, rng: np.random.Generator
) -> _Baseline:
    """The tuned centralized baseline; for trees, the same boosted trees on the pooled rows."""
    if spec.model == "gbdt":
        return _tree_baseline(data.pooled_train, spec, data, name="central")
    central = central_baseline(spec, data, rng=rng)
    return _Baseline(central.auc, central.ks, central.pipeline)


def _tree_baseline(
    train: pd.DataFrame, spec: SimulationSpec, data: PreparedData, *, name: str
) -> _Baseline:
    model = fit_central_trees(train, data.dataset.schema, params=tree_params_of(spec), name=name)
    y = data.pooled_test[_target_column(data)].to_numpy()
    p = model.predict_proba(data.pooled_test)
    return _Baseline(float(auc(y, p)), float(ks(y, p)), model)


def _early_stopped(
    train: pd.DataFrame, spec: SimulationSpec, data: PreparedData, *, rng: np.random.Generator
) -> CentralResult:
    """A baseline early-stopped on ``train`` (the model kind's default settings), pooled-scored."""
    return train_centralized(
        train,
        data.pooled_test,
        data.dataset.schema,
        model_kind=spec.model,
        config=default_config(spec.model),
        rng=rng,
        hidden=spec.hidden,
    )


def _party_result(
    party: PartyData,
    spec: SimulationSpec,
    data: PreparedData,
    *,
    released: Scorer,
    total_rows: int,
    rounds: int,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> tuple[PartyResult, FloatArray]:
    """One party's local-only models against the released one; and the local pooled-test PDs."""
    target = _target_column(data)
    test = data.pooled_test
    if spec.model == "gbdt":
        local = _tree_baseline(party.train, spec, data, name=party.name)
        assert isinstance(local.model, TreeModel)
        curve = tree_round_auc(local.model, test, test[target].to_numpy(), rounds)
    else:
        stopped = _early_stopped(party.train, spec, data, rng=rng)
        local = _Baseline(stopped.auc, stopped.ks, stopped.pipeline)
        curve = local_round_auc(party.train, test, spec, data, generator=generator)
    own_y = party.test[target].to_numpy()
    own_local = _auc_if_both_classes(own_y, local.model.predict_proba(party.test))
    own_fed = _auc_if_both_classes(own_y, released.predict_proba(party.test))
    rows = len(party.train) + len(party.test)
    result = PartyResult(
        party=party.name,
        n_train=len(party.train),
        n_test=len(party.test),
        n_test_bad=int(own_y.sum()),
        share_of_rows=rounded(rows / total_rows),
        bad_rate=rounded((party.train[target].sum() + party.test[target].sum()) / max(rows, 1)),
        local_auc=rounded(local.auc),
        local_ks=rounded(local.ks),
        own_test_local_auc=own_local,
        own_test_federated_auc=own_fed,
        own_gain=(
            rounded(own_fed - own_local) if own_fed is not None and own_local is not None else None
        ),
        local_round_auc=curve,
    )
    return result, local.model.predict_proba(test)


def _cold_start(parties: list[PartyResult]) -> ColdStart:
    smallest = min(parties, key=lambda p: p.share_of_rows)
    return ColdStart(
        party=smallest.party,
        share_of_rows=smallest.share_of_rows,
        small_lender=smallest.share_of_rows <= SMALL_LENDER_SHARE,
        n_test=smallest.n_test,
        n_test_bad=smallest.n_test_bad,
        own_test_local_auc=smallest.own_test_local_auc,
        own_test_federated_auc=smallest.own_test_federated_auc,
        gain=smallest.own_gain,
    )


def evaluate_cell(
    spec: SimulationSpec,
    data: PreparedData,
    *,
    encrypted: FederationOutcome,
    plaintext: FederationOutcome | None,
) -> CellScores:
    """Score the federated models and train and score the centralized and local baselines."""
    test = data.pooled_test
    y = test[_target_column(data)].to_numpy()
    released = scorer_from_artifact(encrypted.artifact)
    fed_p = released.predict_proba(test)
    # One generator for every baseline, drawn from in a fixed order: centralized, then each
    # party's early-stopped and per-round models; a cell is reproducible from its seed.
    rng = np.random.default_rng(spec.seed + 1)
    central = _central_model(spec, data, rng=rng)
    central_p = central.model.predict_proba(test)
    curves = {
        "federated": model_curves(y, fed_p, full=True),
        "centralized": model_curves(y, central_p, full=True),
    }
    total_rows = sum(len(p.train) + len(p.test) for p in data.parties)
    generator = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
    parties: list[PartyResult] = []
    for party in data.parties:
        result, local_p = _party_result(
            party,
            spec,
            data,
            released=released,
            total_rows=total_rows,
            rounds=len(encrypted.history),
            rng=rng,
            generator=generator,
        )
        parties.append(result)
        curves[f"local:{party.name}"] = model_curves(y, local_p, full=False)
    return CellScores(
        encrypted=_federated_result(encrypted, y, fed_p),
        plaintext=(
            _federated_result(
                plaintext, y, scorer_from_artifact(plaintext.artifact).predict_proba(test)
            )
            if plaintext is not None
            else None
        ),
        centralized=BaselineResult(auc=rounded(central.auc), ks=rounded(central.ks)),
        party_results=parties,
        cold_start=_cold_start(parties),
        curves=curves,
    )


def _run_federations(
    spec: SimulationSpec,
    data: PreparedData,
    *,
    plaintext: bool,
    registry: Path | None,
    on_event: EventHandler | None,
) -> tuple[FederationOutcome, FederationOutcome | None]:
    """The encrypted run (its artifact published to ``registry`` if given), maybe plaintext."""
    with tempfile.TemporaryDirectory(prefix="fedrisk-study-") as scratch:
        root = Path(scratch)
        staging = root / "registry"
        encrypted = run_federation(
            spec, data, release_dir=staging, workdir=root / "encrypted", on_event=on_event
        )
        if registry is not None:
            publish_artifact(
                staging / encrypted.artifact.model_id,
                release_key(staging, spec.release_party),
                registry=registry,
            )
        if not plaintext:
            return encrypted, None
        return encrypted, run_federation(
            spec,
            data,
            release_dir=root / "plaintext-registry",
            plaintext=True,
            workdir=root / "plaintext",
            on_event=on_event,
        )


def run_cell(
    scenario: Scenario,
    kind: PartitionKind,
    model: ModelKind,
    seed: int,
    *,
    config: StudyConfig,
    data_dir: Path | None = None,
    registry: Path | None = None,
    on_event: EventHandler | None = None,
) -> CellResult:
    """Run one cell: encrypted (and maybe plaintext) federation, then every baseline.

    Raises
    ------
    fedrisk.errors.FedRiskError, server.coordinator.runs.RunFailedError
        When data, configuration or a federated run fails.
    """
    started = time.monotonic()
    text = partition_text(scenario, kind, alpha=config.dirichlet_alpha)
    spec = scenario.spec(
        seed=seed, model=model, partition=text, rounds=config.rounds, trees=config.trees
    )
    data = prepare_data(spec, data_dir=data_dir)
    encrypted, plaintext = _run_federations(
        spec,
        data,
        plaintext=config.wants_plaintext(model, seed),
        registry=registry,
        on_event=on_event,
    )
    scores = evaluate_cell(spec, data, encrypted=encrypted, plaintext=plaintext)
    reference = reference_scores(
        data.pooled_train,
        data.pooled_test,
        data.dataset.schema,
        model=spec.model,
        seed=spec.seed,
    )
    return CellResult(
        key=cell_key(scenario.name, text, model, seed),
        task=scenario.name,
        stage=scenario.stage,
        dataset=scenario.dataset,
        synthetic=scenario.synthetic,
        partition_kind=kind,
        partition=text,
        model=model,
        seed=seed,
        parties=spec.parties,
        rounds=spec.rounds,
        local_epochs=spec.local_epochs,
        learning_rate=spec.learning_rate,
        optimizer=spec.optimizer,
        proximal_mu=spec.proximal_mu,
        server_optimizer=spec.server_optimizer,
        server_learning_rate=spec.server_learning_rate,
        n_train=len(data.pooled_train),
        n_test=len(data.pooled_test),
        n_test_bad=int(data.pooled_test[_target_column(data)].sum()),
        encrypted=scores.encrypted,
        plaintext=scores.plaintext,
        centralized=scores.centralized,
        reference=(
            None
            if reference is None
            else BaselineResult(auc=rounded(reference["auc"]), ks=rounded(reference["ks"]))
        ),
        party_results=scores.party_results,
        cold_start=scores.cold_start,
        curves=scores.curves,
        seconds=rounded(time.monotonic() - started),
    )
