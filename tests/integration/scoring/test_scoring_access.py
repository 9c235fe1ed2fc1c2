"""Access control of the scoring service: every route against no key, a wrong key, a revoked key
and each role; start-up refusal without keys; ``serve keys create|list|revoke``; the audit
records of loan-level and admin calls carry the key id. A real app on a real database."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from server.scoring.apikeys import KeyVerifier, Role, key_id_of, revoke_key
from server.scoring.app import create_app
from server.scoring.audit import audited_transaction, verify_chain
from server.scoring.cli import cli
from server.scoring.db.engine import make_engine
from server.scoring.db.tables import audit_log
from server.scoring.errors import NoApiKeyError
from tests.support.artifacts import TrainedModel, build_registry
from tests.support.scoring import (
    IDENTIFIER_KEY,
    application,
    bearer,
    create_keys,
    service_settings,
)

pytestmark = [pytest.mark.integration]

PUBLIC = None
ROUTES: dict[tuple[str, str], Role | None] = {
    ("POST", "/v1/applications/decision"): Role.SCORING,
    ("POST", "/v1/accounts/behaviour"): Role.SCORING,
    ("POST", "/v1/collections/strategy"): Role.SCORING,
    ("POST", "/v1/batch/{stage}"): Role.SCORING,
    ("POST", "/v1/decisions/{decision_id}/human-review"): Role.SCORING,
    ("GET", "/v1/decisions/{decision_id}"): Role.RISK_OFFICER,
    ("GET", "/v1/reviews"): Role.RISK_OFFICER,
    ("GET", "/v1/reviews/{item_id}"): Role.RISK_OFFICER,
    ("POST", "/v1/reviews/{item_id}/claim"): Role.RISK_OFFICER,
    ("POST", "/v1/reviews/{item_id}/resolve"): Role.RISK_OFFICER,
    ("GET", "/v1/models"): Role.VIEWER,
    ("GET", "/v1/models/{model_id}"): Role.VIEWER,
    ("GET", "/v1/model-events"): Role.VIEWER,
    ("GET", "/v1/stages/{stage}"): Role.VIEWER,
    ("GET", "/metrics"): Role.VIEWER,
    ("GET", "/openapi.json"): Role.VIEWER,
    ("POST", "/v1/models"): Role.ADMIN,
    ("POST", "/v1/models/upload"): Role.ADMIN,
    ("POST", "/v1/models/{model_id}/promote"): Role.ADMIN,
    ("POST", "/v1/stages/{stage}/rollback"): Role.ADMIN,
    ("POST", "/v1/stages/{stage}/challenger/stop"): Role.ADMIN,
    ("GET", "/v1/fraud/lists"): Role.ADMIN,
    ("POST", "/v1/fraud/lists/{name}"): Role.ADMIN,
    ("GET", "/v1/audit/verify"): Role.ADMIN,
    ("POST", "/v1/outcomes"): Role.RISK_OFFICER,
    ("GET", "/v1/monitoring/summary"): Role.VIEWER,
    ("GET", "/v1/monitoring/decision-mix"): Role.VIEWER,
    ("GET", "/v1/monitoring/psi"): Role.VIEWER,
    ("GET", "/v1/monitoring/psi/trend"): Role.VIEWER,
    ("GET", "/v1/monitoring/performance"): Role.VIEWER,
    ("GET", "/v1/monitoring/champion-challenger"): Role.VIEWER,
    ("GET", "/v1/monitoring/vintages"): Role.VIEWER,
    ("GET", "/v1/monitoring/roll-rates"): Role.VIEWER,
    ("GET", "/v1/monitoring/direction"): Role.VIEWER,
    ("GET", "/v1/monitoring/direction/loans"): Role.RISK_OFFICER,
    ("GET", "/v1/monitoring/bcard-warnings"): Role.VIEWER,
    ("GET", "/v1/monitoring/alerts"): Role.VIEWER,
    ("POST", "/v1/monitoring/alerts/check"): Role.RISK_OFFICER,
    ("GET", "/healthz"): PUBLIC,
    ("POST", "/v1/decisions/{decision_id}/purpose"): Role.SCORING,
    ("POST", "/v1/purpose/retrain"): Role.ADMIN,
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): PUBLIC,
    ("GET", "/dashboard"): Role.VIEWER,
    ("GET", "/dashboard/{page}"): Role.VIEWER,
    ("GET", "/dashboard/data/{chart_id}.csv"): Role.VIEWER,
    ("GET", "/dashboard/assets/{asset_name}"): Role.VIEWER,
    ("GET", "/dashboard/decisions"): Role.RISK_OFFICER,
    ("GET", "/dashboard/decisions.csv"): Role.RISK_OFFICER,
    ("GET", "/dashboard/loans"): Role.RISK_OFFICER,
    ("GET", "/dashboard/loans.csv"): Role.RISK_OFFICER,
}
"""What each route needs, written out here independently of the code (the oracle)."""

ALLOWED: dict[Role, set[Role]] = {
    Role.SCORING: {Role.SCORING},
    Role.VIEWER: {Role.VIEWER},
    Role.RISK_OFFICER: {Role.VIEWER, Role.RISK_OFFICER},
    Role.ADMIN: set(Role),
}
"""The routes' roles each key's role may use: admin ⊇ risk_officer ⊇ viewer, admin ⊇ scoring."""

PATH_VALUES = {
    "stage": "application",
    "decision_id": "0" * 32,
    "item_id": "1",
    "model_id": "acard-v1",
    "name": "device_blacklist",
    "page": "drift",
    "chart_id": "decision_mix",
    "asset_name": "dashboard.js",
}


@dataclass
class Service:
    """An in-process app on its SQLite database, with keys of every kind."""

    client: TestClient
    engine: Engine
    keys: dict[str, str]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, trained: TrainedModel) -> Iterator[Service]:
    """One app for the module: a key per role, a revoked admin key, a wrong admin key."""
    workdir = tmp_path_factory.mktemp("access")
    registry = workdir / "registry"
    build_registry(registry, {"acard-v1": "application"})
    db_url = f"sqlite:///{workdir / 'scoring.db'}"
    keys = {role.value: key for role, key in create_keys(db_url).items()}
    revoked = create_keys(db_url, (Role.ADMIN,))[Role.ADMIN]
    engine = make_engine(db_url)
    audited_transaction(
        engine, lambda c, ch: revoke_key(c, ch, key_id=str(key_id_of(revoked)), actor="tests")
    )
    keys["revoked"] = revoked
    # the admin key's own id with another secret: found by id, refused by argon2
    keys["wrong"] = keys[Role.ADMIN.value][:20] + "x" * 43
    keys["malformed"] = "not-a-key"
    app = create_app(service_settings(registry, db_url=db_url))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Service(client, engine, keys)
    engine.dispose()


def concrete(path: str) -> str:
    """The route's path with every parameter filled in."""
    for name, value in PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no value for a parameter of {path}: add it to PATH_VALUES"
    return path


def expected_status(credential: str, required: Role | None) -> int | None:
    """401 or 403 when refused; None when the route must run (any answer but 401/403/5xx)."""
    if required is None:
        return None
    if credential not in {role.value for role in Role}:
        return 401
    return None if required in ALLOWED[Role(credential)] else 403


def test_the_table_names_every_route_of_the_app(service: Service) -> None:
    # arrange
    app = service.client.app

    # act
    found = {
        (method, route.path)
        for route in app.routes  # type: ignore[attr-defined]
        for method in (getattr(route, "methods", None) or {"?"}) - {"HEAD"}
    }
    unguarded = [r.path for r in app.routes if not isinstance(r, APIRoute)]  # type: ignore[attr-defined]

    # assert: a new route fails here until its access is decided and written down above
    assert found == set(ROUTES)
    assert unguarded == []


@pytest.mark.parametrize(
    "credential", ["none", "malformed", "wrong", "revoked", *(r.value for r in Role)]
)
def test_every_route_answers_each_credential_as_its_role_says(
    service: Service, credential: str
) -> None:
    # arrange
    headers = {} if credential == "none" else bearer(service.keys[credential])
    mismatches: list[str] = []

    # act
    for (method, path), required in ROUTES.items():
        body = None if method == "GET" else {}
        response = service.client.request(method, concrete(path), headers=headers, json=body)
        expected = expected_status(credential, required)
        status = response.status_code
        if expected is None:
            if status in (401, 403) or status >= 500:
                mismatches.append(f"{method} {path}: {status} but must run ({response.text[:120]})")
        elif status != expected:
            mismatches.append(f"{method} {path}: {status}, expected {expected}")
        if status == 401:
            assert response.headers.get("www-authenticate") == "Bearer"

    # assert
    assert mismatches == []


def test_the_key_may_also_come_with_any_case_of_bearer(service: Service) -> None:
    # act
    lower = service.client.get(
        "/v1/models", headers={"authorization": "bearer " + service.keys["viewer"]}
    )
    basic = service.client.get(
        "/v1/models", headers={"authorization": "Basic " + service.keys["viewer"]}
    )

    # assert
    assert lower.status_code == 200 and basic.status_code == 401


def access_records(engine: Engine, after_seq: int) -> list[dict[str, object]]:
    """Payloads of the ``api_access`` audit records after ``after_seq``."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(audit_log.c.payload)
            .where(audit_log.c.kind == "api_access", audit_log.c.seq > after_seq)
            .order_by(audit_log.c.seq)
        ).all()
    return [json.loads(row.payload) for row in rows]


def last_seq(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(select(audit_log.c.seq).order_by(audit_log.c.seq.desc())).scalar()
            or 0
        )


def test_loan_level_reads_and_admin_actions_are_audited_with_the_key_id(
    service: Service, trained: TrainedModel
) -> None:
    # arrange
    client, keys = service.client, service.keys
    decided = client.post(
        "/v1/applications/decision",
        json=application(trained, 1, prefix="audited", age=30),
        headers=bearer(keys["scoring"]),
    ).json()
    before = last_seq(service.engine)

    # act
    read = client.get(
        f"/v1/decisions/{decided['decision_id']}", headers=bearer(keys["risk_officer"])
    )
    queue = client.get(
        "/v1/reviews", params={"status": "open"}, headers=bearer(keys["risk_officer"])
    )
    listed = client.post(
        "/v1/fraud/lists/device_blacklist", json={"add": ["d-1"]}, headers=bearer(keys["admin"])
    )
    refused = client.get(f"/v1/decisions/{decided['decision_id']}", headers=bearer(keys["viewer"]))
    aggregate = client.get("/v1/models", headers=bearer(keys["viewer"]))
    records = access_records(service.engine, before)
    with service.engine.connect() as connection:
        report = verify_chain(connection)

    # assert
    assert [read.status_code, queue.status_code, listed.status_code] == [200, 200, 200]
    assert refused.status_code == 403 and aggregate.status_code == 200
    officer, admin = key_id_of(keys["risk_officer"]), key_id_of(keys["admin"])
    assert [(r["key_id"], r["role"], r["method"], r["path"]) for r in records] == [
        (officer, "risk_officer", "GET", f"/v1/decisions/{decided['decision_id']}"),
        (officer, "risk_officer", "GET", "/v1/reviews"),
        (admin, "admin", "POST", "/v1/fraud/lists/device_blacklist"),
    ]
    assert records[1]["query"] == "status=open"
    assert report.ok, report.problem


def test_key_creation_and_revocation_are_in_the_audit_chain(service: Service) -> None:
    # act
    with service.engine.connect() as connection:
        rows = connection.execute(
            select(audit_log.c.kind, audit_log.c.payload).where(
                audit_log.c.kind.in_(["api_key_created", "api_key_revoked"])
            )
        ).all()
    payloads = [(row.kind, json.loads(row.payload)) for row in rows]

    # assert: one creation per key, the revocation of the revoked one; never a secret
    revoked_id = key_id_of(service.keys["revoked"])
    assert sum(kind == "api_key_created" for kind, _ in payloads) == len(Role) + 1
    assert [p["key_id"] for kind, p in payloads if kind == "api_key_revoked"] == [revoked_id]
    text = json.dumps(payloads)
    assert not any(key in text for key in service.keys.values() if key_id_of(key))
    assert "argon2" not in text


# ------------------------------------------------------------------------------ start-up
def test_the_service_refuses_to_start_without_an_active_key(tmp_path: Path) -> None:
    # arrange: one key, revoked
    registry = tmp_path / "registry"
    build_registry(registry, {"acard-v1": "application"})
    db_url = f"sqlite:///{tmp_path / 'scoring.db'}"
    key = create_keys(db_url, (Role.ADMIN,))[Role.ADMIN]
    engine = make_engine(db_url)
    audited_transaction(
        engine, lambda c, ch: revoke_key(c, ch, key_id=str(key_id_of(key)), actor="tests")
    )
    engine.dispose()

    # act / assert
    with (
        pytest.raises(NoApiKeyError, match="at least one active API key"),
        TestClient(create_app(service_settings(registry, db_url=db_url))),
    ):
        pass
    served = CliRunner().invoke(
        cli,
        ["serve", "--registry", str(registry), "--db", db_url, "--port", "1"],
        env={"FEDRISK_IDENTIFIER_KEY": IDENTIFIER_KEY},
    )
    assert served.exit_code == 2
    assert "serve keys create" in served.output and "--insecure-dev" in served.output


def test_insecure_dev_serves_without_a_key_and_warns_on_every_request(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # arrange
    registry = tmp_path / "registry"
    build_registry(registry, {"acard-v1": "application"})
    settings = service_settings(registry, insecure_dev=True)

    # act
    with caplog.at_level(logging.WARNING), TestClient(create_app(settings)) as client:
        caplog.clear()
        lists = client.get("/v1/fraud/lists")
        health = client.get("/healthz")
        wrong = client.get("/v1/fraud/lists", headers=bearer("fk_" + "0" * 16 + "_" + "x" * 43))
    warnings = [r.getMessage() for r in caplog.records if "INSECURE-DEV" in r.getMessage()]

    # assert: a key that is sent is still checked
    assert lists.status_code == 200 and health.status_code == 200 and wrong.status_code == 401
    assert len(warnings) == 3
    assert "GET /v1/fraud/lists -> 200" in warnings[0] and "/healthz" in warnings[1]


# ------------------------------------------------------------------------------ CLI
def test_keys_are_created_listed_and_revoked_from_the_command_line(
    db_url: str, tmp_path: Path, trained: TrainedModel
) -> None:
    # arrange
    runner = CliRunner()
    registry = tmp_path / "registry"
    build_registry(registry, {"acard-v1": "application"})

    def keys(*args: str) -> object:
        return runner.invoke(cli, ["serve", "keys", *args, "--db", db_url])

    # act
    created = keys("create", "--role", "viewer", "--name", "dashboard")
    key = created.stdout.strip()  # type: ignore[attr-defined]
    key_id = key_id_of(key)
    listed = keys("list")
    bad_role = keys("create", "--role", "root", "--name", "x")
    app = create_app(service_settings(registry, db_url=db_url, api_key_cache_seconds=0))
    with TestClient(app) as client:
        before = client.get("/v1/models", headers=bearer(key))
        revoked = keys("revoke", str(key_id))
        after = client.get("/v1/models", headers=bearer(key))
    again = keys("revoke", str(key_id))
    unknown = keys("revoke", "0123456789abcdef")
    listed_after = keys("list")

    # assert
    assert created.exit_code == 0 and key_id is not None  # type: ignore[attr-defined]
    assert f"created key {key_id} (viewer, 'dashboard')" in created.stderr  # type: ignore[attr-defined]
    assert listed.stdout.split("\t")[:3] == [key_id, "viewer", "dashboard"]  # type: ignore[attr-defined]
    assert listed.stdout.strip().endswith("active") and key not in listed.stdout  # type: ignore[attr-defined]
    assert bad_role.exit_code == 2 and "role must be one of" in bad_role.output  # type: ignore[attr-defined]
    assert before.status_code == 200
    assert revoked.exit_code == 0 and after.status_code == 401  # type: ignore[attr-defined]
    assert again.exit_code == 0  # idempotent
    assert unknown.exit_code == 2 and "0123456789abcdef" in unknown.output  # type: ignore[attr-defined]
    assert "\trevoked " in listed_after.stdout  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ the cache
def test_a_verified_key_is_cached_until_its_time_is_up(tmp_path: Path) -> None:
    # arrange: a clock the test moves
    db_url = f"sqlite:///{tmp_path / 'scoring.db'}"
    key = create_keys(db_url, (Role.SCORING,))[Role.SCORING]
    engine = make_engine(db_url)
    now = [100.0]
    verifier = KeyVerifier(engine, cache_seconds=5.0, clock=lambda: now[0])

    async def check() -> Role | None:
        principal = await verifier.authenticate(key)
        return None if principal is None else principal.role

    async def together() -> list[Role | None]:
        results: list[Role | None] = []

        async def one() -> None:
            results.append(await check())

        async with anyio.create_task_group() as group:
            for _ in range(8):
                group.start_soon(one)
        return results

    # act: eight requests miss the cache at once and share one verification
    concurrent = anyio.run(together)
    first = anyio.run(check)
    audited_transaction(
        engine, lambda c, ch: revoke_key(c, ch, key_id=str(key_id_of(key)), actor="tests")
    )
    cached = anyio.run(check)
    now[0] += 5.1
    expired = anyio.run(check)
    engine.dispose()

    # assert: the revocation takes effect when the cached verification runs out
    assert concurrent == [Role.SCORING] * 8
    assert (first, cached, expired) == (Role.SCORING, Role.SCORING, None)
