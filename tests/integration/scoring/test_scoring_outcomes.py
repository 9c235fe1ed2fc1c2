"""Loan outcomes: CSV / Parquet import is idempotent and all-or-nothing, a bad row is named by
line and column, an edited outcome breaks ``fedrisk audit verify``, ``fedrisk monitor`` writes
its report, and the API routes answer by role. Real SQLite databases, real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, text

from server.scoring.apikeys import Role
from server.scoring.app import create_app
from server.scoring.audit import audited_transaction
from server.scoring.db.engine import make_engine
from server.scoring.db.migrate import upgrade_database
from server.scoring.db.tables import audit_head, loans, outcomes
from server.scoring.outcomes import OutcomeImportError, import_rows, read_rows, rows_to_csv
from server.scoring.portfolio import (
    Portfolio,
    PortfolioConfig,
    generate_portfolio,
    load_portfolio,
    reference_json,
)
from tests.support.artifacts import TrainedModel, build_registry
from tests.support.scoring import application, bearer, create_keys, service_settings

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def small() -> Portfolio:
    """300 applicants over three months (a few thousand outcome rows)."""
    return generate_portfolio(
        PortfolioConfig(applicants=300, origination_months=3), np.random.default_rng(17)
    )


@dataclass
class Database:
    url: str
    engine: Engine


@pytest.fixture
def database(tmp_path: Path, small: Portfolio) -> Iterator[Database]:
    """A migrated SQLite database holding the small portfolio's decisions but no outcomes."""
    url = f"sqlite:///{tmp_path / 'scoring.db'}"
    engine = make_engine(url)
    upgrade_database(engine)
    book = Portfolio(small.decisions, [], small.as_of, small.reference, features=small.features)
    load_portfolio(engine, book)
    yield Database(url, engine)
    engine.dispose()


def fedrisk(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the ``fedrisk`` console entry point in a subprocess (this worktree's code)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    return subprocess.run(
        [sys.executable, "-c", "from simulations.cli import main; main()", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def import_outcomes(database: Database, portfolio: Portfolio) -> None:
    """Import every outcome row of ``portfolio`` in one audited transaction."""
    located = ((f"row {i}", r) for i, r in enumerate(portfolio.outcome_rows))
    audited_transaction(database.engine, lambda c, ch: import_rows(c, ch, located))


def counts(engine: Engine) -> tuple[int, int, int]:
    """Rows of ``outcomes`` and ``loans``, and the audit head's seq."""
    with engine.connect() as connection:
        return (
            int(connection.execute(select(func.count()).select_from(outcomes)).scalar_one()),
            int(connection.execute(select(func.count()).select_from(loans)).scalar_one()),
            int(connection.execute(select(audit_head.c.seq)).scalar_one()),
        )


def test_csv_import_twice_stores_each_row_once(
    database: Database, small: Portfolio, tmp_path: Path
) -> None:
    # arrange
    path = tmp_path / "outcomes.csv"
    path.write_text(rows_to_csv(small.outcome_rows), encoding="utf-8")

    # act
    first = fedrisk("outcomes", "import", "--db", database.url, str(path), cwd=tmp_path)
    after_first = counts(database.engine)
    second = fedrisk("outcomes", "import", "--db", database.url, str(path), cwd=tmp_path)

    # assert
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert f"imported {len(small.outcome_rows)} rows" in first.stdout
    assert f"skipped {len(small.outcome_rows)} already stored" in second.stdout
    assert after_first[0] == len(small.outcome_rows)
    assert counts(database.engine) == after_first  # nothing new, not even an audit record


def test_a_bad_csv_row_is_named_and_nothing_is_imported(
    database: Database, small: Portfolio, tmp_path: Path
) -> None:
    # arrange: a good first part, then a negative balance on the 1,000th data row (line 1001)
    rows = [dict(r) for r in small.outcome_rows]
    rows[999]["balance"] = -5
    path = tmp_path / "bad.csv"
    path.write_text(rows_to_csv(rows), encoding="utf-8")
    before = counts(database.engine)

    # act
    result = fedrisk("outcomes", "import", "--db", database.url, str(path), cwd=tmp_path)

    # assert
    assert result.returncode == 2
    assert "line 1001, column balance" in result.stderr and "nothing was imported" in result.stderr
    assert counts(database.engine) == before


def test_parquet_import_streams_and_a_contradicting_row_refuses_the_whole_file(
    database: Database, small: Portfolio, tmp_path: Path
) -> None:
    # arrange
    good = tmp_path / "outcomes.parquet"
    pq.write_table(pa.Table.from_pylist(small.outcome_rows), good, row_group_size=500)
    changed = [dict(r) for r in small.outcome_rows]
    changed[-1]["dpd"] += 7
    changed.append({**changed[0], "month_on_book": 99, "region": "elsewhere"})
    bad = tmp_path / "changed.parquet"
    pq.write_table(pa.Table.from_pylist(changed), bad)

    # act
    imported = audited_transaction(
        database.engine, lambda c, ch: import_rows(c, ch, read_rows(good))
    )
    before = counts(database.engine)
    with pytest.raises(OutcomeImportError) as refused:
        audited_transaction(database.engine, lambda c, ch: import_rows(c, ch, read_rows(bad)))

    # assert
    assert imported.inserted == len(small.outcome_rows)
    assert f"row {len(small.outcome_rows)}, column dpd" in str(refused.value)
    assert "append-only" in str(refused.value)
    assert counts(database.engine) == before


def test_an_outcome_for_an_unknown_decision_is_refused(
    database: Database, small: Portfolio
) -> None:
    # arrange
    row = {**small.outcome_rows[0], "decision_id": "nope"}

    # act / assert
    with pytest.raises(OutcomeImportError, match="line 2, column decision_id"):
        audited_transaction(database.engine, lambda c, ch: import_rows(c, ch, [("line 2", row)]))


def test_editing_an_outcome_in_the_database_breaks_audit_verify(
    database: Database, small: Portfolio, tmp_path: Path
) -> None:
    # arrange: import, then a database writer turns a 90-days-late month into a current one
    import_outcomes(database, small)
    clean = fedrisk("audit", "verify", "--db", database.url, "--chain-only", "--json", cwd=tmp_path)
    with database.engine.begin() as connection:
        target = connection.execute(
            select(outcomes.c.decision_id, outcomes.c.month_on_book, outcomes.c.audit_seq)
            .where(outcomes.c.dpd >= 90)
            .limit(1)
        ).one()
        connection.execute(
            text("UPDATE outcomes SET dpd = 0 WHERE decision_id = :d AND month_on_book = :m"),
            {"d": target.decision_id, "m": target.month_on_book},
        )

    # act
    broken = fedrisk(
        "audit", "verify", "--db", database.url, "--chain-only", "--json", cwd=tmp_path
    )

    # assert
    assert clean.returncode == 0 and json.loads(clean.stdout)["ok"] is True
    report = json.loads(broken.stdout)
    assert broken.returncode == 1
    assert report["ok"] is False and report["first_broken"] == target.audit_seq
    assert "outcome rows" in report["problem"]


def test_editing_a_loans_performance_to_date_breaks_audit_verify(
    database: Database, small: Portfolio, tmp_path: Path
) -> None:
    # arrange: a writer hides a charge-off from the per-loan columns monitoring reads
    import_outcomes(database, small)
    with database.engine.begin() as connection:
        target = connection.execute(
            select(loans.c.decision_id, loans.c.audit_seq).where(loans.c.charged_off > 0).limit(1)
        ).one()
        connection.execute(
            text("UPDATE loans SET charged_off = 0 WHERE decision_id = :d"),
            {"d": target.decision_id},
        )

    # act
    broken = fedrisk(
        "audit", "verify", "--db", database.url, "--chain-only", "--json", cwd=tmp_path
    )

    # assert
    report = json.loads(broken.stdout)
    assert broken.returncode == 1 and report["first_broken"] == target.audit_seq
    assert f"loan {target.decision_id}: charged_off" in report["problem"]


def test_monitor_writes_html_and_json_with_the_agreed_keys(
    database: Database, small: Portfolio, tmp_path: Path
) -> None:
    # arrange
    import_outcomes(database, small)
    reference = tmp_path / "reference.json"
    reference.write_text(reference_json(small.reference), encoding="utf-8")
    out, summary = tmp_path / "report", tmp_path / "monitoring.json"

    # act
    result = fedrisk(
        "monitor", "--db", database.url, "--out", str(out), "--json", str(summary),
        "--reference", str(reference), "--store-alerts", cwd=tmp_path,
    )  # fmt: skip

    # assert
    assert result.returncode == 0, result.stderr
    data = json.loads(summary.read_text(encoding="utf-8"))
    assert {"psi", "auc_matured", "ks_matured", "alerts", "direction"} <= set(data)
    assert data["psi"] is not None and data["auc_matured"] is not None
    assert all({"kind", "severity"} <= set(a) for a in data["alerts"])
    assert all({"segment", "overdue_rate", "net_yield"} <= set(r) for r in data["direction"])
    assert set(data["csi"]) == {f.name for f in small.reference.features}
    classifier = data["purpose_classifier"]  # held-out generated text, both languages
    assert classifier["accuracy"] >= 0.9
    assert min(classifier["accuracy_by_language"].values()) >= 0.9
    assert classifier["held_out_texts"] > 0
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "Direction analysis" in page and "<script" not in page
    assert "Feature CSI" in page


def test_outcomes_are_generated_for_the_decisions_already_stored(
    database: Database, small: Portfolio, tmp_path: Path
) -> None:
    # arrange: the database holds the book's decisions and no outcomes
    approved = {d["decision_id"] for d in small.decisions if d["outcome"] == "approve"}

    # act: twice; the second run finds every approved decision booked already
    first = fedrisk("outcomes", "generate", "--db", database.url, "--for-decisions",
                    "--drift-region", "east", "--seed", "3", cwd=tmp_path)  # fmt: skip
    second = fedrisk("outcomes", "generate", "--db", database.url, "--for-decisions",
                     cwd=tmp_path)  # fmt: skip

    # assert: one loan per approved decision, keyed to it, originated in its decision month
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0 and "0 loans, 0 outcome rows" in second.stdout
    decided = {d["decision_id"]: d["created_at"][:7] for d in small.decisions}
    with database.engine.connect() as connection:
        booked = {r.decision_id: r.originated for r in connection.execute(select(loans))}
        months = connection.execute(
            select(outcomes.c.decision_id, func.count()).group_by(outcomes.c.decision_id)
        ).all()
    assert set(booked) == approved
    assert all(booked[i] == decided[i] for i in booked)
    assert {i for i, _ in months} == approved and all(n >= 1 for _, n in months)


# ------------------------------------------------------------------ the API, by role
@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, trained: TrainedModel
) -> Iterator[tuple[TestClient, dict[Role, str]]]:
    """An in-process app on its SQLite database with a key per role."""
    workdir = tmp_path_factory.mktemp("outcomes-api")
    registry = workdir / "registry"
    build_registry(registry, {"acard-v1": "application"})
    db_url = f"sqlite:///{workdir / 'scoring.db'}"
    keys = create_keys(db_url)
    app = create_app(service_settings(registry, db_url=db_url))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, keys


def outcome_rows(decision_id: str) -> list[dict[str, object]]:
    """Two months of one loan."""
    static = {
        "decision_id": decision_id, "originated": "2026-01", "principal": 5000.0,
        "industry": "retail", "purpose": "education", "purpose_text": "支付研究生学费",
        "customer_type": "salaried", "region": "north",
    }  # fmt: skip
    return [
        {**static, "month_on_book": 1, "dpd": 0, "balance": 4600.0, "paid": 450.0,
         "interest_fees": 50.0, "charge_off": 0.0, "recoveries": 0.0},
        {**static, "month_on_book": 2, "dpd": 35, "balance": 4600.0, "paid": 0.0,
         "interest_fees": 0.0, "charge_off": 0.0, "recoveries": 0.0},
    ]  # fmt: skip


def test_outcomes_and_monitoring_routes_by_role(
    service: tuple[TestClient, dict[Role, str]], trained: TrainedModel
) -> None:
    # arrange: a real A-card decision to key the outcomes to
    client, keys = service
    decided = client.post(
        "/v1/applications/decision",
        json=application(trained, 1),
        headers=bearer(keys[Role.SCORING]),
    )
    body = {"rows": outcome_rows(decided.json()["decision_id"])}
    officer, viewer = bearer(keys[Role.RISK_OFFICER]), bearer(keys[Role.VIEWER])

    # act
    anonymous = client.post("/v1/outcomes", json=body)
    as_viewer = client.post("/v1/outcomes", json=body, headers=viewer)
    first = client.post("/v1/outcomes", json=body, headers=officer)
    again = client.post("/v1/outcomes", json=body, headers=officer)
    aggregate = client.get(
        "/v1/monitoring/direction", params={"dims": ["region", "purpose"]}, headers=viewer
    )
    loans_viewer = client.get(
        "/v1/monitoring/direction/loans", params={"region": "north"}, headers=viewer
    )
    loans_officer = client.get(
        "/v1/monitoring/direction/loans", params={"region": "north"}, headers=officer
    )
    summary = client.get("/v1/monitoring/summary", headers=viewer)
    check_viewer = client.post("/v1/monitoring/alerts/check", headers=viewer)
    check = client.post("/v1/monitoring/alerts/check", headers=officer)
    metrics = client.get("/metrics", headers=viewer)

    # assert
    assert decided.status_code == 200
    assert (anonymous.status_code, as_viewer.status_code) == (401, 403)
    assert first.status_code == 200 and first.json()["inserted"] == 2
    assert (
        again.status_code == 200 and again.json()["skipped"] == 2 and again.json()["inserted"] == 0
    )
    assert aggregate.status_code == 200
    (row,) = aggregate.json()["rows"]
    assert row["segment"] == "region=north × purpose=education" and row["overdue_rate"] == 1.0
    assert loans_viewer.status_code == 403
    assert loans_officer.status_code == 200 and loans_officer.json()["loans"][0]["dpd"] == 35
    assert summary.status_code == 200 and summary.json()["as_of"] == "2026-03"
    assert check_viewer.status_code == 403 and check.status_code == 200
    assert "fedrisk_monitoring_alerts" in metrics.text
