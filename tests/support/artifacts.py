"""Signed test model artifacts built with fedrisk itself, and registry directories to serve them.

Builds a small model the way the federated pipeline will (synthetic data from
``fedrisk.data.datasets.load_dataset("synthetic")``, ``fedrisk.ml.features.Preprocessor``, torch
training
from ``fedrisk.ml.training``), packs it as a ``fedrisk.release.artifact.ModelArtifact``, signs it
with a key
from ``fedrisk.release.identity`` and writes it into a registry directory with the signer trusted.

Typical use::

    signer = new_signer("bank_a")
    registry = tmp_path / "registry"
    trust(registry, signer)
    artifact = make_artifact(trained_model(), model_id="acard-v1", stage="application")
    publish(registry, artifact, signer)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedrisk.data.datasets import load_dataset
from fedrisk.data.schema import DatasetSchema, FeatureKind
from fedrisk.decisions.scorecard import ScorecardScaling
from fedrisk.ml.features import FeatureStats, Preprocessor
from fedrisk.ml.inference import ModelSpec, NumpyScorer
from fedrisk.ml.metrics import auc, ks, score_histograms
from fedrisk.ml.models import build_model, model_to_vector
from fedrisk.ml.training import TrainConfig, train_with_early_stopping
from fedrisk.ml.trees import TreeModel, TreeParams
from fedrisk.release.artifact import (
    TRUSTED_KEYS_DIR,
    Lineage,
    ModelArtifact,
    RoundMetrics,
    artifact_from_forest,
    utc_now_iso,
    write_artifact,
)
from fedrisk.release.identity import generate_signing_key, key_id, save_public_key
from fedrisk.release.reference import ScoreReference, feature_reference, reference_from_histograms

Stage = Literal["application", "behaviour", "collection"]


@dataclass(frozen=True)
class TrainedModel:
    """A trained model, ready to be packed into artifacts.

    ``weights`` already include the calibration offset in the output bias (the artifact format
    has no separate offset), so ``NumpyScorer(spec, weights)`` gives calibrated PDs.
    """

    schema: DatasetSchema
    preprocessing: dict[str, object]
    spec: ModelSpec
    weights: tuple[float, ...]
    baseline: dict[str, float | str]
    sample: pd.DataFrame
    auc: float
    ks: float


@functools.lru_cache(maxsize=4)
def trained_model(
    kind: Literal["lr", "mlp"] = "lr", *, n_rows: int = 4000, seed: int = 0
) -> TrainedModel:
    """Train a small risk model on synthetic pooled data (cached per arguments).

    Parameters
    ----------
    kind
        ``lr`` or ``mlp`` (hidden (16,)).
    n_rows
        Synthetic rows; 80 % train, 20 % held out for ``auc``/``ks`` and ``sample``.
    seed
        Seeds the data generator and torch.
    """
    data = load_dataset("synthetic", rng=np.random.default_rng(seed), n_rows=n_rows)
    schema, frame = data.schema, data.frame
    assert schema.target_column is not None
    cut = int(len(frame) * 0.8)
    train, test = frame.iloc[:cut], frame.iloc[cut:]
    pre = Preprocessor(schema).fit(train)
    x_train = pre.transform(train)
    y_train = train[schema.target_column].to_numpy(dtype=np.int64)
    spec = ModelSpec(kind=kind, n_features=pre.n_features_out, hidden=(16,))
    generator = torch.Generator().manual_seed(seed)
    model = build_model(spec, generator=generator)
    config = TrainConfig.for_model(kind, max_epochs=8, patience=2)
    report = train_with_early_stopping(model, x_train, y_train, config=config, generator=generator)
    vector = model_to_vector(model)
    vector[-1] += report.logit_offset  # the output bias is the last parameter
    scorer = NumpyScorer(spec, vector)
    p_test = scorer.predict_proba(pre.transform(test))
    y_test = test[schema.target_column].to_numpy(dtype=np.int64)
    return TrainedModel(
        schema=schema,
        preprocessing=pre.to_dict(),
        spec=spec,
        weights=tuple(float(w) for w in vector),
        baseline=pre.reference_row(),
        sample=test.reset_index(drop=True),
        auc=float(auc(y_test, p_test)),
        ks=float(ks(y_test, p_test)),
    )


def make_artifact(
    trained: TrainedModel,
    *,
    model_id: str,
    stage: Stage | None,
    bias_shift: float = 0.0,
    scorecard: ScorecardScaling | None = None,
    reference: ScoreReference | None = None,
) -> ModelArtifact:
    """Pack a trained model as an artifact.

    Parameters
    ----------
    trained
        From :func:`trained_model`.
    model_id
        The artifact's id (and registry directory name).
    stage
        Lifecycle stage, or None to leave it to registration.
    bias_shift
        Added to the output bias: > 0 makes every applicant riskier (e.g. +12 declines all,
        -12 approves all), which makes champion/challenger answers easy to tell apart.
    scorecard
        Scaling; default 600 points at 50:1, 20 PDO.
    reference
        The release reference (score bands and feature bins), e.g. :func:`sample_reference`.
    """
    weights = list(trained.weights)
    weights[-1] += bias_shift
    return ModelArtifact.model_validate(
        {
            "model_id": model_id,
            "stage": stage,
            "model_spec": trained.spec,
            "weights": weights,
            "preprocessing": trained.preprocessing,
            "schema": trained.schema,
            "baseline": trained.baseline,
            "scorecard": scorecard or ScorecardScaling(),
            "metrics": [RoundMetrics(round=1, auc=trained.auc, ks=trained.ks, n_parties=3)],
            "he_params": None,
            "reference": reference,
            "lineage": Lineage(
                run_id=f"test-{model_id}",
                parties=["bank", "ecommerce", "telecom"],
                rounds=1,
                dataset_fingerprint=trained.schema.fingerprint(),
                created_at=utc_now_iso(),
            ),
        }
    )


def sample_reference(trained: TrainedModel) -> ScoreReference:
    """Score bands and per-feature bins of the held-out sample, as a release computes them
    from pooled statistics."""
    schema = trained.schema
    assert schema.target_column is not None
    p = NumpyScorer(trained.spec, np.asarray(trained.weights)).predict_proba(
        Preprocessor.from_dict(trained.preprocessing).transform(trained.sample)
    )
    y = trained.sample[schema.target_column].to_numpy(dtype=np.int64)
    stats = FeatureStats.from_frame(trained.sample, schema)
    return reference_from_histograms(score_histograms(y, p), features=feature_reference(stats))


@dataclass(frozen=True)
class Signer:
    """A releasing party's Ed25519 identity."""

    name: str
    key: Ed25519PrivateKey

    @property
    def key_id(self) -> str:
        """Key id as recorded in ``artifact.sig``."""
        return key_id(self.key.public_key())


def new_signer(name: str = "bank_a") -> Signer:
    """A fresh signing identity."""
    return Signer(name=name, key=generate_signing_key())


def trust(registry: Path, signer: Signer) -> Path:
    """Put the signer's public key into ``registry/trusted_keys/<name>.pub``."""
    keys = registry / TRUSTED_KEYS_DIR
    keys.mkdir(parents=True, exist_ok=True)
    path = keys / f"{signer.name}.pub"
    save_public_key(signer.key.public_key(), path)
    return path


def publish(directory: Path, artifact: ModelArtifact, signer: Signer) -> Path:
    """Sign and write an artifact into ``directory`` (a registry or a staging dir)."""
    return write_artifact(artifact, directory, signing_key=signer.key)


def build_registry(
    registry: Path,
    models: Mapping[str, Stage | None],
    *,
    signer: Signer | None = None,
    kind: Literal["lr", "mlp"] = "lr",
    bias_shift: Mapping[str, float] | None = None,
) -> Signer:
    """Create a registry with trusted ``signer`` and one signed artifact per ``models`` entry."""
    chosen = signer or new_signer()
    trust(registry, chosen)
    trained = trained_model(kind)
    shifts = bias_shift or {}
    for model_id, stage in models.items():
        artifact = make_artifact(
            trained, model_id=model_id, stage=stage, bias_shift=shifts.get(model_id, 0.0)
        )
        publish(registry, artifact, chosen)
    return chosen


def features_of(row: Mapping[str, Any] | pd.Series, schema: DatasetSchema) -> dict[str, Any]:
    """JSON-ready model features of one data row (NaN -> None, numpy scalars -> Python)."""
    out: dict[str, Any] = {}
    for spec in schema.features:
        value = row[spec.name]
        if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
            out[spec.name] = None
        elif spec.kind is FeatureKind.NUMERIC:
            out[spec.name] = float(value)
        else:
            out[spec.name] = str(value)
    return out


def application_body(
    features: Mapping[str, Any],
    *,
    application_id: str,
    applicant_id: str,
    signals: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A JSON body for ``POST /v1/applications/decision``."""
    return {
        "application_id": application_id,
        "applicant_id": applicant_id,
        "features": dict(features),
        "signals": dict(signals or {}),
    }


@functools.lru_cache(maxsize=2)
def trained_forest(*, n_rows: int = 4000, seed: int = 0) -> tuple[TreeModel, pd.DataFrame]:
    """Small boosted trees on synthetic pooled data, and held-out rows (cached per arguments)."""
    from simulations.tree_baselines import fit_central_trees

    data = load_dataset("synthetic", rng=np.random.default_rng(seed), n_rows=n_rows)
    cut = int(len(data.frame) * 0.8)
    model = fit_central_trees(
        data.frame.iloc[:cut],
        data.schema,
        params=TreeParams(n_trees=40, max_depth=4, early_stopping_rounds=5, seed=seed),
    )
    return model, data.frame.iloc[cut:].reset_index(drop=True)


def build_forest_registry(
    registry: Path, models: Mapping[str, Stage | None], *, signer: Signer | None = None
) -> Signer:
    """A registry with trusted ``signer`` and one signed ``gbdt`` artifact per ``models`` entry."""
    chosen = signer or new_signer()
    trust(registry, chosen)
    model, _ = trained_forest()
    for model_id, stage in models.items():
        artifact = artifact_from_forest(
            model.forest,
            model_id=model_id,
            stage=stage,
            baseline={},
            lineage=Lineage(
                run_id=f"test-{model_id}",
                parties=["bank", "ecommerce", "telecom"],
                rounds=1,
                dataset_fingerprint=model.schema.fingerprint(),
                created_at=utc_now_iso(),
            ),
        )
        publish(registry, artifact, chosen)
    return chosen
