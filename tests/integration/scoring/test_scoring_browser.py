"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright, against a
real ``fedrisk serve`` process on a seeded database that also holds a generated portfolio with an
injected drift (a region's income falls) and its outcomes. People sign in through the login page
and click through; the numbers on screen must equal the raw rows; the drift shows as a PSI and a
direction alert; a risk officer's drill-down lists exactly the segment's loans; a viewer cannot
reach loan-level pages; nothing loads from another origin. Screenshots are saved (path in
pytest's summary), and ``FEDRISK_UPDATE_SCREENSHOT=1`` also writes the README's
``docs/dashboard.png`` (the drift page)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from server.scoring.apikeys import Role, key_id_of
from server.scoring.db.engine import make_engine
from server.scoring.db.migrate import upgrade_database
from server.scoring.db.tables import audit_log, loans, outcomes
from server.scoring.monitoring.alerts import store_alerts
from server.scoring.monitoring.report import build_summary
from server.scoring.portfolio import (
    Portfolio,
    PortfolioConfig,
    generate_portfolio,
    load_portfolio,
    reference_json,
)
from tests.support.artifacts import build_registry
from tests.support.browser import REPO, chromium, require_chromium, screenshot_dir
from tests.support.dashboard import Truth, percent, seed_history, truth
from tests.support.scoring import STANDARD_MODELS, ScoringServer, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAIT_MS = 20_000
MONITORING_PAGES = ("drift", "performance", "vintages", "direction", "alerts")
DRIFT_REGION = "east"
PSI_MONTH = "2026-12"


@dataclass
class Setup:
    server: ScoringServer
    browser: Any
    truth: Truth
    shots: Path
    portfolio: Portfolio


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """One seeded service process and one browser for the module."""
    require_chromium()
    workdir = tmp_path_factory.mktemp("browser")
    registry = workdir / "registry"
    build_registry(registry, STANDARD_MODELS)
    db_url = f"sqlite:///{workdir / 'scoring.db'}"
    engine = make_engine(db_url)
    upgrade_database(engine)
    seed_history(engine, np.random.default_rng(3), n=200, days=6)
    # the monitoring pages' data: a drifted portfolio, its outcomes and the alerts they raise;
    # it originates until PSI_MONTH, after the seeded history, so the PSI of the latest month
    # measures the portfolio's drift alone
    config = PortfolioConfig(
        applicants=3000,
        start="2026-07",
        origination_months=6,
        drift_region=DRIFT_REGION,
        drift_from=3,
    )
    portfolio = generate_portfolio(config, np.random.default_rng(20261204))
    load_portfolio(engine, portfolio)
    with engine.begin() as connection:
        store_alerts(connection, build_summary(connection, portfolio.reference).alerts)
    expected = truth(engine)
    engine.dispose()
    reference = workdir / "reference.json"
    reference.write_text(reference_json(portfolio.reference), encoding="utf-8")
    server = start_server(
        workdir,
        registry,
        db_url=db_url,
        env={"FEDRISK_MONITORING_REFERENCE_PATH": str(reference)},
    )
    try:
        with chromium() as browser:
            yield Setup(server, browser, expected, screenshot_dir("dashboard-browser"), portfolio)
    finally:
        server.stop()


@pytest.fixture
def page(setup: Setup) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page; every request it makes is recorded."""
    context = setup.browser.new_context(
        base_url=setup.server.base_url,
        accept_downloads=True,
        viewport={"width": 1280, "height": 900},
    )
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    tab.requested = []
    tab.on("request", lambda request: tab.requested.append(request.url))
    try:
        yield tab
    finally:
        context.close()


def sign_in(page: Any, key: str) -> None:
    """Open /dashboard, follow the sign-in link, paste the key, submit."""
    page.goto("/dashboard")
    page.get_by_role("link", name="Sign in").click()
    page.get_by_test_id("key").fill(key)
    page.get_by_test_id("sign-in").click()
    page.wait_for_url("**/dashboard")


def wait_for_charts(page: Any) -> int:
    """Wait until Plotly drew every chart of the page; how many there are."""
    count = int(page.locator("[data-figure]").count())
    page.wait_for_function(
        "n => document.querySelectorAll('[data-figure][data-rendered=true] .main-svg').length >= n",
        arg=count,
    )
    return count


def figure(page: Any, key: str) -> str:
    return str(page.get_by_test_id(f"figure-{key}").inner_text())


def test_a_viewer_clicks_through_and_sees_the_sql_truth(setup: Setup, page: Any) -> None:
    # arrange
    t = setup.truth

    # act: sign in through the form, read the overview
    sign_in(page, setup.server.keys[Role.VIEWER])
    charts = wait_for_charts(page)
    shown = {key: figure(page, key) for key in ("decisions", "approval_rate", "review_queue")}
    shown["override_rate"] = figure(page, "override_rate")
    page.screenshot(path=str(setup.shots / "overview.png"))
    with page.expect_download() as download:
        page.get_by_test_id("csv-decision_mix").click()
    mix_csv = Path(download.value.path()).read_text()
    visited = {}
    drawn = {}
    for slug in (*MONITORING_PAGES, "models"):
        page.locator(f"header a[data-page={slug}]").click()
        page.wait_for_url(f"**/dashboard/{slug}")
        drawn[slug] = wait_for_charts(page)
        visited[slug] = page.locator("main").inner_text()
        page.screenshot(path=str(setup.shots / f"{slug}.png"), full_page=True)
    page.locator("header a[data-page=overview]").click()
    page.get_by_test_id("numbers-decision_mix").locator("summary").click()
    page.get_by_test_id("drill").first.click()
    refused = page.get_by_test_id("refused").inner_text()
    page.screenshot(path=str(setup.shots / "viewer-refused.png"), full_page=True)
    direct = page.goto("/dashboard/decisions.csv")

    # assert: the figures are the raw rows' counts, the CSV is the chart's rows
    assert charts == 4
    assert drawn == {
        "drift": 4,  # score PSI by month and band, feature CSI and its trend
        "performance": 2,
        "vintages": 2,
        "direction": 2,
        "alerts": 0,  # a table, no figure
        "models": 2,
    }
    assert shown == {
        "decisions": str(t.decisions),
        "approval_rate": percent(t.approval_rate),
        "review_queue": str(t.queue),
        "override_rate": percent(t.override_rate),
    }
    rows = list(csv.DictReader(io.StringIO(mix_csv)))
    assert {(r["day"], r["stage"], r["outcome"]): int(r["decisions"]) for r in rows} == dict(t.mix)
    for slug in MONITORING_PAGES:
        assert "No outcomes recorded yet" not in visited[slug]
    for model_id in STANDARD_MODELS:
        assert model_id in visited["models"]
    assert "role must cover risk_officer" in refused
    assert direct is not None and direct.status == 403
    assert all(url.startswith(setup.server.base_url) for url in page.requested), page.requested
    if os.environ.get("FEDRISK_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(setup.shots / "drift.png", REPO / "docs" / "dashboard.png")


def test_a_risk_officer_drills_down_to_the_decisions_and_is_audited(
    setup: Setup, page: Any
) -> None:
    # arrange
    t = setup.truth
    officer = setup.server.keys[Role.RISK_OFFICER]

    # act: the last row of the decision mix table leads to its decisions
    sign_in(page, officer)
    page.get_by_test_id("numbers-decision_mix").locator("summary").click()
    row = page.get_by_test_id("table-decision_mix").locator("tbody tr").last
    day, stage, outcome, count = (row.locator("td").nth(i).inner_text() for i in range(4))
    row.get_by_test_id("drill").click()
    page.wait_for_url("**/dashboard/decisions?*")
    listed = int(page.get_by_test_id("decision-count").inner_text())
    table_rows = page.get_by_test_id("table-decisions").locator("tbody tr").count()
    page.screenshot(path=str(setup.shots / "risk-officer-drill-down.png"), full_page=True)
    page.get_by_test_id("logout").click()
    page.wait_for_url("**/login")
    after = page.goto("/dashboard")
    engine = make_engine(setup.server.db_url)
    with engine.connect() as connection:
        payloads = [
            json.loads(p)
            for p in connection.execute(
                select(audit_log.c.payload).where(audit_log.c.kind == "api_access")
            ).scalars()
        ]
    engine.dispose()

    # assert
    assert listed == int(count) == table_rows == t.mix[(day, stage, outcome)]
    assert {"key_id": key_id_of(officer), "path": "/dashboard/decisions"} in [
        {"key_id": p["key_id"], "path": p["path"]} for p in payloads
    ]
    assert after is not None and after.status == 401


def segment_truth(db_url: str, as_of: str, tags: dict[str, str]) -> set[str]:
    """Decision ids of the segment's loans with a row in month ``as_of``, straight from SQL."""
    engine = make_engine(db_url)
    with engine.connect() as connection:
        ids = connection.execute(
            select(outcomes.c.decision_id)
            .join(loans, loans.c.decision_id == outcomes.c.decision_id)
            .where(outcomes.c.month == as_of, *(loans.c[k] == v for k, v in tags.items()))
        ).scalars()
        found = set(ids)
    engine.dispose()
    return found


def test_a_viewer_sees_the_drift_alerts_and_cannot_open_the_loans(setup: Setup, page: Any) -> None:
    # act
    sign_in(page, setup.server.keys[Role.VIEWER])
    page.locator("header a[data-page=alerts]").click()
    page.wait_for_url("**/dashboard/alerts")
    table = page.get_by_test_id("table-alerts")
    kinds = table.locator("tbody tr td:nth-child(2)").all_inner_texts()
    subjects = table.locator("tbody tr td:nth-child(4)").all_inner_texts()
    page.screenshot(path=str(setup.shots / "alerts.png"), full_page=True)
    page.locator("header a[data-page=direction]").click()
    page.get_by_test_id("numbers-direction").locator("summary").click()
    page.get_by_test_id("table-direction").get_by_test_id("drill").first.click()
    refused = page.get_by_test_id("refused").inner_text()
    direct = page.goto(f"/dashboard/loans?region={DRIFT_REGION}")

    # assert: both alerts of the injected drift are on the page; loans stay closed
    assert f"score:{PSI_MONTH}" in subjects and "psi" in kinds
    assert "segment_delinquency" in kinds and f"region={DRIFT_REGION}" in subjects
    assert "role must cover risk_officer" in refused
    assert direct is not None and direct.status == 403


def test_a_risk_officer_clicks_a_direction_cell_and_sees_its_loans(setup: Setup, page: Any) -> None:
    # arrange
    officer = setup.server.keys[Role.RISK_OFFICER]

    # act: cross region with purpose, open the drifted region's first cell
    sign_in(page, officer)
    page.locator("header a[data-page=direction]").click()
    page.get_by_test_id("dim_a").select_option("region")
    page.get_by_test_id("dim_b").select_option("purpose")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/dashboard/direction?*")
    wait_for_charts(page)
    page.get_by_test_id("numbers-direction").locator("summary").click()
    row = page.get_by_test_id("table-direction").locator("tbody tr", has_text=DRIFT_REGION).first
    region, purpose = (row.locator("td").nth(i).inner_text() for i in range(2))
    row.get_by_test_id("drill").click()
    page.wait_for_url("**/dashboard/loans?*")
    listed = int(page.get_by_test_id("loan-count").inner_text())
    table = page.get_by_test_id("table-loans")
    shown = set(table.locator("tbody tr td:nth-child(1)").all_inner_texts())
    page.screenshot(path=str(setup.shots / "risk-officer-loans.png"), full_page=True)
    engine = make_engine(setup.server.db_url)
    with engine.connect() as connection:
        paths = [
            (p["key_id"], p["path"])
            for p in map(
                json.loads,
                connection.execute(
                    select(audit_log.c.payload).where(audit_log.c.kind == "api_access")
                ).scalars(),
            )
        ]
    engine.dispose()

    # assert: exactly the segment's loans, and the view is in the audit trail
    expected = segment_truth(
        setup.server.db_url, setup.portfolio.as_of, {"region": region, "purpose": purpose}
    )
    assert region == DRIFT_REGION
    assert listed == len(expected) > 0
    assert shown == expected
    assert (key_id_of(officer), "/dashboard/loans") in paths
