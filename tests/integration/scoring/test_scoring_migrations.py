"""Schema migrations on SQLite and PostgreSQL: new databases, pre-migration ones, refusals."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert, inspect, select, text

from server.scoring import store
from server.scoring.app import create_app
from server.scoring.audit import audited_transaction, verify_chain
from server.scoring.db.engine import make_engine, write_connection
from server.scoring.db.migrate import (
    BASELINE_REVISION,
    BASELINE_TABLES,
    VERSION_TABLE,
    alembic_config,
    current_revision,
    head_revision,
    upgrade_database,
)
from server.scoring.db.tables import decision_feature_bins, feature_bin_counts, metadata
from server.scoring.errors import SchemaVersionError
from server.scoring.portfolio import PortfolioConfig, generate_portfolio, load_portfolio
from tests.support.artifacts import TrainedModel, build_registry
from tests.support.legacy_scoring_schema import LEGACY_TABLES, create_legacy_schema
from tests.support.scoring import (
    application,
    decision_write,
    service_settings,
    write_decisions,
)

SHARES = {"application": 0.1, "behaviour": 0.1, "collection": 0.1}


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def snapshot(
    engine: Engine, tables: Iterable[str] = BASELINE_TABLES
) -> dict[str, list[dict[str, Any]]]:
    """Every row of every baseline table (or of ``tables``), in primary-key order."""
    rows: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as connection:
        for name in sorted(tables):
            table = metadata.tables[name]
            order = list(table.primary_key.columns)
            result = connection.execute(table.select().order_by(*order))
            rows[name] = [dict(r._mapping) for r in result]
    return rows


def fill_legacy_database(engine: Engine) -> list[str]:
    """Rows in every table, written by the service's own write paths; returns decision ids."""
    decisions = [decision_write(i) for i in range(9)]
    decisions.append(decision_write(9, outcome="decline"))
    decisions.append(
        decision_write(
            10,
            outcome="manual_review",
            review={"kind": "manual_review", "status": "open", "reason": "score in review band"},
        )
    )
    assert write_decisions(engine, decisions) == [None] * len(decisions)
    declined = decisions[9].row["decision_id"]
    item = audited_transaction(
        engine, lambda c, ch: store.request_human_review(c, ch, decision_id=declined, reason="why")
    )
    audited_transaction(
        engine, lambda c, ch: store.claim_review(c, ch, item_id=item.item_id, reviewer="ann")
    )
    audited_transaction(
        engine,
        lambda c, ch: store.resolve_review(
            c, ch, item_id=item.item_id, reviewer="ann", resolution="approve", note="checked"
        ),
    )
    for model_id in ("m1", "m2"):
        audited_transaction(
            engine,
            lambda c, ch, m=model_id: store.register_model(
                c, ch, model_id=m, stage="application", artifact_sha256=m * 32, actor="cli"
            ),
        )
    audited_transaction(
        engine,
        lambda c, ch: store.promote_model(
            c, ch, model_id="m2", role="champion", share=None, default_shares=SHARES, actor="cli"
        ),
    )
    audited_transaction(
        engine, lambda c, ch: store.rollback_stage(c, ch, stage="application", actor="cli")
    )
    audited_transaction(
        engine,
        lambda c, ch: store.update_list(
            c, ch, name="device_blacklist", add=["dev-1", "dev-2"], remove=[], key_hash=str.upper
        ),
    )
    audited_transaction(
        engine,
        lambda c, ch: store.record_batch_job(
            c, ch, job_id="job-1", stage="application", model_id="m1", input_sha256="f" * 64,
            rows=100, errors=2, status="complete",
        ),
    )  # fmt: skip
    return [d.row["decision_id"] for d in decisions]


def test_v0007_upgrades_a_0006_database_without_losing_a_row(engine: Engine) -> None:
    # arrange: a database at revision 0006 with decisions, reviews, loans and outcomes
    with write_connection(engine) as connection, connection.begin():
        command.upgrade(alembic_config(connection), "0006")
    fill_legacy_database(engine)
    book = generate_portfolio(PortfolioConfig(applicants=60), np.random.default_rng(7))
    load_portfolio(engine, dataclasses.replace(book, features={}))  # 0006 keeps no bins
    tables = sorted(set(inspect(engine).get_table_names()) - {VERSION_TABLE})
    before = snapshot(engine, tables)

    # act
    revision = upgrade_database(engine)

    # assert: every row kept, the new table empty, and new decisions store their bins
    assert "decision_feature_bins" not in tables and all(before[t] for t in ("loans", "outcomes"))
    assert snapshot(engine, tables) == before and revision == head_revision()
    binned = dataclasses.replace(decision_write(200), feature_bins={"income": 3, "region": 0})
    assert write_decisions(engine, [binned]) == [None]
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT feature, bin FROM decision_feature_bins")).all()
        assert verify_chain(connection).ok
    assert sorted(stored) == [("income", 3), ("region", 0)]


def test_v0009_counts_the_bins_a_0008_database_already_holds(engine: Engine) -> None:
    # arrange: a database at revision 0008 whose decisions have their bins (written as 0008's
    # writer did: bins only, no rollup)
    with write_connection(engine) as connection, connection.begin():
        command.upgrade(alembic_config(connection), "0008")
    book = generate_portfolio(PortfolioConfig(applicants=80), np.random.default_rng(11))
    load_portfolio(engine, dataclasses.replace(book, features={}))
    with engine.begin() as connection:
        connection.execute(
            insert(decision_feature_bins),
            [
                {"decision_id": d["decision_id"], "feature": f, "bin": b}
                for d in book.decisions
                for f, b in book.feature_bins(d["decision_id"]).items()
            ],
        )
        raw = connection.execute(
            text(
                "SELECT substr(d.created_at, 1, 7), d.stage, d.role, b.feature, b.bin "
                "FROM decision_feature_bins b JOIN decisions d USING (decision_id)"
            )
        ).all()

    # act
    revision = upgrade_database(engine)

    # assert: the rollup holds exactly the stored bins' counts
    with engine.connect() as connection:
        rollup = {
            (r.month, r.stage, r.role, r.feature, r.bin): r.n
            for r in connection.execute(select(feature_bin_counts))
        }
    assert revision == head_revision() and len(raw) > 80
    assert rollup == Counter(tuple(r) for r in raw)


def test_migrations_build_exactly_the_tables_the_code_uses(engine: Engine) -> None:
    # act
    first = upgrade_database(engine)
    again = upgrade_database(engine)

    # assert
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
        assert current_revision(connection) == head_revision()
    assert first == again == head_revision()
    assert differences == []


def test_a_pre_migration_database_is_stamped_and_upgraded_without_losing_a_row(
    engine: Engine,
) -> None:
    # arrange: the schema as the service created it before migrations, with real rows
    create_legacy_schema(engine)
    fill_legacy_database(engine)
    before = snapshot(engine)
    with engine.connect() as connection:
        chain_before = verify_chain(connection)

    # act
    revision = upgrade_database(engine)

    # assert
    after = snapshot(engine)
    with engine.connect() as connection:
        chain_after = verify_chain(connection)
        versions = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
    assert all(before[name] for name in LEGACY_TABLES), [n for n in LEGACY_TABLES if not before[n]]
    assert after == before
    assert revision == head_revision() and versions == [(head_revision(),)]
    assert chain_before.ok and chain_after.ok, chain_after.problem
    assert chain_after.records == chain_before.records and chain_after.decisions == 11


def test_the_chain_goes_on_after_the_upgrade(engine: Engine) -> None:
    # arrange
    create_legacy_schema(engine)
    fill_legacy_database(engine)
    upgrade_database(engine)
    with engine.connect() as connection:
        records = verify_chain(connection).records

    # act
    errors = write_decisions(engine, [decision_write(100 + i) for i in range(3)])

    # assert
    with engine.connect() as connection:
        report = verify_chain(connection)
    assert errors == [None] * 3
    assert report.ok, report.problem
    assert report.records == records + 3 and report.decisions == 14


def test_the_service_upgrades_a_pre_migration_database_on_start(
    db_url: str, engine: Engine, tmp_path: Path, trained: TrainedModel
) -> None:
    # arrange
    registry = tmp_path / "registry"
    build_registry(registry, {"acard-v1": "application"})
    create_legacy_schema(engine)
    old_ids = fill_legacy_database(engine)
    before = snapshot(engine)

    # act: a database from before API keys holds none, and creating one would migrate it first,
    # so the service that must do the upgrade runs in insecure development mode
    settings = service_settings(registry, db_url=db_url, insecure_dev=True)
    with TestClient(create_app(settings)) as client:
        old = client.get(f"/v1/decisions/{old_ids[0]}")
        checked = client.get("/v1/audit/verify").json()
        promoted = client.post("/v1/models/acard-v1/promote", json={"role": "champion"})
        new = client.post("/v1/applications/decision", json=application(trained, 1, age=30))
        after_new = client.get("/v1/audit/verify").json()

    # assert
    with engine.connect() as connection:
        revision = current_revision(connection)
    assert revision == head_revision()
    assert old.status_code == 200 and old.json()["outcome"] == "approve"
    assert checked["ok"] and checked["decisions"] == 11
    assert promoted.status_code == 200 and promoted.json()["history"] == ["m1"]
    assert new.status_code == 200, new.text
    assert after_new["ok"] and after_new["decisions"] == 12
    kept = snapshot(engine)
    appended_to = set(LEGACY_TABLES) - {"audit_head", "model_assignments"}  # these two are updated
    assert all(row in kept[name] for name in appended_to for row in before[name])


def test_an_incomplete_pre_migration_schema_is_refused_untouched(engine: Engine) -> None:
    # arrange: two of the ten tables, no version table
    create_legacy_schema(engine, tables=("decisions", "audit_log"))

    # act
    with pytest.raises(SchemaVersionError, match="missing") as refused:
        upgrade_database(engine)

    # assert
    tables = set(inspect(engine).get_table_names())
    assert "audit_head" in str(refused.value) and "batch_jobs" in str(refused.value)
    assert tables == {"decisions", "audit_log"}


def test_a_database_from_a_newer_release_is_refused(engine: Engine) -> None:
    # arrange: migrated, then stamped by a release with a later revision
    upgrade_database(engine)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'from-the-future'"))

    # act / assert
    with pytest.raises(SchemaVersionError, match="from-the-future"):
        upgrade_database(engine)


def test_the_baseline_revision_is_the_pre_migration_schema(engine: Engine) -> None:
    # arrange: the frozen pre-migration DDL, reflected, then dropped
    create_legacy_schema(engine)
    legacy = reflect(engine)
    with engine.begin() as connection:
        for table in LEGACY_TABLES:
            connection.execute(text(f"DROP TABLE {table}"))

    # act: build the same database with the baseline revision alone
    with write_connection(engine) as connection, connection.begin():
        command.upgrade(alembic_config(connection), BASELINE_REVISION)

    # assert
    assert set(LEGACY_TABLES) == BASELINE_TABLES
    assert reflect(engine) == legacy


def reflect(engine: Engine) -> dict[str, Any]:
    """Columns (name, type, nullable, default), primary key, unique constraints and indexes."""
    inspector = inspect(engine)
    return {
        table: (
            [
                (c["name"], str(c["type"]), c["nullable"], c.get("default"))
                for c in inspector.get_columns(table)
            ],
            inspector.get_pk_constraint(table)["constrained_columns"],
            sorted(u["column_names"] for u in inspector.get_unique_constraints(table)),
            sorted((i["name"], i["column_names"]) for i in inspector.get_indexes(table)),
        )
        for table in sorted(LEGACY_TABLES)
    }
