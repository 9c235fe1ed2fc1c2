"""Runs a federation in Flower's simulation engine and compares it with the baselines.

``run_federation`` executes the real ServerApp and ClientApps under ``flwr run`` (Ray-backed
simulation runtime, one virtual SuperNode per party). ``compare`` then scores, on the same pooled
test data: the released federated model, a centralized model trained on the pooled training
data, and each party's local-only model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedrisk.data.datasets import Dataset, load_dataset
from fedrisk.data.partitions import PartyData, parse_partition, partition_frame
from fedrisk.federation.run_config import MIN_SECURE_PARTIES, RunConfigValue, parse_run_config
from fedrisk.ml.metrics import auc, ks
from fedrisk.ml.training import CentralResult, default_config, train_centralized
from fedrisk.release.artifact import (
    ModelArtifact,
    load_trusted_keys,
    pipeline_from_artifact,
    read_artifact,
)
from secure_agg.params import HEParams
from server.coordinator.runs import RunFailedError, submit_run, wait_for_run
from simulations.baselines import reference_scores, tuned_central
from simulations.engine import simulation_link
from simulations.spec import SimulationSpec
from simulations.workspace import SimWorkspace, prepare_workspace

EventHandler = Callable[[dict[str, Any]], None]


@dataclass
class FederationOutcome:
    """What a federated run produced: the released artifact and the public round history."""

    he: bool
    artifact: ModelArtifact
    artifact_dir: Path
    history: list[dict[str, Any]]
    events: list[dict[str, Any]]
    seconds: float

    @property
    def seconds_per_round(self) -> float:
        """Mean wall time of a round, as the server measured it."""
        times = [float(h["seconds"]) for h in self.history]
        return float(np.mean(times)) if times else float("nan")

    @property
    def bytes_up_per_party_round(self) -> float:
        """Mean bytes one party uploads per training round."""
        sizes = [float(h["bytes_up_per_party"]) for h in self.history]
        return float(np.mean(sizes)) if sizes else float("nan")

    @property
    def bytes_down_per_party_round(self) -> float:
        """Mean sealed-record bytes one party receives per round (train and evaluate)."""
        sizes = [float(h.get("bytes_down_per_party", "nan")) for h in self.history]
        return float(np.mean(sizes)) if sizes else float("nan")


@dataclass
class PreparedData:
    """A dataset split into parties, plus the pooled test data every model is scored on."""

    dataset: Dataset
    parties: list[PartyData]
    pooled_train: pd.DataFrame
    pooled_test: pd.DataFrame


@dataclass
class Comparison:
    """AUC and KS of every model on the same pooled test data."""

    federated: dict[str, float]
    plaintext: dict[str, float] | None
    centralized: dict[str, float]
    local: list[dict[str, Any]] = field(default_factory=list)
    reference: dict[str, Any] | None = None
    """The library reference of the model kind (:func:`simulations.baselines.reference_scores`;
    gbdt: scikit-learn's HistGradientBoosting), when installed."""


def prepare_data(spec: SimulationSpec, *, data_dir: Path | None = None) -> PreparedData:
    """Load and partition the dataset (seeded); pool the parties' test splits (or take the
    dataset's own test file when it ships one)."""
    rng = np.random.default_rng(spec.seed)
    dataset = load_dataset(spec.dataset, data_dir=data_dir, rng=rng)
    parties = partition_frame(
        dataset.frame,
        dataset.schema,
        parse_partition(spec.partition),
        n_parties=spec.parties,
        rng=rng,
        test_fraction=spec.test_fraction,
    )
    return PreparedData(
        dataset=dataset,
        parties=list(parties),
        pooled_train=pd.concat([p.train for p in parties], ignore_index=True),
        # A dataset that ships its own test file (FATE's homo_test) is scored on it.
        pooled_test=(
            dataset.test_frame
            if dataset.test_frame is not None
            else pd.concat([p.test for p in parties], ignore_index=True)
        ),
    )


def run_federation(
    spec: SimulationSpec,
    data: PreparedData,
    *,
    release_dir: Path,
    plaintext: bool = False,
    masking: bool = True,
    mask_self: bool = False,
    workdir: Path | None = None,
    on_event: EventHandler | None = None,
    he_params: HEParams | None = None,
) -> FederationOutcome:
    """Run the real ServerApp and ClientApps in Flower's simulation engine.

    Raises
    ------
    RunFailedError
        When the run does not complete (``flwr run`` itself exits 0 on failure).
    """
    own_tmp = workdir is None
    root = Path(tempfile.mkdtemp(prefix="fedrisk-sim-")) if workdir is None else workdir
    try:
        ws = prepare_workspace(
            root / "federation",
            schema=data.dataset.schema,
            parties=data.parties,
            release_dir=release_dir,
            he_params=he_params,
        )
        run_config = _run_config(
            spec, ws, plaintext=plaintext, masking=masking, mask_self=mask_self
        )
        with simulation_link(root) as link:
            run_id = submit_run(
                connection=link.connection,
                flwr_home=link.flwr_home,
                run_config=run_config,
                federation_config={
                    "num-supernodes": spec.parties,
                    "client-resources-num-cpus": 1,
                },
            )
            outcome = wait_for_run(
                connection=link.connection,
                flwr_home=link.flwr_home,
                run_id=run_id,
                progress_path=ws.server_dir / "progress.jsonl",
                on_event=on_event,
                timeout=spec.round_timeout * (3 * spec.rounds + 3),
            )
        released = [e for e in outcome.events if e.get("event") == "released"]
        if not released:
            raise RunFailedError(f"run {run_id} completed without releasing a model")
        model_id = str(released[-1]["model_id"])
        artifact_dir = release_dir / model_id
        artifact = read_artifact(artifact_dir, trusted_keys=load_trusted_keys(ws.trusted_keys_dir))
        results = json.loads((ws.server_dir / "results.json").read_text(encoding="utf-8"))
        return FederationOutcome(
            he=not plaintext,
            artifact=artifact,
            artifact_dir=artifact_dir,
            history=list(results["history"]),
            events=outcome.events,
            seconds=outcome.seconds,
        )
    finally:
        if own_tmp:
            shutil.rmtree(root, ignore_errors=True)


def _run_config(
    spec: SimulationSpec,
    ws: SimWorkspace,
    *,
    plaintext: bool,
    masking: bool = True,
    mask_self: bool = False,
) -> dict[str, RunConfigValue]:
    """The validated run config of one simulated run (unset settings keep the FAB defaults)."""
    config = parse_run_config(
        {
            "run_id": f"sim-{uuid.uuid4().hex[:12]}",
            "rounds": spec.rounds,
            "model": spec.model,
            "hidden": spec.hidden,
            "seed": spec.seed,
            "plaintext": plaintext,
            "masking": masking,
            "mask_self": mask_self,
            "min_parties": min(MIN_SECURE_PARTIES, spec.parties),
            "allow_fewer_parties": spec.allow_fewer_parties or spec.parties < MIN_SECURE_PARTIES,
            "local_epochs": spec.local_epochs,
            "learning_rate": spec.learning_rate,
            "optimizer": spec.optimizer,
            "proximal_mu": spec.proximal_mu,
            "server_optimizer": spec.server_optimizer,
            "server_learning_rate": spec.server_learning_rate,
            "release_party": spec.release_party,
            "stage": spec.stage,
            "public_context": str(ws.public_context),
            "server_dir": str(ws.server_dir),
            "sim_workspace": str(ws.root),
            "round_timeout": spec.round_timeout,
            "trees": spec.trees,
            "dp_mode": spec.dp_mode,
            "dp_epsilon": spec.dp_epsilon,
            "dp_delta": spec.dp_delta,
            "dp_clip_norm": spec.dp_clip_norm,
            "dp_sampling_rate": spec.dp_sampling_rate,
            "tree_depth": spec.tree_depth,
            "tree_learning_rate": spec.tree_learning_rate,
            "tree_lambda": spec.tree_lambda,
            "tree_bins": spec.tree_bins,
            "tree_colsample": spec.tree_colsample,
        }
    )
    return config.with_calibrated_noise().to_run_config()


def evaluate_scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC and KS of scores against binary labels."""
    return {"auc": float(auc(y, p)), "ks": float(ks(y, p))}


def central_baseline(
    spec: SimulationSpec, data: PreparedData, *, rng: np.random.Generator
) -> CentralResult:
    """The tuned centralized model of ``spec``'s kind on the pooled training rows."""
    return tuned_central(
        data.pooled_train,
        data.pooled_test,
        data.dataset.schema,
        model=spec.model,
        rng=rng,
        hidden=spec.hidden,
    )


def compare(
    spec: SimulationSpec,
    data: PreparedData,
    *,
    federated: FederationOutcome,
    plaintext: FederationOutcome | None = None,
) -> Comparison:
    """Score federated, centralized and local-only models on the same pooled test data."""
    if spec.model == "gbdt":
        from simulations.tree_baselines import compare_trees

        return compare_trees(spec, data, federated=federated, plaintext=plaintext)  # type: ignore[no-any-return]
    target = data.dataset.schema.target_column
    assert target is not None
    y = data.pooled_test[target].to_numpy()
    rng = np.random.default_rng(spec.seed + 1)
    config = default_config(spec.model)
    central = central_baseline(spec, data, rng=rng)
    local: list[dict[str, Any]] = []
    for party in data.parties:
        result = train_centralized(
            party.train,
            data.pooled_test,
            data.dataset.schema,
            model_kind=spec.model,
            config=config,
            rng=rng,
        )
        own_y = party.test[target].to_numpy()
        own_local = result.pipeline.predict_proba(party.test)
        own_fed = pipeline_from_artifact(federated.artifact).predict_proba(party.test)
        local.append(
            {
                "party": party.name,
                "n_train": len(party.train),
                "n_test": len(party.test),
                "auc": result.auc,
                "ks": result.ks,
                "own_test_local_auc": _safe_auc(own_y, own_local),
                "own_test_federated_auc": _safe_auc(own_y, own_fed),
            }
        )
    return Comparison(
        federated=evaluate_scores(
            y, pipeline_from_artifact(federated.artifact).predict_proba(data.pooled_test)
        ),
        plaintext=(
            evaluate_scores(
                y, pipeline_from_artifact(plaintext.artifact).predict_proba(data.pooled_test)
            )
            if plaintext is not None
            else None
        ),
        centralized={"auc": central.auc, "ks": central.ks},
        local=local,
        reference=reference_scores(
            data.pooled_train, data.pooled_test, data.dataset.schema, model=spec.model
        ),
    )


def _safe_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(auc(y, p)) if len(np.unique(y)) == 2 else None
