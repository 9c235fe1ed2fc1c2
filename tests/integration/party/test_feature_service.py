"""``fedrisk party serve``: two hosts' feature services over mutual TLS on 127.0.0.1, asked for
customers by keyed hash; their masked parts sum to the hosts' plain parts."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.support.feature_hosts import (
    CUSTOMERS,
    HOSTS,
    MODEL_ID,
    HostServices,
)

pytestmark = pytest.mark.integration


def _ask(services: HostServices, customer: str, request_id: str) -> dict[str, dict[str, object]]:
    body = {
        "request_id": request_id,
        "customer": services.key.keyed_hash(customer, kind="opaque"),
        "model_id": MODEL_ID,
    }
    with services.client() as client:
        return {
            h: client.post(f"{services.urls[h]}/v1/partial-score", json=body).json() for h in HOSTS
        }


@pytest.mark.parametrize("customer", [CUSTOMERS[3], CUSTOMERS[15], CUSTOMERS[25]])
def test_masked_parts_sum_to_the_hosts_plain_parts(services: HostServices, customer: str) -> None:
    answers = _ask(services, customer, uuid.uuid4().hex)

    plain = {h: services.plain_part(h, customer) for h in HOSTS}
    total = sum(float(str(a["score"])) for a in answers.values())
    assert total == pytest.approx(sum(plain.values()), abs=1e-5)
    for host, answer in answers.items():
        assert answer["masked"] is True
        # Each answer alone is masked: nowhere near the host's own part.
        assert abs(float(answer["score"]) - plain[host]) > 1.0  # type: ignore[arg-type]
        known = customer in set(services.frames[host]["customer_id"])
        assert answer["status"] == ("known" if known else "unknown")
        if not known:
            assert answer["reason"] is None


def test_reasons_are_codes_and_the_hosts_own_texts_never_values(services: HostServices) -> None:
    reasons = [_ask(services, c, uuid.uuid4().hex)["telecom"]["reason"] for c in CUSTOMERS[:20]]
    codes = {r["code"] for r in reasons if r is not None}  # type: ignore[index]
    assert codes and codes <= {"telecom.tenure_months", "telecom.plan"}
    texts = {r["code"]: r["text"] for r in reasons if r is not None}  # type: ignore[index]
    if "telecom.plan" in texts:
        assert texts["telecom.plan"] == "Mobile plan type"
    raw = {str(v) for v in services.frames["telecom"][["tenure_months", "plan"]].to_numpy().ravel()}
    assert not any(value in str(reasons) for value in raw if len(value) > 2)


def test_a_request_id_is_answered_once(services: HostServices) -> None:
    request_id = uuid.uuid4().hex
    _ask(services, CUSTOMERS[12], request_id)
    body = {
        "request_id": request_id,
        "customer": services.key.keyed_hash(CUSTOMERS[13], kind="opaque"),
        "model_id": MODEL_ID,
    }
    with services.client() as client:
        again = client.post(f"{services.urls['shop']}/v1/partial-score", json=body)
    assert again.status_code == 409 and "fresh" in again.json()["detail"]


def test_a_client_without_a_federation_certificate_is_refused(services: HostServices) -> None:
    with (
        httpx.Client(verify=services.ca, timeout=5.0) as client,
        pytest.raises(
            (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, ssl.SSLError)
        ),
    ):
        client.get(f"{services.urls['shop']}/healthz")


def test_the_service_answers_from_the_hosts_current_data(services: HostServices) -> None:
    path: Path = services.root / "shop" / "data.csv"
    frame = services.frames["shop"]
    newcomer = frame.iloc[[0]].assign(customer_id="C9999")
    updated = pd.concat([frame.iloc[1:], newcomer])
    updated.to_csv(path, index=False)

    answers = _ask(services, "C9999", uuid.uuid4().hex)

    assert answers["shop"]["status"] == "known"
    assert _ask(services, CUSTOMERS[10], uuid.uuid4().hex)["shop"]["status"] == "unknown"


def test_a_raw_identifier_or_a_malformed_body_is_refused(services: HostServices) -> None:
    raw = {"request_id": uuid.uuid4().hex, "customer": CUSTOMERS[3], "model_id": MODEL_ID}
    with services.client() as client:
        as_raw = client.post(f"{services.urls['shop']}/v1/partial-score", json=raw)
        garbage = client.post(f"{services.urls['shop']}/v1/partial-score", content=b"{not json")

    assert as_raw.status_code == 422
    assert as_raw.json()["detail"][0]["loc"] == ["customer"]
    assert CUSTOMERS[3] not in as_raw.text  # the error does not echo what was sent
    assert garbage.status_code == 422


def test_a_batch_answers_each_question_as_if_asked_alone(services: HostServices) -> None:
    seen = uuid.uuid4().hex
    _ask(services, CUSTOMERS[12], seen)
    questions = [
        {
            "request_id": request_id,
            "customer": services.key.keyed_hash(customer, kind="opaque"),
            "model_id": MODEL_ID,
        }
        for request_id, customer in [
            (uuid.uuid4().hex, CUSTOMERS[11]),
            (seen, CUSTOMERS[13]),
            (uuid.uuid4().hex, CUSTOMERS[2]),
        ]
    ]
    with services.client() as client:
        batches = {
            h: client.post(
                f"{services.urls[h]}/v1/partial-scores", json={"requests": questions}
            ).json()["answers"]
            for h in HOSTS
        }

    for i, customer in ((0, CUSTOMERS[11]), (2, CUSTOMERS[2])):
        total = sum(float(batches[h][i]["score"]) for h in HOSTS)
        assert total == pytest.approx(sum(services.plain_part(h, customer) for h in HOSTS))
    # the reused request id is refused in place; the others are still answered
    assert all("fresh" in batches[h][1]["detail"] for h in HOSTS)
    assert batches["shop"][2]["status"] == "unknown" and batches["telecom"][2]["status"] == "known"
