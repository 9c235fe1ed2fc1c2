"""Model registry over HTTP: signature refusal, registration, champion/challenger, rollback."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from fedrisk.release.artifact import ModelArtifact
from server.scoring.apikeys import Role
from server.scoring.cli import cli
from tests.support.artifacts import (
    Signer,
    TrainedModel,
    build_registry,
    make_artifact,
    new_signer,
    publish,
    trust,
)
from tests.support.processes import ProcessRegistry
from tests.support.scoring import ScoringServer, application, bearer, start_server

DECISION = "/v1/applications/decision"
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def corrupt(
    kind: str, directory: Path, trained: TrainedModel, signer: Signer, *, model_id: str
) -> Path:
    """Write one refused artifact of ``kind`` into ``directory``; returns its folder."""
    good = make_artifact(trained, model_id=model_id, stage="application")
    if kind == "untrusted":
        return publish(directory, good, new_signer("mallory"))
    if kind == "incompatible":
        data = good.model_dump(mode="json", by_alias=True)
        data["model_spec"] = {"kind": "lr", "n_features": 10, "hidden": [16]}
        data["weights"] = [0.1] * 11
        return publish(directory, ModelArtifact.model_validate(data), signer)
    path = publish(directory, good, signer)
    if kind == "tampered":
        text = (path / "artifact.json").read_text()
        (path / "artifact.json").write_text(
            text.replace('"stage":"application"', '"stage":"collection"')
        )
    elif kind == "unsigned":
        (path / "artifact.sig").unlink()
    return path


REFUSALS = ["tampered", "unsigned", "untrusted", "incompatible"]


def test_startup_refuses_bad_artifacts_and_serves_the_good_one(
    tmp_path: Path, trained: TrainedModel, process_registry: ProcessRegistry
) -> None:
    # arrange
    registry = tmp_path / "registry"
    signer = build_registry(registry, {"acard-v1": "application"})
    for kind in REFUSALS:
        corrupt(kind, registry, trained, signer, model_id=f"bad-{kind}")

    # act
    server = start_server(tmp_path, registry, processes=process_registry)
    with server.client() as client:
        models = client.get("/v1/models").json()
        health = client.get("/healthz").json()
        decision = client.post(DECISION, json=application(trained, 1, age=30))

    # assert
    assert [m["model_id"] for m in models["models"]] == ["acard-v1"]
    refused = {Path(r["path"]).name: r["reason"] for r in models["refused"]}
    assert refused == {f"bad-{k}": ("incompatible" if k == "incompatible" else k) for k in REFUSALS}
    assert health["status"] == "degraded" and health["refused_artifacts"] == 4
    assert decision.status_code == 200 and decision.json()["model"]["model_id"] == "acard-v1"
    log = server.log()
    for kind in REFUSALS:
        assert f"refused model artifact {registry / f'bad-{kind}'}" in log


def test_offering_bad_artifacts_changes_nothing(
    server: ScoringServer, tmp_path: Path, trained: TrainedModel
) -> None:
    # arrange
    staging = tmp_path / "staging"
    signer_pub = next((server.registry / "trusted_keys").glob("*.pub"))
    assert signer_pub.exists()
    registry_signer = _registry_signer(server)
    offers = {
        kind: corrupt(kind, staging, trained, registry_signer, model_id=f"offer-{kind}")
        for kind in REFUSALS
    }
    # a tampered copy of the loaded champion, under the champion's own id
    shadow = tmp_path / "shadow"
    shutil.copytree(server.registry / "acard-v1", shadow / "acard-v1")
    text = (shadow / "acard-v1" / "artifact.json").read_text()
    (shadow / "acard-v1" / "artifact.json").write_text(
        text.replace('"base_score":600.0', '"base_score":900.0')
    )
    offers["champion-tampered"] = shadow / "acard-v1"
    champion_digest = hashlib.sha256(
        (server.registry / "acard-v1" / "artifact.json").read_bytes()
    ).hexdigest()
    with server.client() as client:
        before = client.get("/v1/models").json()
        score_before = client.post(DECISION, json=application(trained, 1, age=30)).json()["score"]

        # act
        answers = {
            kind: client.post("/v1/models", json={"source_dir": str(path)})
            for kind, path in offers.items()
        }
        missing = client.post("/v1/models", json={"source_dir": str(tmp_path / "nowhere")})
        upload = client.post(
            "/v1/models/upload",
            files={
                "artifact": ("artifact.json", (offers["tampered"] / "artifact.json").read_bytes()),
                "signature": ("artifact.sig", (shadow / "acard-v1" / "artifact.sig").read_bytes()),
            },
        )
        after = client.get("/v1/models").json()
        score_after = client.post(
            DECISION, json=application(trained, 1, prefix="again", age=30)
        ).json()["score"]

    # assert
    for kind, response in answers.items():
        assert response.status_code == 422, (kind, response.text)
    reasons = {kind: r.json()["detail"]["reason"] for kind, r in answers.items()}
    assert reasons == {
        "tampered": "tampered",
        "unsigned": "unsigned",
        "untrusted": "untrusted",
        "incompatible": "incompatible",
        "champion-tampered": "tampered",
    }
    assert missing.status_code == 422 and missing.json()["detail"]["reason"] == "unreadable"
    assert upload.status_code == 422
    assert after["models"] == before["models"] and after["stages"] == before["stages"]
    assert score_after == score_before
    assert (
        hashlib.sha256((server.registry / "acard-v1" / "artifact.json").read_bytes()).hexdigest()
        == champion_digest
    )
    assert not any((server.registry / f"offer-{k}").exists() for k in REFUSALS)
    assert "refused model artifact (tampered)" in server.log()


def _registry_signer(server: ScoringServer) -> Signer:
    # the fixture's signer is not exposed by the server; trust a fresh one for the offers
    signer = new_signer("release_party")
    trust(server.registry, signer)
    return signer


def test_register_by_directory_and_by_upload_then_conflict(
    tmp_path: Path, trained: TrainedModel, process_registry: ProcessRegistry
) -> None:
    # arrange
    registry = tmp_path / "registry"
    signer = build_registry(registry, {"acard-v1": "application"})
    staging = tmp_path / "staging"
    by_dir = publish(
        staging, make_artifact(trained, model_id="bcard-v2", stage="behaviour"), signer
    )
    by_upload = publish(staging, make_artifact(trained, model_id="ccard-v2", stage=None), signer)
    clash = publish(
        tmp_path / "clash",
        make_artifact(trained, model_id="bcard-v2", stage="behaviour", bias_shift=1.0),
        signer,
    )
    server = start_server(tmp_path, registry, processes=process_registry)

    with server.client() as client:
        # act
        registered = client.post(
            "/v1/models", json={"source_dir": str(by_dir), "actor": "ops", "note": "Q3 release"}
        )
        no_stage = client.post(
            "/v1/models/upload",
            files={
                "artifact": ("a.json", (by_upload / "artifact.json").read_bytes()),
                "signature": ("a.sig", (by_upload / "artifact.sig").read_bytes()),
            },
        )
        uploaded = client.post(
            "/v1/models/upload",
            data={"stage": "collection", "actor": "ops"},
            files={
                "artifact": ("a.json", (by_upload / "artifact.json").read_bytes()),
                "signature": ("a.sig", (by_upload / "artifact.sig").read_bytes()),
            },
        )
        conflict = client.post("/v1/models", json={"source_dir": str(clash)})
        behaviour = client.post(
            "/v1/accounts/behaviour",
            json={
                "account_id": "a1",
                "current_limit": 100.0,
                "features": application(trained, 3)["features"],
            },
        )
        events = client.get("/v1/model-events").json()

    # assert
    assert registered.status_code == 201, registered.text
    assert registered.json()["stage"]["champion_id"] == "bcard-v2"
    assert no_stage.status_code == 422 and no_stage.json()["detail"][0]["loc"] == ["body", "stage"]
    assert uploaded.status_code == 201 and uploaded.json()["stage"]["champion_id"] == "ccard-v2"
    assert (registry / "ccard-v2" / "artifact.sig").exists()
    assert conflict.status_code == 409
    assert behaviour.json()["model"]["model_id"] == "bcard-v2"
    assert any(
        e["action"] == "registered" and e["model_id"] == "bcard-v2" and e["note"] == "Q3 release"
        for e in events
    )


def test_challenger_gets_its_share_by_a_stable_applicant_hash(
    tmp_path: Path, trained: TrainedModel, process_registry: ProcessRegistry
) -> None:
    # arrange
    registry = tmp_path / "registry"
    build_registry(
        registry,
        {"acard-v1": "application", "acard-v2": "application"},
        bias_shift={"acard-v2": -12.0},
    )
    server = start_server(
        tmp_path,
        registry,
        args=("--challenger-share", "application=0.3"),
        processes=process_registry,
    )
    with server.client() as client:
        promote = client.post("/v1/models/acard-v2/promote", json={"role": "challenger"})

        # act
        first = [
            client.post(DECISION, json=application(trained, i, prefix="split", age=30)).json()
            for i in range(200)
        ]
        again = []
        for i, answer in enumerate(first[:60]):
            body = application(trained, i, prefix="split", age=30) | {
                "application_id": f"retry-{i}"
            }
            again.append((answer["model"], client.post(DECISION, json=body).json()["model"]))

    # assert
    assert promote.status_code == 200 and promote.json()["challenger_share"] == 0.3
    roles = [a["model"]["role"] for a in first]
    share = roles.count("challenger") / len(roles)
    assert 0.2 <= share <= 0.4, share
    assert all(
        a["model"]["model_id"] == ("acard-v2" if a["model"]["role"] == "challenger" else "acard-v1")
        for a in first
    )
    assert all(a == b for a, b in again), "the same applicant must always reach the same model"
    challenger_pds = [a["pd"] for a in first if a["model"]["role"] == "challenger"]
    assert max(challenger_pds) < 0.01


def test_promotion_and_rollback_through_the_api_are_audited(
    tmp_path: Path, trained: TrainedModel, process_registry: ProcessRegistry
) -> None:
    # arrange
    registry = tmp_path / "registry"
    build_registry(
        registry,
        {"acard-v1": "application", "acard-v2": "application"},
        bias_shift={"acard-v2": 12.0},
    )
    server = start_server(tmp_path, registry, processes=process_registry)
    with server.client() as client:
        # act
        promoted = client.post(
            "/v1/models/acard-v2/promote",
            json={"role": "champion", "actor": "risk-team", "note": "new release"},
        )
        under_v2 = client.post(DECISION, json=application(trained, 1, age=30)).json()
        twice = client.post("/v1/models/acard-v2/promote", json={"role": "champion"})
        rolled = client.post(
            "/v1/stages/application/rollback",
            json={"actor": "risk-team", "note": "declines everyone"},
        )
        under_v1 = client.post(DECISION, json=application(trained, 2, age=30)).json()
        empty = client.post("/v1/stages/application/rollback", json={})
        stage = client.get("/v1/stages/application").json()
        events = client.get("/v1/model-events").json()
        audit = client.get("/v1/audit/verify").json()

    # assert
    assert promoted.status_code == 200 and promoted.json()["champion_id"] == "acard-v2"
    assert promoted.json()["history"] == ["acard-v1"]
    assert under_v2["model"]["model_id"] == "acard-v2" and under_v2["decision"] == "decline"
    assert twice.status_code == 409
    assert rolled.status_code == 200 and rolled.json()["champion_id"] == "acard-v1"
    assert under_v1["model"]["model_id"] == "acard-v1"
    assert empty.status_code == 409
    assert stage["champion_id"] == "acard-v1" and stage["history"] == []
    assert [e["action"] for e in events[:2]] == ["rolled_back", "promoted"]
    assert events[0]["actor"] == "risk-team" and events[0]["previous_model_id"] == "acard-v2"
    assert audit["ok"] is True
    kinds = [
        r[0]
        for r in sqlite3.connect(server.db_url.removeprefix("sqlite:///")).execute(
            "SELECT kind FROM audit_log"
        )
    ]
    assert "model_promoted" in kinds and "model_rolled_back" in kinds


def test_cli_promotion_and_rollback_reach_the_running_service(
    tmp_path: Path, trained: TrainedModel, process_registry: ProcessRegistry
) -> None:
    # arrange
    registry = tmp_path / "registry"
    signer = build_registry(registry, {"acard-v1": "application"})
    staged = publish(
        tmp_path / "staging",
        make_artifact(trained, model_id="acard-v3", stage="application"),
        signer,
    )
    server = start_server(tmp_path, registry, processes=process_registry)
    runner = CliRunner()

    def champion() -> str:
        return str(
            httpx.get(
                f"{server.base_url}/v1/stages/application",
                headers=bearer(server.keys[Role.VIEWER]),
                timeout=5,
            ).json()["champion_id"]
        )

    def wait_champion(expected: str) -> str:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and champion() != expected:
            time.sleep(0.2)
        return champion()

    # act
    registered = runner.invoke(
        cli, ["models", "register", str(staged), "--registry", str(registry), "--db", server.db_url]
    )
    promoted = runner.invoke(
        cli,
        [
            "models",
            "promote",
            "acard-v3",
            "--registry",
            str(registry),
            "--db",
            server.db_url,
            "--note",
            "cli",
        ],
    )
    after_promote = wait_champion("acard-v3")
    answer = httpx.post(
        f"{server.base_url}{DECISION}",
        json=application(trained, 9, age=30),
        headers=bearer(server.keys[Role.SCORING]),
        timeout=10,
    ).json()
    listed = runner.invoke(
        cli, ["models", "list", "--registry", str(registry), "--db", server.db_url]
    )
    rolled = runner.invoke(cli, ["models", "rollback", "application", "--db", server.db_url])
    after_rollback = wait_champion("acard-v1")
    verified = runner.invoke(cli, ["audit", "verify", "--db", server.db_url])

    # assert
    assert registered.exit_code == 0, registered.output
    assert promoted.exit_code == 0, promoted.output
    assert after_promote == "acard-v3"
    assert answer["model"]["model_id"] == "acard-v3"
    assert "acard-v3\tstage=application\trole=champion of application" in listed.output
    assert rolled.exit_code == 0 and after_rollback == "acard-v1"
    assert verified.exit_code == 0, verified.output


def test_models_listing_describes_features_and_lineage(
    shared_server: ScoringServer, trained: TrainedModel
) -> None:
    # act
    with shared_server.client() as client:
        models = client.get("/v1/models").json()
        one = client.get("/v1/models/acard-v1").json()

    # assert
    assert {m["model_id"]: m["role"] for m in models["models"]} == {
        "acard-v1": "champion",
        "bcard-v1": "champion",
        "ccard-v1": "champion",
    }
    assert one["scorecard"] == {"base_score": 600.0, "base_odds": 50.0, "pdo": 20.0}
    assert [f["name"] for f in one["features"]] == trained.schema.feature_names
    assert one["lineage"]["parties"] == ["bank", "ecommerce", "telecom"]
    assert json.dumps(one)  # JSON all the way down
