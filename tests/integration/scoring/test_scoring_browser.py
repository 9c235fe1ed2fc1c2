"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright, against a
real ``fedrisk serve`` process on a seeded database. People sign in through the login page and
click through; the numbers on screen must equal the raw rows; a viewer cannot reach loan-level
pages; nothing loads from another origin. Screenshots are saved (path in pytest's summary), and
``FEDRISK_UPDATE_SCREENSHOT=1`` also writes the README's ``docs/dashboard.png``."""

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
from server.scoring.db.tables import audit_log
from tests.support.artifacts import build_registry
from tests.support.browser import REPO, chromium, require_chromium, screenshot_dir
from tests.support.dashboard import Truth, percent, seed_history, truth
from tests.support.scoring import STANDARD_MODELS, ScoringServer, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAIT_MS = 20_000
MONITORING_PAGES = ("drift", "performance", "vintages", "direction", "alerts")


@dataclass
class Setup:
    server: ScoringServer
    browser: Any
    truth: Truth
    shots: Path


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
    expected = truth(engine)
    engine.dispose()
    server = start_server(workdir, registry, db_url=db_url)
    try:
        with chromium() as browser:
            yield Setup(server, browser, expected, screenshot_dir("dashboard-browser"))
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
    for slug in (*MONITORING_PAGES, "models"):
        page.locator(f"header a[data-page={slug}]").click()
        page.wait_for_url(f"**/dashboard/{slug}")
        visited[slug] = page.locator("main").inner_text()
        page.screenshot(path=str(setup.shots / f"{slug}.png"), full_page=True)
    models_charts = wait_for_charts(page)
    page.locator("header a[data-page=overview]").click()
    page.get_by_test_id("numbers-decision_mix").locator("summary").click()
    page.get_by_test_id("drill").first.click()
    refused = page.get_by_test_id("refused").inner_text()
    page.screenshot(path=str(setup.shots / "viewer-refused.png"), full_page=True)
    direct = page.goto("/dashboard/decisions.csv")

    # assert: the figures are the raw rows' counts, the CSV is the chart's rows
    assert charts == 4 and models_charts == 1
    assert shown == {
        "decisions": str(t.decisions),
        "approval_rate": percent(t.approval_rate),
        "review_queue": str(t.queue),
        "override_rate": percent(t.override_rate),
    }
    rows = list(csv.DictReader(io.StringIO(mix_csv)))
    assert {(r["day"], r["stage"], r["outcome"]): int(r["decisions"]) for r in rows} == dict(t.mix)
    for slug in MONITORING_PAGES:
        assert "No outcomes recorded yet" in visited[slug]
    for model_id in STANDARD_MODELS:
        assert model_id in visited["models"]
    assert "role must cover risk_officer" in refused
    assert direct is not None and direct.status == 403
    assert all(url.startswith(setup.server.base_url) for url in page.requested), page.requested
    if os.environ.get("FEDRISK_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(setup.shots / "overview.png", REPO / "docs" / "dashboard.png")


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
