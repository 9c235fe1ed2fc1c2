"""Browser sign-in and the dashboard on a real app and database (in-process HTTP): the session
cookie's flags, CSRF, sign-out, revocation and expiry; the overview's figures and CSV against the
raw rows; the loan-level drill-down's role check and audit record; the empty monitoring pages."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from server.scoring.apikeys import Principal, Role, key_id_of, revoke_key
from server.scoring.app import create_app
from server.scoring.audit import audited_transaction, verify_chain
from server.scoring.dashboard import queries
from server.scoring.dashboard.charts import ChartInputs
from server.scoring.dashboard.pages import CHARTS
from server.scoring.db.engine import make_engine
from server.scoring.db.migrate import upgrade_database
from server.scoring.db.tables import audit_log, browser_sessions
from server.scoring.sessions import SESSION_COOKIE, end_session, find_session, start_session
from tests.support.artifacts import TrainedModel, build_registry
from tests.support.dashboard import Truth, percent, seed_history, truth
from tests.support.scoring import STANDARD_MODELS, bearer, create_keys, service_settings

pytestmark = [pytest.mark.integration]


@dataclass
class Service:
    client: TestClient
    engine: Engine
    keys: dict[Role, str]
    truth: Truth


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, trained: TrainedModel) -> Iterator[Service]:
    """One app for the module on a SQLite database with a seeded decision history."""
    workdir = tmp_path_factory.mktemp("dashboard")
    registry = workdir / "registry"
    build_registry(registry, STANDARD_MODELS)
    db_url = f"sqlite:///{workdir / 'scoring.db'}"
    keys = create_keys(db_url)
    engine = make_engine(db_url)
    seed_history(engine, np.random.default_rng(7))
    app = create_app(service_settings(registry, db_url=db_url))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Service(client, engine, keys, truth(engine))
    engine.dispose()


def form_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match is not None, html[:500]
    return match.group(1)


def sign_in(client: TestClient, key: str, *, base: str = "") -> tuple[int, str | None]:
    """Sign in through the form as a browser would; (status, the session's CSRF token)."""
    client.cookies.clear()
    token = form_token(client.get(f"{base}/login").text)
    answer = client.post(
        f"{base}/login", data={"key": key, "csrf_token": token}, follow_redirects=False
    )
    if answer.status_code != 303:
        return answer.status_code, None
    page = client.get(f"{base}/dashboard")
    return answer.status_code, form_token(page.text) if page.status_code == 200 else None


def set_cookie_headers(client: TestClient, key: str, *, base: str) -> list[str]:
    client.cookies.clear()
    token = form_token(client.get(f"{base}/login").text)
    answer = client.post(
        f"{base}/login", data={"key": key, "csrf_token": token}, follow_redirects=False
    )
    return [h for h in answer.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE)]


# ------------------------------------------------------------------------------ sign-in
def test_signing_in_sets_a_hardened_cookie_that_acts_as_the_key(service: Service) -> None:
    # act
    plain = set_cookie_headers(service.client, service.keys[Role.VIEWER], base="")
    tls = set_cookie_headers(service.client, service.keys[Role.VIEWER], base="https://testserver")
    status, _ = sign_in(service.client, service.keys[Role.VIEWER])
    models = service.client.get("/v1/models")
    reviews = service.client.get("/v1/reviews")
    page = service.client.get("/dashboard")

    # assert: HttpOnly and SameSite=Strict always, Secure over TLS; the viewer's role applies
    assert len(plain) == 1 and len(tls) == 1
    for header in (plain[0], tls[0]):
        assert "HttpOnly" in header and "samesite=strict" in header.lower()
    assert "Secure" not in plain[0] and "Secure" in tls[0]
    assert status == 303
    assert (models.status_code, reviews.status_code, page.status_code) == (200, 403, 200)
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_the_login_form_refuses_a_foreign_form_a_wrong_key_and_a_scoring_key(
    service: Service,
) -> None:
    # arrange
    client = service.client
    client.cookies.clear()
    form_token(client.get("/login").text)  # sets the form's cookie

    # act
    foreign = client.post("/login", data={"key": service.keys[Role.ADMIN], "csrf_token": "x" * 43})
    wrong, _ = sign_in(client, service.keys[Role.ADMIN][:20] + "y" * 43)
    scoring, _ = sign_in(client, service.keys[Role.SCORING])
    empty = client.post("/login", data={})

    # assert: nothing signed in
    assert (foreign.status_code, wrong, scoring, empty.status_code) == (403, 401, 403, 422)
    assert SESSION_COOKIE not in client.cookies
    assert client.get("/dashboard").status_code == 401


def test_a_state_changing_request_with_the_cookie_needs_the_session_csrf_token(
    service: Service,
) -> None:
    # arrange
    client = service.client
    _, csrf = sign_in(client, service.keys[Role.ADMIN])
    assert csrf is not None

    # act
    without = client.post("/v1/fraud/lists/device_blacklist", json={"add": ["d-cookie"]})
    other = client.post(
        "/v1/fraud/lists/device_blacklist",
        json={"add": ["d-cookie"]},
        headers={"x-csrf-token": "z" * 43},
    )
    right = client.post(
        "/v1/fraud/lists/device_blacklist",
        json={"add": ["d-cookie"]},
        headers={"x-csrf-token": csrf},
    )

    # assert
    assert (without.status_code, other.status_code, right.status_code) == (403, 403, 200)


def test_sign_out_needs_the_token_and_ends_the_session(service: Service) -> None:
    # arrange
    client = service.client
    _, csrf = sign_in(client, service.keys[Role.VIEWER])
    cookie = client.cookies[SESSION_COOKIE]

    # act
    forged = client.post("/logout", data={"csrf_token": "q" * 43}, follow_redirects=False)
    still = client.get("/dashboard").status_code
    out = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    client.cookies.set(SESSION_COOKIE, cookie)  # a copy of the cookie kept after sign-out
    replayed = client.get("/dashboard")

    # assert
    assert (forged.status_code, still, out.status_code) == (403, 200, 303)
    assert replayed.status_code == 401 and "/login?next=" in replayed.text
    assert replayed.headers["www-authenticate"] == "Bearer"


def test_revoking_the_key_ends_its_sessions_at_once(
    service: Service, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # arrange: a key of its own, signed in
    db_url = str(service.engine.url)
    key = create_keys(db_url, (Role.VIEWER,))[Role.VIEWER]
    client = service.client
    sign_in(client, key)
    before = client.get("/dashboard").status_code

    # act
    audited_transaction(
        service.engine,
        lambda c, ch: revoke_key(c, ch, key_id=str(key_id_of(key)), actor="tests"),
    )
    after = client.get("/dashboard").status_code
    with service.engine.connect() as connection:
        rows = connection.execute(
            select(browser_sessions).where(browser_sessions.c.key_id == key_id_of(key))
        ).all()

    # assert: no wait for the header keys' cache; the rows are gone too
    assert (before, after) == (200, 401)
    assert rows == []


def test_a_session_expires_and_only_a_digest_of_its_token_is_stored(service: Service) -> None:
    # arrange
    client = service.client
    sign_in(client, service.keys[Role.VIEWER])
    token = client.cookies[SESSION_COOKIE]

    # act
    with service.engine.connect() as connection:
        now = datetime.now(UTC)
        live = find_session(connection, token, now=now)
        later = find_session(connection, token, now=now + timedelta(hours=8, seconds=1))
        stored = [tuple(r) for r in connection.execute(select(browser_sessions)).all()]

    # assert
    assert live is not None and live.principal.role == Role.VIEWER
    assert later is None
    assert token not in json.dumps(stored)


# ------------------------------------------------------------------------------ figures
def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_overview_figures_and_csv_equal_the_raw_rows(service: Service) -> None:
    # arrange
    client, t = service.client, service.truth
    sign_in(client, service.keys[Role.VIEWER])

    # act
    page = client.get("/dashboard").text
    figures = dict(re.findall(r'data-testid="figure-([a-z_]+)">([^<]*)<', page))
    mix = csv_rows(client.get("/dashboard/data/decision_mix.csv").text)
    approval = csv_rows(client.get("/dashboard/data/approval_rate.csv").text)
    overrides = csv_rows(client.get("/dashboard/data/override_rate.csv").text)
    queue = csv_rows(client.get("/dashboard/data/review_queue.csv").text)

    # assert
    assert figures == {
        "decisions": str(t.decisions),
        "approval_rate": percent(t.approval_rate),
        "review_queue": str(t.queue),
        "override_rate": percent(t.override_rate),
    }
    assert (
        Counter({(r["day"], r["stage"], r["outcome"]): int(r["decisions"]) for r in mix}) == t.mix
    )
    assert len({r["day"] for r in mix}) > 1 and len({r["stage"] for r in mix}) == 3
    assert sum(int(r["approved"]) for r in approval) == t.approved
    for row in approval:
        assert float(row["approval_rate"]) == pytest.approx(
            int(row["approved"]) / int(row["decisions"]), abs=1e-12
        )
    assert sum(int(r["overridden"]) for r in overrides) == t.overridden
    assert sum(int(r["items"]) for r in queue) == t.queue
    assert 0 < t.overridden < t.resolved_with_verdict


def test_monitoring_pages_say_no_outcomes_yet_and_draw_nothing(service: Service) -> None:
    # arrange
    sign_in(service.client, service.keys[Role.VIEWER])

    # act
    pages = {s: service.client.get(f"/dashboard/{s}") for s in ("drift", "vintages", "alerts")}
    unknown = service.client.get("/dashboard/nope")

    # assert
    for answer in pages.values():
        assert answer.status_code == 200
        assert "No outcomes recorded yet" in answer.text and "data-figure" not in answer.text
    assert unknown.status_code == 404


def test_the_models_page_shows_champions_and_releases(service: Service) -> None:
    # act
    answer = service.client.get("/dashboard/models", headers=bearer(service.keys[Role.VIEWER]))

    # assert
    assert answer.status_code == 200
    for model_id in STANDARD_MODELS:
        assert model_id in answer.text
    assert 'data-testid="table-decisions_by_model"' in answer.text


def test_the_drill_down_is_loan_level_and_audited_with_the_key_id(service: Service) -> None:
    # arrange: the first link of the decision mix
    client, t = service.client, service.truth
    sign_in(client, service.keys[Role.VIEWER])
    link = re.findall(
        r'href="(/dashboard/decisions\?[^"]+)" data-testid="drill"', client.get("/dashboard").text
    )[0]
    link = link.replace("&amp;", "&")
    params = dict(p.split("=") for p in link.split("?")[1].split("&"))
    expected = t.mix[(params["day"], params["stage"], params["outcome"])]
    with service.engine.connect() as connection:
        before = int(
            connection.execute(select(audit_log.c.seq).order_by(audit_log.c.seq.desc())).scalar()
            or 0
        )

    # act
    as_viewer = client.get(link)
    sign_in(client, service.keys[Role.RISK_OFFICER])
    as_officer = client.get(link)
    listed = csv_rows(client.get(link.replace("/decisions?", "/decisions.csv?")).text)
    with service.engine.connect() as connection:
        records = connection.execute(
            select(audit_log.c.kind, audit_log.c.payload).where(audit_log.c.seq > before)
        ).all()
        report = verify_chain(connection)

    # assert
    assert as_viewer.status_code == 403 and "role must cover risk_officer" in as_viewer.text
    assert as_officer.status_code == 200
    count = re.search(r'data-testid="decision-count">(\d+)<', as_officer.text)
    assert count is not None and int(count.group(1)) == expected == len(listed)
    accesses = [json.loads(r.payload) for r in records if r.kind == "api_access"]
    officer = key_id_of(service.keys[Role.RISK_OFFICER])
    assert [(a["key_id"], a["path"]) for a in accesses] == [
        (officer, "/dashboard/decisions"),
        (officer, "/dashboard/decisions.csv"),
    ]
    assert "session_started" in [r.kind for r in records]
    assert report.ok, report.problem


def test_every_chart_query_answers_the_same_on_sqlite_and_postgresql(db_url: str) -> None:
    # arrange
    engine = make_engine(db_url)
    upgrade_database(engine)
    seed_history(engine, np.random.default_rng(11), n=60, days=3)
    t = truth(engine)

    # act
    with engine.connect() as connection:
        charts = {
            chart_id: spec.query(connection, ChartInputs()) for chart_id, spec in CHARTS.items()
        }
        figures = queries.overview_figures(connection)
    engine.dispose()

    # assert
    mix = charts["decision_mix"].records()
    assert Counter({(r["day"], r["stage"], r["outcome"]): r["decisions"] for r in mix}) == t.mix
    assert (figures.decisions, figures.approved, figures.review_queue) == (
        t.decisions,
        t.approved,
        t.queue,
    )
    assert figures.override_rate == pytest.approx(t.override_rate, abs=1e-12)
    by_model = charts["decisions_by_model"].records()
    assert sum(int(r["decisions"] or 0) for r in by_model) == t.decisions
    for row in charts["approval_rate"].records():
        assert isinstance(row["approval_rate"], float)


def test_sessions_start_end_and_die_with_their_key_on_sqlite_and_postgresql(db_url: str) -> None:
    # arrange
    keys = create_keys(db_url, (Role.VIEWER, Role.ADMIN))
    engine = make_engine(db_url)
    viewer_id, admin_id = str(key_id_of(keys[Role.VIEWER])), str(key_id_of(keys[Role.ADMIN]))
    now = datetime.now(UTC)

    def start(key_id: str, role: Role) -> str:
        principal = Principal(key_id=key_id, name=f"test-{role.value}", role=role)
        started = audited_transaction(
            engine,
            lambda c, ch: start_session(c, ch, principal, lifetime_seconds=600, now=now),
        )
        return started.token

    # act
    viewer_token, admin_token = start(viewer_id, Role.VIEWER), start(admin_id, Role.ADMIN)
    with engine.connect() as connection:
        live = [find_session(connection, t, now=now) for t in (viewer_token, admin_token)]
    ended = audited_transaction(engine, lambda c, ch: end_session(c, ch, admin_token))
    audited_transaction(engine, lambda c, ch: revoke_key(c, ch, key_id=viewer_id, actor="tests"))
    with engine.connect() as connection:
        found = [find_session(connection, token, now=now) for token in (viewer_token, admin_token)]
        report = verify_chain(connection)
    engine.dispose()

    # assert
    assert [s.principal.key_id for s in live if s is not None] == [viewer_id, admin_id]
    assert ended is True and found == [None, None]
    assert report.ok, report.problem
