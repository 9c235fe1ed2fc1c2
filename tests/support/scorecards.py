"""Scorecard test helpers: a small trained WOE scorecard artifact, and its points read per bin."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedrisk.data.schema import DatasetSchema
from fedrisk.decisions.scorecard import ScorecardScaling
from fedrisk.ml.training import TrainConfig, train_centralized
from fedrisk.ml.woe import SPECIAL_BIN, BinningConfig, WoeEncoder
from fedrisk.release.artifact import Lineage, ModelArtifact, artifact_from_pipeline, utc_now_iso

Stage = str


def scorecard_artifact(
    train: pd.DataFrame,
    schema: DatasetSchema,
    *,
    model_id: str,
    stage: Stage | None,
    woe_config: BinningConfig | None = None,
    scaling: ScorecardScaling | None = None,
) -> ModelArtifact:
    """A central scorecard (two statistics passes, LR on WOE, few epochs) packed as an artifact."""
    result = train_centralized(
        train,
        train,
        schema,
        model_kind="scorecard",
        config=TrainConfig.for_model("scorecard", max_epochs=10, patience=3),
        rng=np.random.default_rng(0),
        woe_config=woe_config,
    )
    return artifact_from_pipeline(
        result.pipeline,
        model_id=model_id,
        stage=stage,  # type: ignore[arg-type]
        scorecard=scaling,
        lineage=Lineage(
            run_id=f"test-{model_id}",
            parties=["bank", "ecommerce", "telecom"],
            rounds=0,
            dataset_fingerprint=schema.fingerprint(),
            created_at=utc_now_iso(),
        ),
    )


def bin_points(artifact: ModelArtifact, frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Points of each row's bin for every scorecard feature, read from the artifact's table."""
    assert artifact.points_table is not None
    encoder = WoeEncoder.from_dict(artifact.preprocessing)
    features = list(dict.fromkeys(r.feature for r in artifact.points_table))
    bins = dict(zip(encoder.schema.feature_names, encoder.bins(frame), strict=True))
    points = np.zeros((len(frame), len(features)))
    for j, feature in enumerate(features):
        table = [r.points for r in artifact.points_table if r.feature == feature]
        points[:, j] = np.asarray(table)[bins[feature]]
    return points, features


def reason_costs(artifact: ModelArtifact, frame: pd.DataFrame) -> list[dict[str, float]]:
    """Per row, the points each feature's bin costs against the feature's best regular bin."""
    points, features = bin_points(artifact, frame)
    rows = artifact.points_table or []
    best = {
        f: max(r.points for r in rows if r.feature == f and r.bin != SPECIAL_BIN) for f in features
    }
    return [{f: best[f] - points[i, j] for j, f in enumerate(features)} for i in range(len(frame))]


def expected_reasons(costs: dict[str, float], *, limit: int = 4, floor: float = 0.02) -> list[str]:
    """The features a scorecard's reason codes name, most costly first."""
    return sorted((f for f, c in costs.items() if c > floor), key=lambda f: -costs[f])[:limit]
