"""The scoring service serves boosted trees in every stage, single and batch, with TreeSHAP."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from fedrisk.decisions.scorecard import ScorecardScaling
from fedrisk.ml.tree_shap import TreeExplainer
from server.scoring.registry import ModelRegistry
from tests.support.artifacts import build_forest_registry, features_of, trained_forest
from tests.support.scoring import STANDARD_MODELS, ScoringServer, server_at

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gbdt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScoringServer]:
    """One service whose A-, B- and C-card champions are all boosted trees."""
    workdir = tmp_path_factory.mktemp("gbdt-server")
    build_forest_registry(workdir / "registry", STANDARD_MODELS)
    with server_at(workdir, workdir / "registry") as started:
        yield started


def test_every_stage_decides_with_the_trees_and_their_contributions(
    gbdt_server: ScoringServer,
) -> None:
    # arrange
    model, sample = trained_forest()
    schema = model.schema
    rows = [features_of(sample.iloc[i], schema) for i in range(3)]
    explainer = TreeExplainer(model.forest)
    factor = ScorecardScaling().factor

    # act
    with gbdt_server.client() as client:
        decision = client.post(
            "/v1/applications/decision",
            json={
                "application_id": "g-1",
                "applicant_id": "a-1",
                "features": rows[0],
                "signals": {},
            },
        )
        behaviour = client.post(
            "/v1/accounts/behaviour",
            json={"account_id": "b-1", "current_limit": 5000.0, "features": rows[1]},
        )
        collection = client.post(
            "/v1/collections/strategy",
            json={"account_id": "c-1", "features": rows[2], "days_past_due": 40},
        )

    # assert: the served PD is the forest's, and the reasons are the largest contributions
    assert decision.status_code == 200, decision.text
    body = decision.json()
    assert body["model"]["model_id"] == "acard-v1"
    codes = model.transform_records(rows[:1])
    assert body["pd"] == pytest.approx(float(model.predict_proba(sample.iloc[:1])[0]), abs=1e-9)
    phi = explainer.shap_values_of(codes)[0]
    assert abs(phi.sum() + explainer.expected_value - model.logits(codes)[0]) < 1e-6
    top = np.argsort(-phi, kind="stable")[: len(body["reasons"])]
    assert [r["feature"] for r in body["reasons"]] == [schema.feature_names[j] for j in top]
    for reason, j in zip(body["reasons"], top, strict=True):
        assert reason["points"] == pytest.approx(factor * phi[j], rel=1e-9)
    assert behaviour.status_code == 200, behaviour.text
    assert behaviour.json()["model"]["model_id"] == "bcard-v1"
    assert collection.status_code == 200, collection.text
    assert collection.json()["model"]["model_id"] == "ccard-v1"


def test_batch_scores_the_trees_vectorised_with_reasons(gbdt_server: ScoringServer) -> None:
    # arrange
    model, sample = trained_forest()
    schema = model.schema
    data = sample[[schema.id_column, *schema.feature_names]]

    # act
    with gbdt_server.client(timeout=60) as client:
        response = client.post(
            "/v1/batch/application",
            params={"reasons": "true"},
            content=data.to_csv(index=False).encode(),
            headers={"content-type": "text/csv"},
        )

    # assert
    assert response.status_code == 200, response.text
    out = pd.read_csv(io.BytesIO(response.content), dtype={"error": "string"})
    assert len(out) == len(data) and out["error"].isna().all()
    np.testing.assert_allclose(out["pd"].to_numpy(), model.predict_proba(data), rtol=1e-6)
    registry = ModelRegistry(gbdt_server.registry)
    registry.load_all(only=["acard-v1"])
    loaded = registry.models["acard-v1"]
    expected = [[r.code for r in rr] for rr in loaded.reasons(loaded.score_frame(data))]
    got = [None if pd.isna(v) else v for v in out["reason_1"]]
    assert got == [codes[0] if codes else None for codes in expected]
    assert sum(1 for codes in expected if codes) > 0.9 * len(expected)
