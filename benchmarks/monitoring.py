"""Monitoring benchmark: every monitoring view over N loans x 12 months on SQLite and PostgreSQL.

Run from the repository root::

    .venv/bin/python benchmarks/monitoring.py --loans 100000 --json monitoring.json
    .venv/bin/python benchmarks/monitoring.py --loans 1000000 --json monitoring.json

Both databases are built by the service's own migrations (so they carry its indexes), then
loaded in bulk (SQLite ``executemany``, PostgreSQL ``COPY``) with a vectorised synthetic book:
N approved A-card decisions and their loans, 12 months of performance each (12 N outcome rows),
a tenth decided by a challenger, and each decision's reference bin of every CSI feature
(``decision_feature_bins``: 16 rows per decision, 16 N rows; about as many features and bins as
the demo A-card's release reference carries). The PostgreSQL server is a private one started here
(Debian's binaries, ``tests/support/postgres.py``) and stopped by PID at the end; ``VACUUM
ANALYZE`` runs after the load, as autovacuum would.

Each view runs ``--repeat`` times; the best time is reported with its ratio to a plain
``SELECT count(*) FROM outcomes`` timed in the same run on the same database, so the numbers
compare across machines and days. The target is each view <= 1 s at 1M loans on PostgreSQL.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
from sqlalchemy import Engine  # noqa: E402
from sqlalchemy.engine import Connection  # noqa: E402

from fedrisk.data.schema import FeatureKind, FeatureSpec  # noqa: E402
from fedrisk.ml.features import UNKNOWN_CATEGORY  # noqa: E402
from fedrisk.release.reference import MISSING_BIN, FeatureReference, ScoreReference  # noqa: E402
from server.scoring.db.engine import make_engine  # noqa: E402
from server.scoring.db.migrate import upgrade_database  # noqa: E402
from server.scoring.db.rollup import rebuild_counts  # noqa: E402
from server.scoring.monitoring import queries  # noqa: E402
from server.scoring.monitoring.report import build_summary, summary_json  # noqa: E402
from server.scoring.portfolio import CUSTOMER_TYPES, INDUSTRIES, PURPOSES, REGIONS  # noqa: E402
from tests.support.postgres import running_postgres  # noqa: E402

START_YEAR, START_MONTH0 = 2025, 0
MONTHS = 12
CHUNK = 50_000
FEATURES = 16  # the demo A-card's release reference carries 19, of 2-11 bins each
FEATURE_BINS = 11  # ten value bins (or nine categories and "unknown") and the missing bin


def feature_reference(index: int) -> FeatureReference:
    """Reference bins of synthetic feature ``index``: even ones numeric (ten equal-mass bins of
    0-100), odd ones categorical (nine categories); 2% missing."""
    shares = [0.098] * (FEATURE_BINS - 1) + [0.02]
    if index % 2 == 0:
        spec = FeatureSpec(name=f"x{index:02d}", kind=FeatureKind.NUMERIC, min=0, max=100)
        cuts = list(range(10, 100, 10))
        labels = [f"[{a}, {a + 10})" for a in range(0, 100, 10)] + [MISSING_BIN]
        return FeatureReference(
            spec=spec, fine_bins=100, cuts=cuts, labels=labels, shares=shares, count=100_000
        )
    categories = tuple(f"c{j}" for j in range(FEATURE_BINS - 2))
    spec = FeatureSpec(name=f"x{index:02d}", kind=FeatureKind.CATEGORICAL, categories=categories)
    labels = [*categories, UNKNOWN_CATEGORY, MISSING_BIN]
    return FeatureReference(spec=spec, labels=labels, shares=shares, count=100_000)


REFERENCE = ScoreReference(
    pd_edges=[0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.1, 0.12],
    shares=[0.1] * 10,
    bad_rates=[0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.09, 0.11, 0.15],
    auc=0.72,
    ks=0.33,
    count=100_000,
    features=[feature_reference(i) for i in range(FEATURES)],
)


def month_name(index: np.ndarray) -> np.ndarray:
    """``YYYY-MM`` of month indexes counted from January of START_YEAR."""
    years = START_YEAR + index // 12
    return np.char.add(
        np.char.add(years.astype(str), "-"), np.char.zfill((index % 12 + 1).astype(str), 2)
    )


def chunks(n: int, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
    """Columns of decisions, loans and outcomes, CHUNK loans at a time."""
    purposes = np.array(list(PURPOSES))
    for start in range(0, n, CHUNK):
        k = min(CHUNK, n - start)
        ids = np.char.add("d", np.char.zfill(np.arange(start, start + k).astype(str), 12))
        cohort = rng.integers(0, 12, size=k)
        pd = np.clip(rng.beta(2.0, 25.0, size=k), 0.001, 0.5)
        score = np.rint(600 - 28.85 * (np.log(pd) - np.log1p(-pd)))
        role = np.where(rng.random(k) < 0.1, "challenger", "champion")
        created = np.char.add(month_name(cohort), "-15T10:00:00.000000+00:00")
        principal = np.round(rng.uniform(1000, 20000, size=k), -1)
        hazard = 1 - (1 - np.clip(pd * rng.lognormal(0, 0.5, size=k), 0, 0.9)) ** (1 / 12)
        onset = rng.geometric(hazard)  # month on book the default starts (may be > 12)
        mob = np.arange(1, MONTHS + 1)[None, :]
        since = mob - onset[:, None]
        dpd = np.where(since >= 0, 30 * (since + 1), 0)
        blip = (rng.random((k, MONTHS)) < 0.03) & (dpd == 0)
        dpd = np.where(blip, rng.integers(1, 30, size=(k, MONTHS)), dpd)
        scheduled = principal[:, None] * (1 - mob / 24)
        charged_now = since == 3
        after = since > 3
        balance = np.where(after | charged_now, 0.0, np.round(scheduled, 2))
        charge_off = np.where(
            charged_now, np.round(principal[:, None] * (1 - (onset[:, None] + 2) / 24), 2), 0.0
        )
        interest = np.where(since >= 0, 0.0, np.round(scheduled * 0.12 / 12, 2))
        paid = np.where(since >= 0, 0.0, np.round(principal[:, None] / 24 + interest, 2))
        recoveries = np.where(after & (rng.random((k, MONTHS)) < 0.1), 50.0, 0.0)
        # each feature's bin drawn from its reference shares; the first feature drifts up one
        # bin for a growing share of the later cohorts, so CSI rises month by month
        cumulative = np.cumsum(REFERENCE.features[0].shares)[:-1]
        bins = np.searchsorted(cumulative, rng.random((k, FEATURES)), side="right")
        drift = rng.random(k) < cohort / 24
        bins[:, 0] = np.where(drift & (bins[:, 0] < FEATURE_BINS - 2), bins[:, 0] + 1, bins[:, 0])
        yield {
            "decisions": {
                "decision_id": ids,
                "created_at": created,
                "stage": np.full(k, "application"),
                "subject_hash": np.char.zfill(ids, 64),
                "fingerprint": np.char.zfill(ids, 64),
                "model_id": np.where(role == "champion", "bench-v1", "bench-v2"),
                "role": role,
                "score": score,
                "probability": pd,
                "outcome": np.full(k, "approve"),
                "reasons": np.full(k, "[]"),
                "rules_hit": np.full(k, "[]"),
                "details": np.full(k, '{"model_decision":"approve"}'),
                "audit_seq": np.zeros(k, dtype=np.int64),
            },
            "loans": {
                "decision_id": ids,
                "account_id": np.char.add("a", ids),
                "originated": month_name(cohort),
                "principal": principal,
                "industry": np.array(INDUSTRIES)[rng.integers(0, len(INDUSTRIES), size=k)],
                "purpose": purposes[rng.integers(0, len(purposes), size=k)],
                "purpose_text": np.full(k, "working capital"),
                "customer_type": np.array(CUSTOMER_TYPES)[
                    rng.integers(0, len(CUSTOMER_TYPES), size=k)
                ],
                "region": np.array(REGIONS)[rng.integers(0, len(REGIONS), size=k)],
                "created_at": created,
                "audit_seq": np.zeros(k, dtype=np.int64),
                # what the import keeps per loan: bad from 90 days past due, 2 months after onset
                "months_on_book": np.full(k, MONTHS),
                "first_bad_mob": np.array(
                    [int(v) if v <= MONTHS else None for v in onset + 2], dtype=object
                ),
                "income": interest.sum(axis=1),
                "charged_off": charge_off.sum(axis=1),
                "recovered": recoveries.sum(axis=1),
            },
            "decision_feature_bins": {
                "decision_id": np.repeat(ids, FEATURES),
                "feature": np.tile([f.name for f in REFERENCE.features], k),
                "bin": bins.ravel(),
            },
            "outcomes": {
                "decision_id": np.repeat(ids, MONTHS),
                "month_on_book": np.tile(mob[0], k),
                "month": month_name((cohort[:, None] + mob).ravel()),
                "dpd": dpd.ravel(),
                "balance": balance.ravel(),
                "paid": paid.ravel(),
                "interest_fees": interest.ravel(),
                "charge_off": charge_off.ravel(),
                "recoveries": recoveries.ravel(),
                "created_at": np.repeat(created, MONTHS),
                "audit_seq": np.zeros(k * MONTHS, dtype=np.int64),
            },
        }


def load(engine: Engine, n: int, seed: int) -> float:
    """Bulk-load the synthetic book; returns seconds taken."""
    started = time.perf_counter()
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("BEGIN")  # the driver autocommits: one transaction, not one per row
        for part in chunks(n, np.random.default_rng(seed)):
            for table, columns in part.items():
                names = list(columns)
                if engine.dialect.name == "sqlite":
                    values = [c.tolist() for c in columns.values()]
                    marks = ", ".join("?" * len(names))
                    cursor.executemany(
                        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})",
                        list(zip(*values, strict=True)),
                    )
                else:
                    buffer = io.BytesIO()
                    pacsv.write_csv(
                        pa.table({k: pa.array(v) for k, v in columns.items()}),
                        buffer,
                        write_options=pacsv.WriteOptions(include_header=False),
                    )
                    with cursor.copy(
                        f"COPY {table} ({', '.join(names)}) FROM STDIN WITH (FORMAT csv)"
                    ) as copy:
                        copy.write(buffer.getvalue())
        raw.commit()
    finally:
        raw.close()
    # the CSI rollup the writer keeps, counted once from the bulk-loaded bins
    with engine.begin() as connection:
        rebuild_counts(connection)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("ANALYZE")
            raw.commit()
        else:
            # VACUUM outside a transaction: it sets the visibility map (what autovacuum does
            # after bulk inserts) so the covering indexes give index-only scans
            driver = raw.driver_connection
            driver.autocommit = True
            try:
                driver.execute("VACUUM ANALYZE")
            finally:
                driver.autocommit = False
    finally:
        raw.close()
    return time.perf_counter() - started


def views(as_of: str) -> dict[str, Callable[[Connection], Any]]:
    """Every monitoring view the API serves, by name."""
    latest = as_of
    return {
        "decision_mix": queries.decision_mix,
        "psi": lambda c: queries.score_psi(
            c, REFERENCE, month=queries.latest_decision_month(c) or latest
        ),
        "psi_trend": lambda c: queries.psi_trend(c, REFERENCE),
        # as the dashboard's drift page calls them (server/scoring/dashboard/indicators.py)
        "feature_csi": lambda c: queries.feature_csi(
            c, REFERENCE, month=queries.latest_decision_month(c) or latest
        ),
        "csi_trend": lambda c: queries.csi_trend(c, REFERENCE),
        "performance": lambda c: queries.matured_discrimination(c),
        "bad_rate_by_band": lambda c: queries.bad_rate_by_band(c, REFERENCE),
        "champion_challenger": queries.champion_challenger,
        "vintages": lambda c: queries.vintages(c, as_of=as_of),
        "roll_rates": lambda c: queries.roll_rates(c, as_of=as_of),
        "direction_region_x_purpose": lambda c: queries.direction(
            c, ["region", "purpose"], as_of=as_of
        ),
        "drill_down_region": lambda c: queries.drill_down(
            c, as_of=as_of, filters={"region": "east"}
        ),
        "delinquency_trend_region": lambda c: queries.delinquency_trend(c, "region", as_of=as_of),
        "bcard_warning_rate": queries.bcard_warning_rate,
        "monitoring_json": lambda c: summary_json(build_summary(c, REFERENCE, as_of=as_of)),
    }


def best_of(connection: Connection, fn: Callable[[Connection], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(connection)
        times.append(time.perf_counter() - started)
        connection.rollback()
    return min(times)


def measure(engine: Engine, repeat: int) -> dict[str, Any]:
    with engine.connect() as connection:
        as_of = queries.latest_month(connection)
        assert as_of is not None
        count = best_of(connection, queries.count_outcomes, repeat)
        rows = {"count_outcomes": {"seconds": count, "ratio_to_count": 1.0}}
        for name, fn in views(as_of).items():
            seconds = best_of(connection, fn, repeat)
            rows[name] = {"seconds": seconds, "ratio_to_count": seconds / count}
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loans", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "loans": args.loans,
        "outcome_rows": args.loans * MONTHS,
        "feature_bin_rows": args.loans * FEATURES,
        "databases": {},
    }
    with (
        tempfile.TemporaryDirectory(prefix="fedrisk-monitoring-bench-") as tmp,
        running_postgres() as pg,
    ):
        targets = {"postgresql": pg.create_database("bench")}
        if not args.skip_sqlite:
            targets["sqlite"] = f"sqlite:///{Path(tmp) / 'scoring.db'}"
        for kind, url in targets.items():
            engine = make_engine(url)
            try:
                upgrade_database(engine)
                seconds = load(engine, args.loans, args.seed)
                print(
                    f"[{kind}] loaded {args.loans} loans x {MONTHS} months in {seconds:.1f} s",
                    flush=True,
                )
                rows = measure(engine, args.repeat)
            finally:
                engine.dispose()
            results["databases"][kind] = {"load_seconds": seconds, "views": rows}
            print(f"[{kind}] {'view':30s} {'seconds':>9s} {'x count(*)':>11s}")
            for name, row in rows.items():
                print(
                    f"[{kind}] {name:30s} {row['seconds']:9.3f} {row['ratio_to_count']:11.1f}",
                    flush=True,
                )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
