"""The federated GBDT in Flower's simulation engine grows the central fit's trees, and serves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedrisk.ml.metrics import auc
from fedrisk.ml.trees import tree_params_of
from fedrisk.release.artifact import forest_from_artifact
from simulations.runner import prepare_data, run_federation
from simulations.spec import SimulationSpec
from simulations.studies.cells import evaluate_cell
from simulations.studies.results import rounded
from simulations.tree_baselines import fit_central_trees
from tests.support.trees import central_trees

pytestmark = pytest.mark.integration


def test_encrypted_simulation_releases_the_central_trees(tmp_path: Path) -> None:
    # arrange: a small skewed federation and a short tree budget
    # (and every tree option away from its default, column subsampling included)
    spec = SimulationSpec(
        dataset="synthetic", parties=3, partition="quantity", model="gbdt", rounds=1, seed=4,
        trees=3, tree_depth=3, tree_learning_rate=0.2, tree_lambda=2.0, tree_bins=32,
        tree_colsample=0.6,
    )  # fmt: skip
    data = prepare_data(spec)
    schema = data.dataset.schema
    target = schema.target_column
    assert target is not None

    # act: the real ServerApp and ClientApps, CKKS-encrypted
    outcome = run_federation(spec, data, release_dir=tmp_path)

    # assert: the released trees are the central fit's over the same parties' rows and bins
    params = tree_params_of(spec)
    assert (params.max_depth, params.max_bins, params.colsample) == (3, 32, 0.6)
    central = central_trees(data.parties, schema, params)
    released = forest_from_artifact(outcome.artifact)
    assert outcome.artifact.model_spec.kind == "gbdt"
    assert [t.to_dict() for t in released.forest.trees] == [t.to_dict() for t in central.trees]
    assert released.forest.base_margin == central.base_margin
    assert len(outcome.history) == spec.trees
    test = pd.concat([p.test for p in data.parties], ignore_index=True)
    p = released.predict_proba(test)
    assert np.all((p > 0) & (p < 1))

    # and the study scores the cell: centralized is the same trees on the pooled rows, each
    # party's local-only curve has one point per federated tree
    scores = evaluate_cell(spec, data, encrypted=outcome, plaintext=None)
    y = data.pooled_test[target].to_numpy()
    pooled_model = fit_central_trees(data.pooled_train, schema, params=params)
    assert scores.centralized.auc == rounded(auc(y, pooled_model.predict_proba(data.pooled_test)))
    assert scores.encrypted.auc == rounded(auc(y, released.predict_proba(data.pooled_test)))
    assert [len(r.local_round_auc) for r in scores.party_results] == [spec.trees] * 3
