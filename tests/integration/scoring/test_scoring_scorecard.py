"""A WOE points scorecard served in all three lifecycle stages, single and batch, with reason codes
that name the bins costing the most points against each feature's best bin."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from click.testing import CliRunner

from fedrisk.data.datasets import load_dataset
from fedrisk.data.schema import DatasetSchema
from fedrisk.decisions.reasons import ReasonCodeTable
from fedrisk.release.artifact import ModelArtifact, pipeline_from_artifact
from server.scoring.scorecard_view import scorecard_app
from tests.support.artifacts import application_body, features_of, new_signer, publish, trust
from tests.support.scorecards import expected_reasons, reason_costs, scorecard_artifact
from tests.support.scoring import ScoringServer, start_server

pytestmark = pytest.mark.integration

STAGES = {"application": "acard-woe", "behaviour": "bcard-woe", "collection": "ccard-woe"}


@dataclass(frozen=True)
class Served:
    server: ScoringServer
    artifacts: dict[str, ModelArtifact]
    schema: DatasetSchema
    sample: pd.DataFrame


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One scorecard per stage in a signed registry, behind one real service (stopped by PID)."""
    data = load_dataset("synthetic", rng=np.random.default_rng(0), n_rows=4000)
    train, sample = data.frame.iloc[:3200], data.frame.iloc[3200:].reset_index(drop=True)
    workdir = tmp_path_factory.mktemp("scorecard-server")
    registry = workdir / "registry"
    signer = new_signer()
    trust(registry, signer)
    # One scorecard trained once, released under each stage's id.
    trained = scorecard_artifact(train, data.schema, model_id="woe", stage=None)
    artifacts = {
        stage: trained.model_copy(update={"model_id": model_id, "stage": stage})
        for stage, model_id in STAGES.items()
    }
    for artifact in artifacts.values():
        publish(registry, artifact, signer)
    server = start_server(workdir, registry)
    try:
        yield Served(server=server, artifacts=artifacts, schema=data.schema, sample=sample)
    finally:
        server.stop()


def _check_reasons(reasons: list[dict[str, object]], costs: dict[str, float]) -> None:
    expected = expected_reasons(costs)
    got = [str(r["feature"]) for r in reasons if float(r["points"]) > 0.02]  # type: ignore[arg-type]
    assert got[: len(expected)] == expected
    for r in reasons:
        assert float(r["points"]) == pytest.approx(costs[str(r["feature"])], abs=0.011)  # type: ignore[arg-type]


def test_single_decisions_in_every_stage_score_and_explain_with_the_points_table(
    served: Served,
) -> None:
    # arrange
    rows = served.sample.iloc[:6]
    bodies = [features_of(row, served.schema) for _, row in rows.iterrows()]

    # act
    with served.server.client() as client:
        answers = {
            "application": [
                client.post(
                    "/v1/applications/decision",
                    json=application_body(
                        f, application_id=f"woe-{i}", applicant_id=f"woe-cust-{i}"
                    ),
                )
                for i, f in enumerate(bodies)
            ],
            "behaviour": [
                client.post(
                    "/v1/accounts/behaviour",
                    json={"account_id": f"b-{i}", "current_limit": 5000.0, "features": f},
                )
                for i, f in enumerate(bodies)
            ],
            "collection": [
                client.post(
                    "/v1/collections/strategy",
                    json={"account_id": f"c-{i}", "features": f, "days_past_due": 40},
                )
                for i, f in enumerate(bodies)
            ],
        }

    # assert
    for stage, responses in answers.items():
        artifact = served.artifacts[stage]
        expected_pd = pipeline_from_artifact(artifact).predict_proba(rows)
        costs = reason_costs(artifact, rows)
        for response, pd_value, cost in zip(responses, expected_pd, costs, strict=True):
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["model"]["model_id"] == STAGES[stage]
            assert body["pd"] == pytest.approx(pd_value, rel=1e-9)
            _check_reasons(body["reasons" if stage == "application" else "score_reasons"], cost)


def test_batch_scoring_is_the_single_scoring_with_the_same_reason_codes(served: Served) -> None:
    # arrange
    data = served.sample[[served.schema.id_column, *served.schema.feature_names]]
    body = data.to_csv(index=False).encode()

    # act
    with served.server.client(timeout=60) as client:
        responses = {
            stage: client.post(
                f"/v1/batch/{stage}",
                params={"reasons": "true"},
                content=body,
                headers={"content-type": "text/csv"},
            )
            for stage in STAGES
        }

    # assert
    codes = ReasonCodeTable.from_schema(served.schema)
    for stage, response in responses.items():
        assert response.status_code == 200, response.text
        assert response.headers["x-model-id"] == STAGES[stage]
        out = pd.read_csv(io.BytesIO(response.content), dtype={"error": "string"})
        artifact = served.artifacts[stage]
        np.testing.assert_allclose(
            out["pd"].to_numpy(), pipeline_from_artifact(artifact).predict_proba(data), rtol=1e-6
        )
        costs = reason_costs(artifact, data)
        for i in range(0, len(out), 97):
            expected = [codes.entry(f).code for f in expected_reasons(costs[i])]
            got = [
                out[f"reason_{k}"][i] for k in range(1, 5) if isinstance(out[f"reason_{k}"][i], str)
            ]
            assert got[: len(expected)] == expected


def test_scorecard_show_prints_the_verified_table(served: Served) -> None:
    # arrange
    artifact_dir = Path(served.server.registry) / STAGES["application"]
    artifact = served.artifacts["application"]
    strongest = (artifact.points_table or [])[0]

    command = typer.main.get_group(scorecard_app)  # as `fedrisk scorecard` mounts it

    # act
    shown = CliRunner().invoke(command, ["show", str(artifact_dir)])
    as_json = CliRunner().invoke(command, ["show", str(artifact_dir), "--json"])
    refused = CliRunner().invoke(
        command, ["show", str(artifact_dir), "--trusted-keys", str(artifact_dir)]
    )

    # assert
    assert shown.exit_code == 0, shown.output
    assert strongest.feature in shown.output and strongest.bin in shown.output
    assert f"{strongest.points:.1f}" in shown.output
    assert as_json.exit_code == 0
    assert "woe" in as_json.output and "points" in as_json.output
    assert refused.exit_code == 2 and "trusted" in refused.output
