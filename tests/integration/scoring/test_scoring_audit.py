"""Audit trail end to end: a real server writes decisions to SQLite or PostgreSQL, then rows are
edited, deleted or reordered directly in the database and ``audit verify`` must name the record."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.support.artifacts import TrainedModel, build_registry
from tests.support.scoring import REPO, application, server_at

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def verify(db_url: str) -> subprocess.CompletedProcess[str]:
    """``python -m server.scoring audit verify --db URL`` in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "server.scoring", "audit", "verify", "--db", db_url],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
        check=False,
    )


def test_tampering_with_any_record_is_detected(
    db_url: str, tmp_path: Path, trained: TrainedModel
) -> None:
    # arrange: a server writes decisions, a review item and a human-review request
    registry = tmp_path / "registry"
    build_registry(registry, {"acard-v1": "application"})
    with server_at(tmp_path, registry, db_url=db_url) as server, server.client() as client:
        answers = [
            client.post(
                "/v1/applications/decision",
                json=application(trained, i, age=15 if i % 4 == 0 else 30),
            )
            for i in range(12)
        ]
        assert all(a.status_code == 200 for a in answers), answers[0].text
        declined = next(a.json() for a in answers if a.json()["decision"] == "decline")
        requested = client.post(
            f"/v1/decisions/{declined['decision_id']}/human-review", json={"reason": "please"}
        )
        assert requested.status_code == 201
        assert client.get("/v1/audit/verify").json()["ok"] is True
    clean = verify(db_url)
    engine = create_engine(db_url)
    with engine.connect() as connection:
        total = connection.execute(text("SELECT max(seq) FROM audit_log")).scalar_one()
        decision_seq = connection.execute(text("SELECT min(audit_seq) FROM decisions")).scalar_one()
    assert total >= 12

    def row(connection: Any, seq: int) -> dict[str, Any]:
        return dict(
            connection.execute(text("SELECT * FROM audit_log WHERE seq = :s"), {"s": seq})
            .mappings()
            .one()
        )

    def insert(connection: Any, values: dict[str, Any]) -> None:
        connection.execute(
            text(
                "INSERT INTO audit_log (seq, created_at, kind, payload, prev_hash, hash) "
                "VALUES (:seq, :created_at, :kind, :payload, :prev_hash, :hash)"
            ),
            values,
        )

    def edit(connection: Any) -> Any:
        original = row(connection, 5)
        connection.execute(
            text("UPDATE audit_log SET payload = :p WHERE seq = 5"),
            {"p": original["payload"].replace("acard-v1", "acard-v9")},
        )
        return lambda c: c.execute(
            text("UPDATE audit_log SET payload = :p WHERE seq = 5"), {"p": original["payload"]}
        )

    def delete(connection: Any) -> Any:
        original = row(connection, 7)
        connection.execute(text("DELETE FROM audit_log WHERE seq = 7"))
        return lambda c: insert(c, original)

    def reorder(connection: Any) -> Any:
        a, b = row(connection, 3), row(connection, 4)
        connection.execute(text("DELETE FROM audit_log WHERE seq IN (3, 4)"))
        insert(connection, {**b, "seq": 3})
        insert(connection, {**a, "seq": 4})

        def undo(c: Any) -> None:
            c.execute(text("DELETE FROM audit_log WHERE seq IN (3, 4)"))
            insert(c, a)
            insert(c, b)

        return undo

    def delete_last(connection: Any) -> Any:
        original = row(connection, total)
        connection.execute(text("DELETE FROM audit_log WHERE seq = :s"), {"s": total})
        return lambda c: insert(c, original)

    def edit_decision(connection: Any) -> Any:
        connection.execute(
            text("UPDATE decisions SET score = score + 50 WHERE audit_seq = :s"),
            {"s": decision_seq},
        )
        return lambda c: c.execute(
            text("UPDATE decisions SET score = score - 50 WHERE audit_seq = :s"),
            {"s": decision_seq},
        )

    cases = [
        (edit, 5, "edited"),
        (delete, 7, "missing"),
        (reorder, 3, "does not follow"),
        (delete_last, total, "missing"),
        (edit_decision, decision_seq, "differs"),
    ]

    # act / assert, one tampering at a time, each undone before the next
    assert clean.returncode == 0, clean.stdout + clean.stderr
    for tamper, first_broken, words in cases:
        with engine.begin() as connection:
            undo = tamper(connection)
        broken = verify(db_url)
        with engine.begin() as connection:
            undo(connection)
        assert broken.returncode == 1, (tamper.__name__, broken.stdout, broken.stderr)
        assert f"BROKEN at record {first_broken}:" in broken.stdout, (
            tamper.__name__,
            broken.stdout,
        )
        assert words in broken.stdout, (tamper.__name__, broken.stdout)
    assert verify(db_url).returncode == 0
    engine.dispose()
