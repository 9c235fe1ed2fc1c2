"""The lender's ``/v1/applications/decision`` with a vertical champion: a real scoring service
(uvicorn on 127.0.0.1) holding the signed guest part, calling two live ``fedrisk party serve``
hosts over mutual TLS. Decisions equal the plaintext joined model; unknown customers and a
stopped host become missing parts, never errors."""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from fedrisk.release.vertical import VerticalPart
from tests.support.feature_hosts import (
    CUSTOMERS,
    HOSTS,
    MODEL_ID,
    HostServices,
    guest_part,
    install_guest_part,
    lender_environment,
)
from tests.support.processes import ProcessRegistry, stop_pid
from tests.support.scoring import ScoringServer, start_server

pytestmark = pytest.mark.integration

HOST_CODES = {"telecom.tenure_months", "telecom.plan", "shop.spend_12m", "shop.returns_12m"}


@dataclass
class Lender:
    """The running scoring service, its guest part and the applicants' own features."""

    server: ScoringServer
    client: httpx.Client
    """An admin's client of the server, kept open for the module."""
    guest: VerticalPart
    incomes: list[float]


@pytest.fixture(scope="module")
def lender(services: HostServices, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lender]:
    """A scoring service whose A-card champion is the vertical model of ``services``."""
    workdir = tmp_path_factory.mktemp("lender")
    registry = workdir / "registry"
    guest = install_guest_part(registry)
    processes = ProcessRegistry()
    try:
        server = start_server(
            workdir,
            registry,
            env=lender_environment(services, deadline=2.0),
            processes=processes,
        )
        _, frame = guest_part()
        with server.client() as client:
            # Found in the registry at start-up, it is registered for its stage and, the first
            # model there, becomes the champion.
            stage = client.get("/v1/stages/application").json()
            assert stage["champion_id"] == MODEL_ID, stage
            yield Lender(server, client, guest, frame["income"].tolist())
    finally:
        assert not processes.stop_all()


def _decide(lender: Lender, index: int, customer: str) -> dict[str, Any]:
    body = {
        "application_id": f"app-{customer}-{index}",
        "applicant_id": customer,
        "features": {"income": lender.incomes[index % len(lender.incomes)]},
    }
    response = lender.client.post("/v1/applications/decision", json=body)
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    return decision


def _pd(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-logit))


def _own(lender: Lender, index: int) -> float:
    _, frame = guest_part()
    return float(lender.guest.partial_scores(frame.iloc[[index]])[0])


def test_a_decision_is_the_joined_models_probability(
    lender: Lender, services: HostServices
) -> None:
    for i, customer in enumerate(CUSTOMERS):
        decision = _decide(lender, i, customer)

        plain = sum(services.plain_part(h, customer) for h in HOSTS)
        assert decision["pd"] == pytest.approx(_pd(_own(lender, i) + plain), abs=1e-6)
        knows = {h for h in HOSTS if customer in set(services.frames[h]["customer_id"])}
        assert decision["missing_parts"] == {h: "unknown" for h in HOSTS if h not in knows}
        assert decision["model"]["model_id"] == MODEL_ID
    both = _decide(lender, 15, CUSTOMERS[15])
    assert both["missing_parts"] == {}


def test_the_stored_decision_and_its_audit_record_name_the_missing_parts(
    lender: Lender,
) -> None:
    decision = _decide(lender, 3, CUSTOMERS[3])  # only the telecom knows customer 3

    stored = lender.client.get(f"/v1/decisions/{decision['decision_id']}").json()
    verified = lender.client.get("/v1/audit/verify")
    assert stored["details"]["missing_parts"] == {"shop": "unknown"}
    assert stored["probability"] == pytest.approx(decision["pd"], abs=1e-12)
    assert verified.status_code == 200, verified.text


def test_reason_codes_carry_the_hosts_codes_and_texts_never_values(
    lender: Lender, services: HostServices
) -> None:
    reasons = [_decide(lender, i, c)["reasons"] for i, c in enumerate(CUSTOMERS)]

    host_reasons = [r for rs in reasons for r in rs if "." in r["code"]]
    assert host_reasons, "no host named a risk-raising feature group"
    assert {r["code"] for r in host_reasons} <= HOST_CODES
    for reason in host_reasons:
        if reason["code"] == "telecom.plan":
            assert reason["text"] == "Mobile plan type"
    raw = {
        str(v)
        for h in HOSTS
        for v in services.frames[h].drop(columns="customer_id").to_numpy().ravel()
    }
    said = str([(r["code"], r["feature"], r["text"]) for r in host_reasons])
    assert not any(value in said for value in raw if len(value) > 2)
    # The lender learns only the sum of the host parts: a host reason carries no points.
    assert {r["points"] for r in host_reasons} == {0.0}


def test_the_vertical_model_is_listed_with_its_parties(lender: Lender) -> None:
    listed = {m["model_id"]: m for m in lender.client.get("/v1/models").json()["models"]}

    model = listed[MODEL_ID]
    assert model["role"] == "champion" and model["stage"] == "application"
    assert model["lineage"] == {"vertical": {"guest": "bank", "hosts": list(HOSTS)}}
    assert [f["name"] for f in model["features"]] == ["income"]


def test_an_unknown_customer_is_scored_with_every_host_part_missing(lender: Lender) -> None:
    decision = _decide(lender, 0, "C9999")

    assert decision["missing_parts"] == {"shop": "unknown", "telecom": "unknown"}
    assert decision["pd"] == pytest.approx(_pd(_own(lender, 0)), abs=1e-9)


def test_a_vertical_batch_is_refused_with_why(lender: Lender) -> None:
    response = lender.client.post(
        "/v1/batch/application",
        content=b"applicant_id,income\nC0001,2500\n",
        headers={"content-type": "text/csv"},
    )

    assert response.status_code == 409
    assert "vertical model" in response.text and "/v1/applications/decision" in response.text


def test_a_host_that_does_not_answer_in_time_is_missing_as_slow(
    lender: Lender, services: HostServices
) -> None:
    os.kill(services.pids["shop"], signal.SIGSTOP)  # alive, connected, silent
    try:
        decision = _decide(lender, 15, CUSTOMERS[15])
    finally:
        os.kill(services.pids["shop"], signal.SIGCONT)

    assert decision["missing_parts"] == {"shop": "slow", "telecom": "masks-incomplete"}
    assert decision["pd"] == pytest.approx(_pd(_own(lender, 15)), abs=1e-9)
    assert _decide(lender, 15, CUSTOMERS[15])["missing_parts"] == {}  # back once it answers


def test_a_stopped_host_turns_into_missing_parts_not_errors(
    lender: Lender, services: HostServices
) -> None:
    """Runs last: it stops the shop's service."""
    stop_pid(services.pids["shop"])

    for i, customer in enumerate(CUSTOMERS[:10]):
        decision = _decide(lender, i, customer)

        # The telecom's answer is masked and cannot be unmasked without the shop's mask share:
        # the score is the model with both hosts' features missing (as in training: zero).
        assert decision["missing_parts"] == {"shop": "down", "telecom": "masks-incomplete"}
        assert decision["pd"] == pytest.approx(_pd(_own(lender, i)), abs=1e-9)
