"""Portfolio monitoring on SQLite and PostgreSQL: every indicator the SQL computes equals an
independent numpy / scikit-learn computation on the generated raw rows (to 1e-9), and the
injected drift (a region's income falls) raises a PSI and a direction-analysis alert."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import roc_auc_score, roc_curve
from sqlalchemy import Engine, select

from server.scoring.app import create_app
from server.scoring.dashboard.charts import ChartInputs
from server.scoring.dashboard.indicators import drill_segment
from server.scoring.dashboard.pages import CHARTS
from server.scoring.db.engine import make_engine
from server.scoring.db.migrate import upgrade_database
from server.scoring.db.tables import decision_feature_bins, decisions, feature_bin_counts
from server.scoring.monitoring import queries
from server.scoring.monitoring.alerts import send_alerts
from server.scoring.monitoring.models import Summary
from server.scoring.monitoring.report import build_summary
from server.scoring.outcomes import add_months
from server.scoring.portfolio import Portfolio, PortfolioConfig, generate_portfolio, load_portfolio
from server.scoring.writer import DecisionWrite
from tests.support.artifacts import (
    TrainedModel,
    build_registry,
    make_artifact,
    new_signer,
    publish,
    sample_reference,
    trust,
)
from tests.support.audit import truncate_after
from tests.support.postgres import PostgresServer
from tests.support.scoring import application, decision_write, service_settings, write_decisions

pytestmark = [pytest.mark.integration]

TOL = 1e-9
DRIFT_REGION = "east"


@pytest.fixture(scope="module")
def portfolio() -> Portfolio:
    """A drifted portfolio: 3,000 applicants over six origination months."""
    config = PortfolioConfig(
        applicants=3000, origination_months=6, drift_region=DRIFT_REGION, drift_from=3
    )
    return generate_portfolio(config, np.random.default_rng(20261204))


@dataclass
class Loaded:
    engine: Engine
    portfolio: Portfolio


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def loaded(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    portfolio: Portfolio,
) -> Iterator[Loaded]:
    """The portfolio in a migrated database of each kind (loaded once per module)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('monitoring') / 'scoring.db'}"
    else:
        pg: PostgresServer = request.getfixturevalue("postgres")
        url = pg.create_database()
    engine = make_engine(url)
    upgrade_database(engine)
    load_portfolio(engine, portfolio)
    yield Loaded(engine, portfolio)
    engine.dispose()


# ------------------------------------------------------------------ the oracle: raw rows
def frames(p: Portfolio) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Decisions and outcome rows as data frames (with the calendar month)."""
    decisions = pd.DataFrame(p.decisions)
    rows = pd.DataFrame(p.outcome_rows)
    start = (
        rows["originated"].str[:4].astype(int) * 12 + rows["originated"].str[5:7].astype(int) - 1
    )
    index = start + rows["month_on_book"]
    rows["month"] = [f"{i // 12:04d}-{i % 12 + 1:02d}" for i in index]
    rows["bad_row"] = (rows["dpd"] >= 90) | (rows["charge_off"] > 0)
    return decisions, rows


def matured(p: Portfolio, window: int = 12) -> pd.DataFrame:
    """Per matured loan: bad within ``window`` months, score, probability, role."""
    decisions, rows = frames(p)
    rows["bad_w"] = rows["bad_row"] & (rows["month_on_book"] <= window)
    per = rows.groupby("decision_id").agg(last=("month_on_book", "max"), bad=("bad_w", "max"))
    per = per[(per["last"] >= window) | per["bad"]]
    return per.join(decisions.set_index("decision_id")[["score", "probability", "role"]])


def delong_oracle(score: np.ndarray, bad: np.ndarray) -> float:
    """DeLong variance from every bad-good pair (no grouping)."""
    s_bad, s_good = score[bad], score[~bad]
    psi = (s_bad[:, None] < s_good[None, :]) + 0.5 * (s_bad[:, None] == s_good[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return float(v10.var(ddof=1) / len(s_bad) + v01.var(ddof=1) / len(s_good))


# ------------------------------------------------------------------ tests
def test_psi_matches_numpy_on_the_raw_decisions(loaded: Loaded) -> None:
    # arrange
    p = loaded.portfolio
    ref = p.reference
    decisions, _ = frames(p)
    champion = decisions[(decisions["role"] == "champion") & (decisions["stage"] == "application")]
    months = champion["created_at"].str[:7]

    # act
    with loaded.engine.connect() as connection:
        trend = {pt.month: pt.psi for pt in queries.psi_trend(connection, ref)}
        latest = queries.score_psi(connection, ref, month=max(months))

    # assert
    assert sorted(trend) == sorted(set(months))
    for month, value in trend.items():
        pds = champion.loc[months == month, "probability"].to_numpy()
        counts = np.bincount(
            np.searchsorted(ref.pd_edges, pds, side="right"), minlength=len(ref.shares)
        )
        actual = np.maximum(counts / counts.sum(), 1e-4)
        expected = np.maximum(np.array(ref.shares), 1e-4)
        assert value == pytest.approx(
            float(np.sum((actual - expected) * np.log(actual / expected))), abs=TOL
        )
    assert latest.psi == pytest.approx(trend[max(months)], abs=TOL)


def numpy_bins(p: Portfolio, feature: str, ids: pd.Series) -> np.ndarray:
    """Reference bins of the raw values, computed with numpy in the transformed space."""
    ref = next(f for f in p.reference.features if f.name == feature)
    raw = [p.features[i][feature] for i in ids]
    missing = len(ref.shares) - 1
    if ref.spec.categories is not None:
        lookup = {c: k for k, c in enumerate(ref.spec.categories)}
        return np.array([missing if v is None else lookup.get(v, missing - 1) for v in raw])
    assert ref.spec.min is not None and ref.spec.max is not None
    x = np.clip(np.array(raw, dtype=np.float64), ref.spec.min, ref.spec.max)
    t = np.log1p(x) if ref.spec.transform == "log1p" else x
    lo, hi = (np.log1p([ref.spec.min, ref.spec.max]) if ref.spec.transform == "log1p"
              else (ref.spec.min, ref.spec.max))  # fmt: skip
    edges = lo + np.array(ref.cuts) * (hi - lo) / ref.fine_bins
    return np.where(np.isnan(t), missing, np.searchsorted(edges, t, side="right"))


def test_feature_csi_matches_numpy_on_the_raw_features(loaded: Loaded) -> None:
    # arrange
    p = loaded.portfolio
    decisions, _ = frames(p)
    champion = decisions[(decisions["role"] == "champion") & (decisions["stage"] == "application")]
    months = champion["created_at"].str[:7]

    # act
    with loaded.engine.connect() as connection:
        trend = {
            (pt.feature, pt.month): pt.csi for pt in queries.csi_trend(connection, p.reference)
        }
        latest = queries.feature_csi(connection, p.reference, month=max(months))

    # assert
    names = [f.name for f in p.reference.features]
    assert names == ["income", "debt_ratio", "customer_type", "region"]
    assert set(trend) == {(f, m) for f in names for m in set(months)}
    for ref in p.reference.features:
        for month in set(months):
            ids = champion.loc[months == month, "decision_id"]
            counts = np.bincount(numpy_bins(p, ref.name, ids), minlength=len(ref.shares))
            actual = np.maximum(counts / counts.sum(), 1e-4)
            expected = np.maximum(np.array(ref.shares), 1e-4)
            oracle = float(np.sum((actual - expected) * np.log(actual / expected)))
            assert trend[(ref.name, month)] == pytest.approx(oracle, abs=TOL)
    assert {r.feature: r.csi for r in latest} == {
        name: pytest.approx(trend[(name, max(months))], abs=TOL) for name in names
    }


def test_the_income_drop_shows_in_the_income_csi_and_raises_a_csi_alert(loaded: Loaded) -> None:
    # act
    with loaded.engine.connect() as connection:
        summary = build_summary(connection, loaded.portfolio.reference)
        before = queries.feature_csi(connection, loaded.portfolio.reference, month="2025-01")

    # assert: the drift region's income fell from the fourth month: income moves, debt does not
    early = {r.feature: r.csi for r in before}
    assert summary.csi["income"] >= 0.25 > early["income"]
    assert summary.csi["debt_ratio"] < 0.1
    alert = next(a for a in summary.alerts if a.kind == "csi" and a.severity == "critical")
    assert alert.retrain_recommended and "income" in alert.message
    assert "retrain recommended" in alert.message
    assert "income" in alert.evidence["features"]  # type: ignore[operator]
    assert "debt_ratio" not in alert.evidence["features"]  # type: ignore[operator]


def test_auc_ks_and_delong_on_matured_loans_match_scikit_learn(loaded: Loaded) -> None:
    # arrange
    m = matured(loaded.portfolio)

    # act
    with loaded.engine.connect() as connection:
        result = queries.champion_challenger(connection)

    # assert
    for role, found in (("champion", result.champion), ("challenger", result.challenger)):
        part = m[m["role"] == role]
        bad, score = part["bad"].to_numpy(dtype=bool), part["score"].to_numpy()
        fpr, tpr, _ = roc_curve(bad, -score)
        assert found.loans == len(part) and found.bads == int(bad.sum())
        assert found.auc == pytest.approx(roc_auc_score(bad, -score), abs=TOL)
        assert found.ks == pytest.approx(float(np.max(tpr - fpr)), abs=TOL)
        assert found.auc_variance == pytest.approx(delong_oracle(score, bad), abs=TOL)
    assert result.ci_low is not None and result.ci_high is not None
    assert result.ci_low < result.auc_difference < result.ci_high


def test_expected_auc_from_the_stored_pds_matches_numpy(loaded: Loaded) -> None:
    # arrange: every matured champion loan is a bad with weight pd and a good with 1 - pd
    m = matured(loaded.portfolio)
    m = m[m["role"] == "champion"]
    score, pd_ = m["score"].to_numpy(), m["probability"].to_numpy()
    below = (score[:, None] < score[None, :]) + 0.5 * (score[:, None] == score[None, :])
    oracle = float(pd_ @ below @ (1.0 - pd_) / (pd_.sum() * (1.0 - pd_).sum()))

    # act
    with loaded.engine.connect() as connection:
        expected = queries.expected_auc(connection)

    # assert
    assert expected == pytest.approx(oracle, abs=TOL)


@pytest.fixture(scope="module")
def books(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Summary]:
    """Summaries of two approved-only books on SQLite: one without drift, one whose score
    stops ranking the true risk (concept drift)."""
    out = {}
    for name, extra in (("steady", {}), ("drifted", {"concept_drift": 0.8, "drift_from": 0})):
        book = generate_portfolio(
            PortfolioConfig(applicants=3000, origination_months=6, **extra),
            np.random.default_rng(20261205),
        )
        engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp(name) / 'scoring.db'}")
        upgrade_database(engine)
        load_portfolio(engine, book)
        with engine.connect() as connection:
            out[name] = build_summary(connection, book.reference)
        engine.dispose()
    return out


def test_an_approved_only_book_without_drift_raises_no_auc_alert(
    books: dict[str, Summary],
) -> None:
    # arrange
    steady = books["steady"]
    assert steady.auc_matured is not None and steady.release_auc is not None

    # act
    kinds = [a.kind for a in steady.alerts]

    # assert: below the release's AUC by selection alone, but as ranked as its PDs promise
    assert steady.release_auc - steady.auc_matured >= 0.03
    assert "auc_drop" not in kinds


def test_a_book_whose_score_stops_ranking_raises_the_auc_alert(books: dict[str, Summary]) -> None:
    # act
    drifted = books["drifted"]
    alert = next((a for a in drifted.alerts if a.kind == "auc_drop"), None)

    # assert
    assert alert is not None and alert.retrain_recommended
    assert drifted.expected_auc_matured is not None and drifted.auc_matured is not None
    assert alert.value == pytest.approx(drifted.expected_auc_matured - drifted.auc_matured)
    assert alert.evidence["expected_auc"] == drifted.expected_auc_matured


def test_bad_rate_by_band_matches_the_raw_loans(loaded: Loaded) -> None:
    # arrange
    m = matured(loaded.portfolio)
    m = m[m["role"] == "champion"]
    ref = loaded.portfolio.reference
    band = np.searchsorted(ref.pd_edges, m["probability"].to_numpy(), side="right")

    # act
    with loaded.engine.connect() as connection:
        bands = queries.bad_rate_by_band(connection, ref)

    # assert
    for b in bands:
        inside = m[band == b.band]
        assert b.loans == len(inside) and b.bads == int(inside["bad"].sum())
        if len(inside):
            assert b.bad_rate == pytest.approx(inside["bad"].mean(), abs=TOL)
            assert b.mean_pd == pytest.approx(inside["probability"].mean(), abs=TOL)


def test_vintage_curves_match_the_raw_rows(loaded: Loaded) -> None:
    # arrange
    p = loaded.portfolio
    _, rows = frames(p)
    loans = rows.groupby("decision_id")["originated"].first()
    first_bad = rows[rows["bad_row"]].groupby("decision_id")["month_on_book"].min()

    # act
    with loaded.engine.connect() as connection:
        curves = queries.vintages(connection, as_of=p.as_of)

    # assert
    assert [c.originated for c in curves] == sorted(loans.unique())
    for curve in curves:
        cohort = loans[loans == curve.originated].index
        firsts = first_bad.reindex(cohort).to_numpy()
        age = (
            (int(p.as_of[:4]) - int(curve.originated[:4])) * 12
            + int(p.as_of[5:])
            - int(curve.originated[5:])
        )
        expected = [float(np.sum(firsts <= mob)) / len(cohort) for mob in range(1, age + 1)]
        assert curve.loans == len(cohort)
        assert np.allclose(curve.bad_rate_by_mob, expected, rtol=0, atol=TOL)


def test_roll_rates_match_the_raw_rows(loaded: Loaded) -> None:
    # arrange
    p = loaded.portfolio
    _, rows = frames(p)
    nxt = rows.assign(month_on_book=rows["month_on_book"] - 1)
    pairs = rows.merge(nxt, on=["decision_id", "month_on_book"], suffixes=("", "_next"))
    first = add_months(p.as_of, -2)
    pairs = pairs[
        (pairs["month_next"] >= first) & (pairs["month_next"] <= p.as_of) & (pairs["balance"] > 0)
    ]
    edges = [1, 30, 60, 90]
    expected = np.zeros((5, 5), dtype=int)
    np.add.at(
        expected, (np.digitize(pairs["dpd"], edges), np.digitize(pairs["dpd_next"], edges)), 1
    )

    # act
    with loaded.engine.connect() as connection:
        result = queries.roll_rates(connection, as_of=p.as_of, months=3)

    # assert
    assert result.counts == expected.tolist()
    for i, row in enumerate(expected):
        if row.sum():
            assert np.allclose(result.rates[i], row / row.sum(), rtol=0, atol=TOL)


def test_direction_rows_match_the_raw_rows(loaded: Loaded) -> None:
    # arrange
    p = loaded.portfolio
    _, rows = frames(p)
    snap = rows[rows["month"] == p.as_of]
    active = (snap["balance"] > 0) | (snap["charge_off"] > 0)

    # act
    with loaded.engine.connect() as connection:
        crossed = queries.direction(connection, ["region", "purpose"], as_of=p.as_of)
        loans_east = queries.drill_down(
            connection, as_of=p.as_of, filters={"region": DRIFT_REGION}, limit=1000
        )

    # assert
    assert len(crossed.rows) == rows.groupby(["region", "purpose"]).ngroups
    for row in crossed.rows:
        inside = (snap["region"] == row.tags["region"]) & (snap["purpose"] == row.tags["purpose"])
        overdue = inside & active & (snap["dpd"] > 0)
        life = rows[
            (rows["region"] == row.tags["region"]) & (rows["purpose"] == row.tags["purpose"])
        ]
        principal = life.groupby("decision_id")["principal"].first().sum()
        net_loss = life["charge_off"].sum() - life["recoveries"].sum()
        assert row.overdue_loans == int(overdue.sum())
        if (inside & active).sum():
            assert row.overdue_rate == pytest.approx(
                overdue.sum() / (inside & active).sum(), abs=TOL
            )
        assert row.overdue_amount == pytest.approx(snap.loc[overdue, "balance"].sum(), abs=1e-6)
        assert row.net_yield == pytest.approx(
            (life["interest_fees"].sum() - net_loss) / principal, abs=TOL
        )
    assert loans_east.total == int((snap["region"] == DRIFT_REGION).sum())
    assert [loan.dpd for loan in loans_east.loans] == sorted(
        (loan.dpd for loan in loans_east.loans), reverse=True
    )


def test_dashboard_charts_draw_the_monitoring_queries_and_drill_to_the_raw_loans(
    loaded: Loaded,
) -> None:
    # arrange
    p = loaded.portfolio
    _, rows = frames(p)
    snap = rows[rows["month"] == p.as_of]
    inputs = ChartInputs(reference=p.reference, params={"dim_a": "region", "dim_b": "purpose"})

    # act
    with loaded.engine.connect() as connection:
        charts = {chart_id: spec.query(connection, inputs) for chart_id, spec in CHARTS.items()}
        trend = queries.psi_trend(connection, p.reference)
        month = queries.latest_decision_month(connection)
        assert month is not None
        csi = {r.feature: r.csi for r in queries.feature_csi(connection, p.reference, month=month)}
        csi_trend = queries.csi_trend(connection, p.reference)
        crossed = queries.direction(connection, ["region", "purpose"], as_of=p.as_of)
        versus = queries.champion_challenger(connection)
        drilled = [drill_segment(r) for r in charts["direction"].records()]
        totals = [
            queries.drill_down(
                connection,
                as_of=d["as_of"],
                filters={k: v for k, v in d.items() if k != "as_of"},
                limit=1,
            ).total
            for d in drilled
        ]

    # assert: the charts are the monitoring queries' numbers, the drill-down the raw loans
    assert charts["psi_trend"].column("psi") == [pt.psi for pt in trend]
    csi_chart = charts["feature_csi"]
    shown = dict(zip(csi_chart.column("feature"), csi_chart.column("csi"), strict=True))
    assert shown == csi and csi_chart.column("feature")[0] == "income"
    assert charts["csi_trend"].column("csi") == [pt.csi for pt in csi_trend]
    assert csi_chart.to_csv().splitlines()[0] == "feature,month,csi,band,applications"
    assert charts["direction"].column("overdue_rate") == [r.overdue_rate for r in crossed.rows]
    assert charts["risk_return"].column("net_yield") == [r.net_yield for r in crossed.rows]
    assert charts["champion_challenger"].column("ci_low") == [versus.ci_low]
    assert sum(int(n or 0) for n in charts["vintages"].column("loans")) > 0
    assert {d["as_of"] for d in drilled} == {p.as_of}
    for d, total in zip(drilled, totals, strict=True):
        inside = (snap["region"] == d["region"]) & (snap["purpose"] == d["purpose"])
        assert total == int(inside.sum())


def test_injected_drift_raises_a_psi_and_a_direction_alert(loaded: Loaded) -> None:
    # act
    with loaded.engine.connect() as connection:
        summary = build_summary(connection, loaded.portfolio.reference)

    # assert
    kinds = {(a.kind, a.subject) for a in summary.alerts}
    psi = next(a for a in summary.alerts if a.kind == "psi")
    assert summary.psi is not None and summary.psi >= 0.25
    assert psi.retrain_recommended and psi.evidence["applications"] > 0
    assert ("segment_delinquency", f"region={DRIFT_REGION}") in kinds
    assert summary.direction and {"segment", "overdue_rate", "net_yield"} <= set(
        summary.direction[0].model_dump()
    )


def test_alerts_reach_a_real_webhook(loaded: Loaded) -> None:
    # arrange: a real HTTP server on 127.0.0.1 collecting what it is sent
    received: list[dict[str, Any]] = []
    done = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()
            done.set()

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with loaded.engine.connect() as connection:
        alerts = build_summary(connection, loaded.portfolio.reference).alerts

    # act
    try:
        delivered = send_alerts(f"http://127.0.0.1:{server.server_port}/hook", alerts)
    finally:
        server.shutdown()
        server.server_close()

    # assert
    assert delivered == len(alerts) == len(received)
    assert {r["kind"] for r in received} == {a.kind for a in alerts}


def test_service_decisions_store_their_reference_bins_and_the_summary_has_csi(
    tmp_path: Path, trained: TrainedModel
) -> None:
    # arrange: a champion whose signed artifact carries per-feature reference bins
    registry = tmp_path / "registry"
    signer = new_signer()
    trust(registry, signer)
    reference = sample_reference(trained)
    artifact = make_artifact(
        trained, model_id="acard-ref", stage="application", reference=reference
    )
    publish(registry, artifact, signer)
    db_url = f"sqlite:///{tmp_path / 'scoring.db'}"
    settings = service_settings(registry, db_url=db_url, insecure_dev=True)
    bodies = [application(trained, n) for n in range(6)]

    # act
    with TestClient(create_app(settings)) as client:
        answers = [client.post("/v1/applications/decision", json=b) for b in bodies]
        summary = client.get("/v1/monitoring/summary")

    # assert: one row per decision and reference feature, the bin its raw value falls in
    assert [a.status_code for a in answers] == [200] * 6, answers[0].text
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            stored = {
                (r.decision_id, r.feature): r.bin
                for r in connection.execute(select(decision_feature_bins))
            }
    finally:
        engine.dispose()
    expected = {
        (a.json()["decision_id"], f.name): f.bin_of(b["features"].get(f.name))
        for a, b in zip(answers, bodies, strict=True)
        for f in reference.features
    }
    assert len(reference.features) >= 10 and stored == expected
    assert summary.status_code == 200, summary.text
    assert set(summary.json()["csi"]) == {f.name for f in reference.features}


def test_override_rate_of_reviews_resolved_through_the_service_matches_the_raw_rows(
    tmp_path: Path,
) -> None:
    # arrange: a book whose manual reviews are queued, some of them sent by a policy rule
    # against the model's approval; a registry so that the real service can start on it
    book = generate_portfolio(
        PortfolioConfig(
            applicants=800, origination_months=3, review_items=True, policy_review_share=0.25
        ),
        np.random.default_rng(17),
    )
    db_url = f"sqlite:///{tmp_path / 'scoring.db'}"
    engine = make_engine(db_url)
    upgrade_database(engine)
    load_portfolio(engine, book)
    registry = tmp_path / "registry"
    build_registry(registry, {"acard-v1": "application"})
    declined = [d["decision_id"] for d in book.decisions if d["outcome"] == "decline"][:8]
    resolved: list[dict[str, Any]] = []

    # act: applicants ask for human review of declines; a person claims and resolves every
    # item through the review endpoints, approving two in three
    settings = service_settings(registry, db_url=db_url, insecure_dev=True)
    with TestClient(create_app(settings)) as client:
        for decision_id in declined:
            asked = client.post(
                f"/v1/decisions/{decision_id}/human-review", json={"reason": "income changed"}
            )
            assert asked.status_code == 201, asked.text
        items = client.get("/v1/reviews", params={"status": "open", "limit": 500}).json()["items"]
        for item in items:
            path = f"/v1/reviews/{item['item_id']}"
            assert client.post(f"{path}/claim", json={"reviewer": "ann"}).status_code == 200
            verdict = "decline" if item["item_id"] % 3 == 0 else "approve"
            answer = client.post(f"{path}/resolve", json={"reviewer": "ann", "resolution": verdict})
            assert answer.status_code == 200, answer.text
            resolved.append(answer.json())
    with engine.connect() as connection:
        mix = {r.month: r for r in queries.decision_mix(connection)}
    engine.dispose()

    # assert: the override rate is the raw rows' own, by month of resolution
    model = {d["decision_id"]: d["details"]["model_decision"] for d in book.decisions}
    raw = pd.DataFrame(resolved)
    raw["model_decision"] = raw["decision_id"].map(model)
    raw["month"] = raw["resolved_at"].str[:7]
    kinds = set(raw["kind"])
    counted = raw[raw["model_decision"].isin(["approve", "decline"])]
    assert kinds == {"manual_review", "human_review_request"} and len(counted) > 40
    assert len(raw) > len(counted)  # review-band referrals carry no verdict to override
    for month, group in counted.groupby("month"):
        overridden = int((group["resolution"] != group["model_decision"]).sum())
        row = mix[str(month)]
        assert (row.reviews_resolved, row.overrides) == (len(group), overridden)
        assert row.override_rate == pytest.approx(overridden / len(group), abs=TOL)
        assert 0 < overridden < len(group)


Counts = Counter[tuple[Any, ...]]


def rollup_and_raw_counts(engine: Engine) -> tuple[Counts, Counts]:
    """The ``feature_bin_counts`` rollup, and the same counts taken in Python from the raw
    decision and bin rows."""
    with engine.connect() as connection:
        rollup = Counter(
            {
                (r.month, r.stage, r.role, r.feature, r.bin): r.n
                for r in connection.execute(select(feature_bin_counts))
            }
        )
        decided = {
            r.decision_id: (r.created_at[:7], r.stage, r.role)
            for r in connection.execute(
                select(
                    decisions.c.decision_id, decisions.c.created_at, decisions.c.stage
                ).add_columns(decisions.c.role)
            )
        }
        raw = Counter(
            (*decided[r.decision_id], r.feature, r.bin)
            for r in connection.execute(select(decision_feature_bins))
        )
    return rollup, raw


def test_the_writer_keeps_the_csi_rollup_equal_to_the_raw_bins(db_url: str) -> None:
    # arrange: champion and challenger applications and behaviour decisions whose bins repeat,
    # so that later batches add to keys the earlier ones created
    engine = make_engine(db_url)
    upgrade_database(engine)

    def binned(i: int) -> DecisionWrite:
        write = decision_write(i)
        write.row["role"] = "challenger" if i % 4 == 0 else "champion"
        write.row["stage"] = "behaviour" if i % 5 == 0 else "application"
        return dataclasses.replace(write, feature_bins={"income": i % 3, "region": i % 2})

    try:
        # act: two writers' batches over the same keys, rows deleted outside the writer, then
        # a bulk load (the loader's path)
        assert write_decisions(engine, [binned(i) for i in range(24)]) == [None] * 24
        assert write_decisions(engine, [binned(i) for i in range(24, 60)]) == [None] * 36
        written = rollup_and_raw_counts(engine)
        with engine.begin() as connection:
            truncate_after(connection, 40)
        truncated = rollup_and_raw_counts(engine)
        book = generate_portfolio(PortfolioConfig(applicants=150), np.random.default_rng(3))
        load_portfolio(engine, book)
        loaded = rollup_and_raw_counts(engine)
    finally:
        engine.dispose()

    # assert: every key counted once per decision; the second batch added to the first's keys
    assert written[0] == written[1] and sum(written[1].values()) == 120
    assert max(written[1].values()) > 1
    assert truncated[0] == truncated[1] and sum(truncated[1].values()) == 80
    assert loaded[0] == loaded[1] and sum(loaded[1].values()) > 80
