"""Service configuration: policy and rule files, settings validation, identifier key
(in-process)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from fedrisk.errors import DecisionError
from server.scoring.antifraud import IdentifierHasher
from server.scoring.app import create_app
from server.scoring.settings import DEFAULT_IDENTIFIER_KEY, Settings
from tests.support.artifacts import TrainedModel, build_registry
from tests.support.scoring import admin_headers, application, service_settings

DECISION = "/v1/applications/decision"


@pytest.fixture
def registry(tmp_path: Path, trained: TrainedModel) -> Path:
    path = tmp_path / "registry"
    build_registry(path, {"acard-v1": "application"})
    return path


def test_a_custom_policy_sets_the_cut_offs(
    registry: Path, tmp_path: Path, trained: TrainedModel
) -> None:
    # arrange: decline anything with PD above 0.0001
    policy = tmp_path / "policy.toml"
    policy.write_text("[application]\napprove_cutoff = 0.00005\ndecline_cutoff = 0.0001\n")
    settings = service_settings(registry, policy_path=policy)

    # act
    with TestClient(create_app(settings), headers=admin_headers(settings)) as client:
        answers = [
            client.post(DECISION, json=application(trained, i, age=30)).json() for i in range(5)
        ]

    # assert
    assert {a["decision"] for a in answers} == {"decline"}
    assert all(a["credit_limit"] is None for a in answers)


def test_invalid_rule_or_policy_files_stop_start_up(registry: Path, tmp_path: Path) -> None:
    # arrange
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - id: R1\n    kind: velocity\n    field: device_id\n    severity: high\n"
    )
    policy = tmp_path / "policy.toml"
    policy.write_text("[application]\napprove_cutoff = 0.5\ndecline_cutoff = 0.1\n")

    # act / assert
    with (
        pytest.raises(DecisionError, match="R1"),
        TestClient(create_app(service_settings(registry, fraud_rules_path=rules))),
    ):
        pass
    with (
        pytest.raises(DecisionError, match="approve_cutoff"),
        TestClient(create_app(service_settings(registry, policy_path=policy))),
    ):
        pass


def test_settings_are_validated(registry: Path) -> None:
    # act / assert
    with pytest.raises(ValidationError, match="challenger share"):
        service_settings(registry, challenger_shares={"application": 1.5})
    with pytest.raises(ValidationError):
        service_settings(registry, max_body_bytes=10)
    with pytest.raises(ValidationError):
        Settings.model_validate({"registry_dir": str(registry), "unknown": 1})


def test_subjects_are_hashed_with_the_key_in_the_settings(
    registry: Path, tmp_path: Path, trained: TrainedModel
) -> None:
    # arrange
    db = tmp_path / "keyed.db"
    settings = service_settings(
        registry, identifier_key=SecretStr("lender-secret"), db_url=f"sqlite:///{db}"
    )

    # act
    with TestClient(create_app(settings), headers=admin_headers(settings)) as client:
        answer = client.post(DECISION, json=application(trained, 1, age=30)).json()
    with sqlite3.connect(db) as connection:
        (stored,) = connection.execute(
            "SELECT subject_hash FROM decisions WHERE decision_id = ?", (answer["decision_id"],)
        ).fetchone()

    # assert
    assert stored == IdentifierHasher(b"lender-secret").hash("subject", "app-cust-1")
    assert stored != IdentifierHasher(DEFAULT_IDENTIFIER_KEY.encode()).hash("subject", "app-cust-1")
