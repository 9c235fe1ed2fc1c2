"""Loan purposes in the scoring service, on a real app and database: descriptions classified
through the API, unsure ones waiting in the review queue, a risk officer's correction through
/v1/reviews changing what the retrained model answers for the same text."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from fedrisk.decisions.purpose import PURPOSES
from fedrisk.decisions.purpose_texts import generate_purpose_texts
from fedrisk.errors import ConfigError
from server.scoring.apikeys import Role
from server.scoring.app import create_app
from server.scoring.audit import verify_chain
from server.scoring.db.engine import make_engine
from server.scoring.purpose import corrections, get_purpose, read_examples
from tests.support.artifacts import TrainedModel, build_registry
from tests.support.scoring import (
    bearer,
    create_keys,
    decision_write,
    service_settings,
    write_decisions,
)

pytestmark = [pytest.mark.integration]

EXAMPLES = 1000


@dataclass
class Service:
    client: TestClient
    engine: Engine
    keys: dict[Role, dict[str, str]]
    records: dict[str, tuple[str, dict[str, Any]]]
    """decision id -> (text, the API's answer)"""
    spare: list[str]
    """Decision ids with no purpose yet."""


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, trained: TrainedModel) -> Iterator[Service]:
    """An app trained on 1,000 generated examples; 60 decisions' descriptions classified."""
    workdir = tmp_path_factory.mktemp("purpose")
    registry = workdir / "registry"
    build_registry(registry, {"acard-v1": "application"})
    db_url = f"sqlite:///{workdir / 'scoring.db'}"
    keys = {role: bearer(key) for role, key in create_keys(db_url).items()}
    examples = workdir / "purposes.csv"
    with examples.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for x in generate_purpose_texts(np.random.default_rng(0), EXAMPLES):
            writer.writerow([x.text, x.label])
    engine = make_engine(db_url)
    described = generate_purpose_texts(np.random.default_rng(9), 60, mix_rate=0.6)
    items = [decision_write(i) for i in range(len(described) + 5)]
    assert write_decisions(engine, items) == [None] * len(items)
    ids = [item.row["decision_id"] for item in items]
    settings = service_settings(registry, db_url=db_url, purpose_examples_path=examples)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        records = {}
        for decision_id, text in zip(ids, described, strict=False):
            answer = client.post(
                f"/v1/decisions/{decision_id}/purpose",
                json={"text": text.text},
                headers=keys[Role.SCORING],
            )
            assert answer.status_code == 201, answer.text
            records[decision_id] = (text.text, answer.json())
        yield Service(client, engine, keys, records, ids[len(described) :])
    engine.dispose()


def test_unsure_purposes_wait_in_the_review_queue_and_sure_ones_do_not(service: Service) -> None:
    # act
    listed = service.client.get(
        "/v1/reviews",
        params={"kind": "purpose_label", "limit": 500},
        headers=service.keys[Role.RISK_OFFICER],
    )
    again = service.client.post(
        f"/v1/decisions/{next(iter(service.records))}/purpose",
        json={"text": "buy a car"},
        headers=service.keys[Role.SCORING],
    )

    # assert
    queued = {d for d, (_, r) in service.records.items() if r["status"] == "queued"}
    automatic = {d for d, (_, r) in service.records.items() if r["status"] == "auto"}
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert {item["decision_id"] for item in items} == queued
    assert queued and automatic
    for decision_id in automatic:
        record = service.records[decision_id][1]
        assert record["label"] == record["predicted"] and record["confidence"] >= 0.6
    for item in items:
        text, record = service.records[item["decision_id"]]
        assert text[:40] in item["reason"] and record["predicted"] in item["reason"]
    assert again.status_code == 409


def test_a_correction_through_the_review_queue_changes_the_retrained_answer(
    service: Service,
) -> None:
    # arrange: the first queued text, and a purpose other than the model's guess
    client, keys = service.client, service.keys
    decision_id, (text, record) = next(
        (d, v) for d, v in service.records.items() if v[1]["status"] == "queued"
    )
    right = next(label for label in PURPOSES if label != record["predicted"])
    path = f"/v1/reviews/{record['review_item_id']}"
    officer = keys[Role.RISK_OFFICER]

    def classify(decision: str) -> dict[str, Any]:
        answer = client.post(
            f"/v1/decisions/{decision}/purpose", json={"text": text}, headers=keys[Role.SCORING]
        )
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    # act
    before = classify(service.spare[0])
    claimed = client.post(f"{path}/claim", json={"reviewer": "ana"}, headers=officer)
    bad = client.post(
        f"{path}/resolve",
        json={"reviewer": "ana", "resolution": "relabel", "label": "yacht"},
        headers=officer,
    )
    wrong_kind = client.post(
        f"{path}/resolve", json={"reviewer": "ana", "resolution": "approve"}, headers=officer
    )
    resolved = client.post(
        f"{path}/resolve",
        json={"reviewer": "ana", "resolution": "relabel", "label": right, "note": "checked"},
        headers=officer,
    )
    retrained = client.post("/v1/purpose/retrain", headers=keys[Role.ADMIN])
    after = classify(service.spare[1])
    with service.engine.connect() as connection:
        stored = get_purpose(connection, decision_id)
        fixed = corrections(connection)
        report = verify_chain(connection)

    # assert
    assert claimed.status_code == 200
    assert (bad.status_code, wrong_kind.status_code, resolved.status_code) == (422, 422, 200)
    assert resolved.json()["resolution"] == "relabel"
    assert (stored.label, stored.status) == (right, "corrected")
    assert fixed == ([text], [right])
    assert retrained.status_code == 200
    assert retrained.json() == {"examples": EXAMPLES, "corrections": 1}
    assert before["predicted"] == record["predicted"]
    assert after["predicted"] == right
    assert report.ok, report.problem


def test_a_label_on_another_kind_of_item_is_refused(service: Service) -> None:
    # arrange: a fraud-style item that is not about purposes
    item = decision_write(
        999,
        outcome="manual_review",
        review={"kind": "manual_review", "status": "open", "reason": "band"},
    )
    assert write_decisions(service.engine, [item]) == [None]
    officer = service.keys[Role.RISK_OFFICER]
    listed = service.client.get(
        "/v1/reviews", params={"kind": "manual_review"}, headers=officer
    ).json()["items"]
    path = f"/v1/reviews/{listed[0]['item_id']}"

    # act
    service.client.post(f"{path}/claim", json={"reviewer": "bo"}, headers=officer)
    relabel = service.client.post(
        f"{path}/resolve",
        json={"reviewer": "bo", "resolution": "relabel", "label": "car"},
        headers=officer,
    )
    approve = service.client.post(
        f"{path}/resolve", json={"reviewer": "bo", "resolution": "approve"}, headers=officer
    )

    # assert
    assert (relabel.status_code, approve.status_code) == (422, 200)


def test_a_bad_examples_file_is_refused_with_every_bad_line(tmp_path: Path) -> None:
    # arrange
    path = tmp_path / "examples.csv"
    path.write_text("text,label\nbuy a car,car\n,car\nfix the roof,roof\n", encoding="utf-8")
    wrong_columns = tmp_path / "columns.csv"
    wrong_columns.write_text("description,purpose\nbuy a car,car\n", encoding="utf-8")

    # act / assert
    with pytest.raises(ConfigError, match="2 bad row") as bad:
        read_examples(path)
    assert "line 3" in str(bad.value) and "line 4" in str(bad.value)
    with pytest.raises(ConfigError, match="must have columns text and label"):
        read_examples(wrong_columns)
