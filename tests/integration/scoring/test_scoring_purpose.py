"""Loan purposes in the scoring service, on a real app and database: unsure classifications join
the review queue, a risk officer corrects one through /v1/reviews, the correction is audited and
changes the next model's answer; confident ones are stored without a person."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from fedrisk.decisions.purpose import PURPOSES, PurposeClassifier, train_with_corrections
from fedrisk.decisions.purpose_texts import LabelledText, generate_purpose_texts
from server.scoring.apikeys import Role
from server.scoring.app import create_app
from server.scoring.audit import audited_transaction, verify_chain
from server.scoring.db.engine import make_engine
from server.scoring.purpose import (
    PurposeRecord,
    classify_and_record,
    corrections,
    get_purpose,
)
from tests.support.artifacts import TrainedModel, build_registry
from tests.support.scoring import (
    bearer,
    create_keys,
    decision_write,
    service_settings,
    write_decisions,
)

pytestmark = [pytest.mark.integration]


@dataclass
class Service:
    client: TestClient
    engine: Engine
    officer: dict[str, str]
    training: list[LabelledText]
    classifier: PurposeClassifier
    records: dict[str, tuple[str, PurposeRecord]]
    """decision id -> (text, what was stored)"""


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, trained: TrainedModel) -> Iterator[Service]:
    """An app whose database holds 60 decisions, each with a classified description."""
    workdir = tmp_path_factory.mktemp("purpose")
    registry = workdir / "registry"
    build_registry(registry, {"acard-v1": "application"})
    db_url = f"sqlite:///{workdir / 'scoring.db'}"
    keys = create_keys(db_url, (Role.RISK_OFFICER, Role.ADMIN))
    engine = make_engine(db_url)
    training = generate_purpose_texts(np.random.default_rng(0), 1000)
    classifier = PurposeClassifier().fit([x.text for x in training], [x.label for x in training])
    described = generate_purpose_texts(np.random.default_rng(9), 60, mix_rate=0.6)
    items = [decision_write(i) for i in range(len(described))]
    assert write_decisions(engine, items) == [None] * len(items)
    records = {}
    for item, text in zip(items, described, strict=True):
        decision_id = item.row["decision_id"]
        stored = audited_transaction(
            engine,
            lambda c, ch, d=decision_id, t=text.text: classify_and_record(
                c, ch, classifier, decision_id=d, text=t
            ),
        )
        records[decision_id] = (text.text, stored)
    app = create_app(service_settings(registry, db_url=db_url))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Service(
            client, engine, bearer(keys[Role.RISK_OFFICER]), training, classifier, records
        )
    engine.dispose()


def test_unsure_purposes_wait_in_the_review_queue_and_sure_ones_do_not(service: Service) -> None:
    # act
    listed = service.client.get(
        "/v1/reviews", params={"kind": "purpose_label", "limit": 500}, headers=service.officer
    )

    # assert
    queued = {d for d, (_, r) in service.records.items() if r.status == "queued"}
    automatic = {d for d, (_, r) in service.records.items() if r.status == "auto"}
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert {item["decision_id"] for item in items} == queued
    assert queued and automatic
    for decision_id in automatic:
        record = service.records[decision_id][1]
        assert record.label == record.predicted and record.confidence >= 0.6
    for item in items:
        text, record = service.records[item["decision_id"]]
        assert text[:40] in item["reason"] and record.predicted in item["reason"]


def test_a_correction_through_the_review_queue_feeds_the_next_training(service: Service) -> None:
    # arrange: the first queued text, and a purpose other than the model's guess
    decision_id, (text, record) = next(
        (d, v) for d, v in service.records.items() if v[1].status == "queued"
    )
    right = next(label for label in PURPOSES if label != record.predicted)
    path = f"/v1/reviews/{record.review_item_id}"

    # act
    claimed = service.client.post(
        f"{path}/claim", json={"reviewer": "ana"}, headers=service.officer
    )
    bad = service.client.post(
        f"{path}/resolve",
        json={"reviewer": "ana", "resolution": "relabel", "label": "yacht"},
        headers=service.officer,
    )
    wrong_kind = service.client.post(
        f"{path}/resolve",
        json={"reviewer": "ana", "resolution": "approve"},
        headers=service.officer,
    )
    resolved = service.client.post(
        f"{path}/resolve",
        json={"reviewer": "ana", "resolution": "relabel", "label": right, "note": "checked"},
        headers=service.officer,
    )
    with service.engine.connect() as connection:
        stored = get_purpose(connection, decision_id)
        fixed_texts, fixed_labels = corrections(connection)
        report = verify_chain(connection)
    train_texts = [x.text for x in service.training]
    train_labels = [x.label for x in service.training]
    next_model = train_with_corrections(
        train_texts, train_labels, corrected_texts=fixed_texts, corrected_labels=fixed_labels
    )

    # assert
    assert claimed.status_code == 200
    assert (bad.status_code, wrong_kind.status_code, resolved.status_code) == (422, 422, 200)
    assert resolved.json()["status"] == "resolved" and resolved.json()["resolution"] == "relabel"
    assert (stored.label, stored.status) == (right, "corrected")
    assert (fixed_texts, fixed_labels) == ([text], [right])
    assert service.classifier.predict([text])[0].label == record.predicted
    assert next_model.predict([text])[0].label == right
    assert report.ok, report.problem


def test_a_label_on_another_kind_of_item_is_refused(service: Service) -> None:
    # act: a purpose label on an item that is not a purpose item (none exists: 404 first)
    missing = service.client.post(
        "/v1/reviews/999999/resolve",
        json={"reviewer": "ana", "resolution": "relabel", "label": "car"},
        headers=service.officer,
    )

    # assert
    assert missing.status_code == 404
