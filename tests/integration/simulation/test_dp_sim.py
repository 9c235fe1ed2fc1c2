"""A real Flower simulation with sample-level DP: the accountant's ε in the signed artifact and in
``fedrisk simulate``'s JSON."""

from __future__ import annotations

import numpy as np
import pytest

from fedrisk.ml.metrics import auc
from fedrisk.release.artifact import pipeline_from_artifact
from simulations.commands import dp_json
from simulations.runner import SimulationSpec, prepare_data, run_federation

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_a_run_asked_for_epsilon_3_releases_a_model_that_spends_at_most_3(tmp_path) -> None:
    spec = SimulationSpec(
        dataset="synthetic",
        parties=3,
        partition="iid",
        model="lr",
        rounds=2,
        seed=4,
        dp_mode="sample",
        dp_epsilon=3.0,
        dp_delta=1e-5,
        dp_clip_norm=1.0,
    )
    data = prepare_data(spec)

    outcome = run_federation(spec, data, release_dir=tmp_path / "registry")

    privacy = outcome.artifact.privacy  # read back through the signature check
    assert privacy is not None
    assert privacy.mode == "sample"
    assert 2.5 < privacy.epsilon <= 3.0 == privacy.epsilon_budget
    assert (privacy.delta, privacy.clip_norm, privacy.rounds) == (1e-5, 1.0, 2)
    assert privacy.noise_multiplier > 0.5
    assert sorted(privacy.epsilon_per_party) == ["party_0", "party_1", "party_2"]
    assert max(privacy.epsilon_per_party.values()) == privacy.epsilon
    assert privacy.accountant.startswith("rdp (dp-accounting==")
    block = dp_json(privacy)
    assert (block["epsilon"], block["delta"], block["noise_multiplier"]) == (
        privacy.epsilon,
        1e-5,
        privacy.noise_multiplier,
    )
    target = data.dataset.schema.target_column
    p = pipeline_from_artifact(outcome.artifact).predict_proba(data.pooled_test)
    assert auc(data.pooled_test[target].to_numpy(), p) > 0.7
    assert np.isfinite(outcome.artifact.weights).all()
