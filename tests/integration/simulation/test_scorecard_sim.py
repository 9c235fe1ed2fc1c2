"""A WOE scorecard federated through the real ServerApp and ClientApps: both encrypted statistics
passes, then FedAvg of the LR on WOE features, then a signed artifact with its points table."""

from __future__ import annotations

import numpy as np
import pytest

from fedrisk.ml.woe import WoeEncoder, fit_woe_encoder
from fedrisk.release.artifact import pipeline_from_artifact
from simulations.runner import SimulationSpec, prepare_data, run_federation
from simulations.studies.cells import evaluate_cell

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_federated_scorecard_bins_equal_the_central_bins(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # arrange
    spec = SimulationSpec(
        dataset="synthetic", parties=3, partition="by:segment", model="scorecard", rounds=1, seed=4
    )
    data = prepare_data(spec)

    # act
    outcome = run_federation(spec, data, release_dir=tmp_path_factory.mktemp("released"))

    # assert: the encrypted pooled statistics gave exactly the central binning and selection
    artifact = outcome.artifact
    assert artifact.model_kind == "scorecard" and artifact.points_table
    federated = WoeEncoder.from_dict(artifact.preprocessing)
    central = fit_woe_encoder(data.pooled_train, data.dataset.schema)
    for name, iv in central.iv_.items():
        assert abs(federated.iv_[name] - iv) <= 1e-9, name
    assert federated.selected_ == central.selected_
    assert next(r.feature for r in artifact.points_table) == central.selected_[0]
    # every party trained and evaluated the scorecard's LR in its round
    assert [len(h["train_parties"]) for h in outcome.history] == [3]
    test = data.pooled_test
    p = pipeline_from_artifact(artifact).predict_proba(test)
    assert np.isfinite(p).all() and outcome.history[-1]["auc"] > 0.7

    # and the study scores the cell with scorecards throughout (local-only ones bin their own
    # rows), one local point per federated round
    scores = evaluate_cell(spec, data, encrypted=outcome, plaintext=None)
    assert scores.encrypted.auc > 0.7 and scores.centralized.auc > 0.7
    assert [len(r.local_round_auc) for r in scores.party_results] == [spec.rounds] * 3
