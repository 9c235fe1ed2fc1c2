"""HTTP tests of the scoring service through a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.scoring.apikeys import Role
from server.scoring.audit import canonical_json
from server.scoring.payloads import ApplicationRequest
from tests.support.artifacts import TrainedModel, build_registry
from tests.support.scoring import (
    ScoringServer,
    application,
    sample_features,
    server_at,
)

DECISION = "/v1/applications/decision"
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def post(server: ScoringServer, path: str, body: object) -> httpx.Response:
    with server.client() as client:
        return client.post(path, json=body)


def db_path(server: ScoringServer) -> Path:
    return Path(server.db_url.removeprefix("sqlite:///"))


# ------------------------------------------------------------------------------ basics
def test_health_docs_and_openapi(shared_server: ScoringServer) -> None:
    # act
    with shared_server.client(role=None) as anonymous:
        health = anonymous.get("/healthz")
        docs = anonymous.get("/docs")
        spec_without_key = anonymous.get("/openapi.json")
    with shared_server.client(role=Role.VIEWER) as client:
        spec = client.get("/openapi.json").json()

    # assert
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["stages"] == {
        "application": "acard-v1",
        "behaviour": "bcard-v1",
        "collection": "ccard-v1",
    }
    # the CDN-loading Swagger page is gone; the description itself needs a key like every route
    assert docs.status_code == 404 and spec_without_key.status_code == 401
    assert spec["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert spec["paths"][DECISION]["post"]["x-required-role"] == "scoring"
    for path in (
        DECISION,
        "/v1/accounts/behaviour",
        "/v1/collections/strategy",
        "/v1/batch/{stage}",
        "/v1/models",
        "/v1/reviews",
        "/metrics",
    ):
        assert path in spec["paths"]


def test_application_decision_full_path_is_persisted_without_raw_pii(
    shared_server: ScoringServer, trained: TrainedModel
) -> None:
    # arrange
    body = application(
        trained,
        1,
        prefix="pii",
        device_id="DEVICE-SECRET-123",
        phone="+447700900123",
        ip="203.0.113.9",
        bank_card="4111111111111111",
        age=40,
    )

    # act
    response = post(shared_server, DECISION, body)
    stored = shared_server.client().get(f"/v1/decisions/{response.json()['decision_id']}")

    # assert
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["decision"] in {"approve", "manual_review", "decline"}
    assert result["model"] == {"model_id": "acard-v1", "stage": "application", "role": "champion"}
    assert 0.0 < result["pd"] < 1.0 and 300 < result["score"] < 900
    assert len(result["reasons"]) <= 4
    assert all(
        r["code"].startswith("RC-") and r["text"] and r["points"] > 0 for r in result["reasons"]
    )
    assert result["fraud"]["graph"]["component_size"] == 1
    if result["decision"] != "decline":
        assert result["credit_limit"] > 0 and result["price_tier"]
    assert stored.status_code == 200
    canonical = canonical_json(ApplicationRequest.model_validate(body).model_dump(mode="json"))
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    assert stored.json()["fingerprint"] == expected
    dump = "\n".join(sqlite3.connect(db_path(shared_server)).iterdump())
    for secret in (
        "DEVICE-SECRET-123",
        "447700900123",
        "203.0.113.9",
        "4111111111111111",
        "pii-cust-1",
    ):
        assert secret not in dump


def test_behaviour_early_warnings_drive_the_limit_action(
    shared_server: ScoringServer, trained: TrainedModel
) -> None:
    # arrange
    base = {
        "account_id": "acct-1",
        "current_limit": 5000.0,
        "features": sample_features(trained, 2),
    }

    # act
    frozen = post(
        shared_server,
        "/v1/accounts/behaviour",
        {**base, "prohibited_use_flows": [{"kind": "securities", "amount": 900.0}]},
    )
    cut = post(
        shared_server,
        "/v1/accounts/behaviour",
        {**base, "multi_lender_count": 7, "payment_delays": 3},
    )

    # assert
    assert frozen.status_code == 200, frozen.text
    assert frozen.json()["action"] == "freeze" and frozen.json()["new_limit"] == 0.0
    assert "BW-PROHIBITED-USE" in {w["code"] for w in frozen.json()["warnings"]}
    assert cut.json()["action"] == "cut" and cut.json()["new_limit"] == 2500.0
    assert {"BW-MULTI-LENDER", "BW-PAYMENT-DELAYS"} <= {w["code"] for w in cut.json()["warnings"]}
    assert cut.json()["model"]["model_id"] == "bcard-v1"
    assert len(cut.json()["score_reasons"]) <= 4


def test_collection_strategy_segments_and_acts(
    shared_server: ScoringServer, trained: TrainedModel
) -> None:
    # arrange
    features = sample_features(trained, 3)

    # act
    unwilling = post(
        shared_server,
        "/v1/collections/strategy",
        {"account_id": "c-1", "features": features, "days_past_due": 120, "broken_promises": 3},
    )
    mild = post(
        shared_server,
        "/v1/collections/strategy",
        {"account_id": "c-2", "features": features, "days_past_due": 40},
    )

    # assert
    assert unwilling.status_code == 200, unwilling.text
    assert (
        unwilling.json()["segment"] == "unwilling"
        and unwilling.json()["action"] == "legal_referral"
    )
    assert abs(unwilling.json()["recovery_probability"] + unwilling.json()["pd"] - 1.0) < 1e-9
    assert mild.json()["segment"] in {"ability_problem", "short_oversight", "unwilling"}
    assert mild.json()["model"]["model_id"] == "ccard-v1"


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("mutate", "loc"),
    [
        (lambda b: b | {"bogus": 1}, ["body", "bogus"]),
        (lambda b: b | {"features": b["features"] | {"bogus": 1.0}}, ["body", "features", "bogus"]),
        (lambda b: b | {"features": b["features"] | {"age": 500.0}}, ["body", "features", "age"]),
        (lambda b: b | {"features": b["features"] | {"age": "old"}}, ["body", "features", "age"]),
        (
            lambda b: b | {"features": b["features"] | {"region": "atlantis"}},
            ["body", "features", "region"],
        ),
        (
            lambda b: b | {"features": {k: v for k, v in b["features"].items() if k != "age"}},
            ["body", "features", "age"],
        ),
        (lambda b: b | {"application_id": "bad id with spaces"}, ["body", "application_id"]),
        (lambda b: b | {"signals": {"age": -3}}, ["body", "signals", "age"]),
    ],
    ids=[
        "unknown-field",
        "unknown-feature",
        "out-of-range",
        "wrong-type",
        "unknown-category",
        "missing",
        "bad-id",
        "bad-signal",
    ],
)
def test_invalid_requests_get_422_naming_the_field(
    shared_server: ScoringServer, trained: TrainedModel, mutate: object, loc: list[str]
) -> None:
    # arrange
    body = mutate(application(trained, 5, prefix="bad"))  # type: ignore[operator]

    # act
    response = post(shared_server, DECISION, body)

    # assert
    assert response.status_code == 422, response.text
    assert loc in [e["loc"][: len(loc)] for e in response.json()["detail"]]


def test_malformed_json_is_422_and_unknown_things_are_404(shared_server: ScoringServer) -> None:
    # act
    with shared_server.client() as client:
        malformed = client.post(
            DECISION,
            content=b'{"application_id": "x", ',
            headers={"content-type": "application/json"},
        )
        stage = client.post(
            "/v1/batch/mortgage", content=b"a,b\n1,2\n", headers={"content-type": "text/csv"}
        )
        model = client.get("/v1/models/no-such-model")
        decision = client.get("/v1/decisions/0123")
        review = client.post("/v1/reviews/999999/claim", json={"reviewer": "ann"})
        promote = client.post("/v1/models/no-such-model/promote", json={"role": "champion"})
        rollback = client.post("/v1/stages/mortgage/rollback", json={})
        surrogate = client.post(
            "/v1/reviews/1/claim",
            content=b'{"reviewer": "\\udc00"}',
            headers={"content-type": "application/json"},
        )
        nul_path = client.post("/v1/models", json={"source_dir": "/tmp/\x00x"})

    # assert
    assert malformed.status_code == 422 and malformed.json()["detail"][0]["type"] == "json_invalid"
    assert [r.status_code for r in (stage, model, decision, review, promote, rollback)] == [404] * 6
    assert surrogate.status_code == 422 and "surrogate" in surrogate.text
    assert nul_path.status_code == 422 and nul_path.json()["detail"][0]["loc"] == [
        "body",
        "source_dir",
    ]


def test_oversized_bodies_get_413_declared_or_streamed(
    shared_server: ScoringServer, trained: TrainedModel
) -> None:
    # arrange: default limit 64 KiB
    body = application(trained, 6, prefix="big")
    body["signals"] = {"applicant_name": "x" * 150}
    big = json.dumps(body).encode() + b" " * 70_000

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    # act
    with shared_server.client() as client:
        declared = client.post(DECISION, content=big, headers={"content-type": "application/json"})
        streamed = client.post(
            DECISION, content=chunks(), headers={"content-type": "application/json"}
        )
        fine = client.post(DECISION, json=application(trained, 7, prefix="big"))

    # assert
    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert "at most 65536 bytes" in streamed.json()["detail"]
    assert fine.status_code == 200


# ------------------------------------------------------------------------------ anti-fraud
def test_fraud_rules_hit_are_returned_stored_and_queued(
    shared_server: ScoringServer, trained: TrainedModel
) -> None:
    # arrange
    with shared_server.client() as client:
        listed = client.post("/v1/fraud/lists/device_blacklist", json={"add": ["evil-device-1"]})

    # act
    blacklisted = post(
        shared_server,
        DECISION,
        application(trained, 10, prefix="fr", device_id="evil-device-1", age=30),
    )
    underage = post(shared_server, DECISION, application(trained, 11, prefix="fr", age=16))
    mismatch = post(
        shared_server,
        DECISION,
        application(
            trained, 12, prefix="fr", applicant_name="Ann Lee", phone_owner_name="Bob Stone", age=30
        ),
    )
    velocity = [
        post(
            shared_server,
            DECISION,
            application(trained, 20 + i, prefix="vel", id_number="ID-777", age=30),
        )
        for i in range(4)
    ]
    with shared_server.client() as client:
        queue = client.get("/v1/reviews", params={"kind": "fraud", "limit": 500}).json()["items"]
        stored = client.get(f"/v1/decisions/{blacklisted.json()['decision_id']}").json()

    # assert
    assert listed.status_code == 200 and listed.json() == {"name": "device_blacklist", "size": 1}
    assert blacklisted.json()["decision"] == "decline"
    assert [h["rule_id"] for h in blacklisted.json()["fraud"]["hits"]] == ["FR-DEVICE-BLACKLIST"]
    assert stored["rules_hit"] == ["FR-DEVICE-BLACKLIST"]
    assert underage.json()["decision"] == "decline"
    assert "FR-AGE-POLICY" in {h["rule_id"] for h in underage.json()["fraud"]["hits"]}
    assert mismatch.json()["decision"] in {"manual_review", "decline"}
    assert "FR-NAME-PHONE-MISMATCH" in {h["rule_id"] for h in mismatch.json()["fraud"]["hits"]}
    assert [
        ("FR-ID-VELOCITY" in {h["rule_id"] for h in r.json()["fraud"]["hits"]}) for r in velocity
    ] == [False, False, False, True]
    queued = {item["decision_id"] for item in queue}
    assert {
        blacklisted.json()["decision_id"],
        underage.json()["decision_id"],
        mismatch.json()["decision_id"],
    } <= queued


def test_relationship_ring_is_flagged_and_survives_a_restart(
    tmp_path: Path, trained: TrainedModel
) -> None:
    # arrange: applications chained by shared devices and phones form one component of 6 (> 5)
    registry = tmp_path / "registry"
    build_registry(registry, {"acard-v1": "application"})
    chain = [
        {"device_id": f"dev-{i // 2}", "phone": f"+4400{(i + 1) // 2}", "age": 30} for i in range(6)
    ]

    # act
    hub_args = ("--graph-hub-degree", "3")
    with server_at(tmp_path, registry, args=hub_args) as first:
        answers = [
            post(first, DECISION, application(trained, i, prefix="ring", **chain[i]))
            for i in range(6)
        ]
        hub = [
            post(
                first, DECISION, application(trained, 100 + i, prefix="hub", ip="10.0.0.1", age=30)
            )
            for i in range(5)
        ]
    with server_at(tmp_path, registry, args=hub_args) as second:
        late = post(
            second, DECISION, application(trained, 50, prefix="ring", device_id="dev-2", age=30)
        )
        loner = post(
            second, DECISION, application(trained, 51, prefix="ring", device_id="dev-new", age=30)
        )

    # assert
    sizes = [a.json()["fraud"]["graph"]["component_size"] for a in answers]
    assert sizes == [1, 2, 3, 4, 5, 6]
    assert answers[-1].json()["fraud"]["graph"]["is_ring"] is True
    assert answers[-1].json()["decision"] in {"manual_review", "decline"}
    # a 4th application sharing the IP makes it a hub: it links nothing any more
    hub_sizes = [h.json()["fraud"]["graph"]["component_size"] for h in hub]
    assert hub_sizes == [1, 2, 3, 1, 1]
    assert hub[4].json()["fraud"]["graph"]["ignored_hub_kinds"] == ["ip"]
    assert late.json()["fraud"]["graph"]["component_size"] == 7, (
        "graph was not rebuilt from the store"
    )
    assert late.json()["fraud"]["graph"]["is_ring"] is True
    assert loner.json()["fraud"]["graph"]["component_size"] == 1


# ------------------------------------------------------------------------------ review queue
def test_review_queue_endpoints_and_applicant_request(
    shared_server: ScoringServer, trained: TrainedModel
) -> None:
    # arrange: an automated decline (age policy)
    declined = post(shared_server, DECISION, application(trained, 30, prefix="rev", age=15)).json()
    assert declined["decision"] == "decline"
    with shared_server.client() as client:
        # act
        requested = client.post(
            f"/v1/decisions/{declined['decision_id']}/human-review",
            json={"reason": "I am 25, typo"},
        )
        duplicate = client.post(
            f"/v1/decisions/{declined['decision_id']}/human-review", json={"reason": "again"}
        )
        item_id = requested.json()["item_id"]
        claimed = client.post(f"/v1/reviews/{item_id}/claim", json={"reviewer": "ann"})
        stolen = client.post(f"/v1/reviews/{item_id}/claim", json={"reviewer": "bob"})
        resolved = client.post(
            f"/v1/reviews/{item_id}/resolve",
            json={"reviewer": "ann", "resolution": "approve", "note": "ID checked"},
        )
        fetched = client.get(f"/v1/reviews/{item_id}")
        listing = client.get(
            "/v1/reviews", params={"kind": "human_review_request", "status": "resolved"}
        )
        bad_status = client.get("/v1/reviews", params={"status": "lost"})
        empty_reason = client.post(
            f"/v1/decisions/{declined['decision_id']}/human-review", json={"reason": ""}
        )

    # assert
    assert requested.status_code == 201 and requested.json()["kind"] == "human_review_request"
    assert duplicate.status_code == 409
    assert claimed.json()["status"] == "claimed" and claimed.json()["reviewer"] == "ann"
    assert stolen.status_code == 409
    assert resolved.json()["status"] == "resolved" and resolved.json()["note"] == "ID checked"
    assert (
        fetched.json()["resolution"] == "approve"
        and fetched.json()["decision_outcome"] == "decline"
    )
    assert item_id in {i["item_id"] for i in listing.json()["items"]}
    assert bad_status.status_code == 422 and empty_reason.status_code == 422


# ------------------------------------------------------------------------------ operations
def test_metrics_and_audit_endpoints(shared_server: ScoringServer, trained: TrainedModel) -> None:
    # arrange
    post(shared_server, DECISION, application(trained, 40, prefix="met", age=12))

    # act
    with shared_server.client() as client:
        metrics = client.get("/metrics")
        audit = client.get("/v1/audit/verify")

    # assert
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert (
        'fedrisk_http_requests_total{method="POST",route="/v1/applications/decision",status="200"}'
        in text
    )
    assert (
        'fedrisk_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/applications/decision"}'
        in text
    )
    assert 'fedrisk_decisions_total{outcome="decline",role="champion",stage="application"}' in text
    assert 'fedrisk_fraud_hits_total{rule="FR-AGE-POLICY"}' in text
    assert audit.json()["ok"] is True and audit.json()["decisions"] >= 1
