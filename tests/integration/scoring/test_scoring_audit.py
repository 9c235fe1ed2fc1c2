"""Audit trail end to end: a real server writes decisions to SQLite or PostgreSQL, then rows are
edited, deleted, reordered, or rewritten and rehashed directly in the database, and ``audit
verify`` must name the record (against the service's signed checkpoints)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from server.scoring.anchor import create_audit_key
from server.scoring.cli import audit_app
from tests.support.artifacts import TrainedModel, build_registry
from tests.support.audit import (
    WebhookReceiver,
    first_checkpoint_at_or_after,
    flip_decision,
    truncate_after,
)
from tests.support.scoring import REPO, application, server_at

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def verify(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m server.scoring audit verify --db URL ARGS`` in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "server.scoring", "audit", "verify", "--db", db_url, *args],
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
    clean = verify(db_url, "--registry", str(registry))
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
        broken = verify(db_url, "--registry", str(registry))
        with engine.begin() as connection:
            undo(connection)
        assert broken.returncode == 1, (tamper.__name__, broken.stdout, broken.stderr)
        assert f"BROKEN at record {first_broken}:" in broken.stdout, (
            tamper.__name__,
            broken.stdout,
        )
        assert words in broken.stdout, (tamper.__name__, broken.stdout)
    assert verify(db_url, "--registry", str(registry)).returncode == 0
    engine.dispose()


def test_rewrite_and_rehash_attack_is_named_by_the_signed_checkpoints(
    db_url: str, tmp_path: Path, trained: TrainedModel
) -> None:
    # arrange: a service that checkpoints every 4 records and posts each checkpoint to a webhook
    registry = tmp_path / "registry"
    build_registry(registry, {"acard-v1": "application"})
    checkpoints = tmp_path / "audit" / "checkpoints.jsonl"
    engine = create_engine(db_url)
    with WebhookReceiver(fail_first=1) as webhook:
        env = {
            "FEDRISK_AUDIT_CHECKPOINT_RECORDS": "4",
            "FEDRISK_AUDIT_WEBHOOK_URL": webhook.url,
        }
        with server_at(tmp_path, registry, db_url=db_url, env=env) as server:
            with server.client() as client:
                for i in range(12):
                    body = application(trained, i, age=15 if i % 4 == 1 else 30)
                    assert client.post("/v1/applications/decision", json=body).status_code == 200
                with engine.begin() as connection:
                    flipped = connection.execute(
                        text(
                            "SELECT min(audit_seq) FROM decisions WHERE outcome = 'decline' "
                            "AND audit_seq > 2"
                        )
                    ).scalar_one()

                    # act: with write access to the database, approve a declined applicant in
                    # `decisions` and in the audit payload, rehash every later record and the
                    # head, while the service keeps deciding
                    flip_decision(connection, audit_seq=flipped, outcome="approve")
                for i in range(12, 16):
                    body = application(trained, i)
                    assert client.post("/v1/applications/decision", json=body).status_code == 200
                # the service's own check reads its signed checkpoints too; one that covers the
                # flipped record is signed within a second (bounded wait)
                deadline = time.monotonic() + 30
                while (report := client.get("/v1/audit/verify").json())["ok"]:
                    assert time.monotonic() < deadline, report
                    time.sleep(0.2)
            server.stop()
            log = server.log()

    # assert: the chain alone is consistent again ...
    runner = CliRunner()
    chain_only = runner.invoke(audit_app, ["verify", "--db", db_url, "--chain-only"])
    assert chain_only.exit_code == 0, chain_only.output
    assert "(hash chain only, NOT checked against signed checkpoints)" in chain_only.output
    # ... but not the signed checkpoints: verify names the first record whose hash differs
    named = first_checkpoint_at_or_after(checkpoints, flipped)
    anchored = verify(db_url, "--registry", str(registry))
    assert anchored.returncode == 1, anchored.stdout + anchored.stderr
    assert f"BROKEN at record {named}: record {named} differs from signed checkpoint" in (
        anchored.stdout
    )
    start = int(anchored.stdout.split("rewrite starts in records ")[1].split("..")[0])
    assert start <= flipped <= named
    assert f"record {report['first_broken']} differs from signed checkpoint" in report["problem"]
    assert flipped <= report["first_broken"] <= named
    # the running service noticed the database no longer continued its head
    assert "does not continue the last signed head" in log
    # every checkpoint reached the webhook (one retry), and that copy reveals the attack too
    assert webhook.failures == 1
    lines = checkpoints.read_text().splitlines()
    assert [b.decode() for b in webhook.bodies] == lines
    copy = tmp_path / "webhook-copy.jsonl"
    copy.write_text("".join(b.decode() + "\n" for b in webhook.bodies))
    key = tmp_path / "audit" / "signing.pub"
    remote = runner.invoke(
        audit_app, ["verify", "--db", db_url, "--checkpoints", str(copy), "--key", str(key)]
    )
    assert f"BROKEN at record {named}:" in remote.output
    engine.dispose()


def test_truncation_edited_checkpoints_and_a_wrong_key_are_refused(
    tmp_path: Path, trained: TrainedModel
) -> None:
    # arrange: a service wrote decisions, then stopped (its last checkpoint covers the head)
    registry = tmp_path / "registry"
    build_registry(registry, {"acard-v1": "application"})
    db_url = f"sqlite:///{tmp_path / 'scoring.db'}"
    with server_at(tmp_path, registry, db_url=db_url) as server, server.client() as client:
        for i in range(8):
            assert (
                client.post("/v1/applications/decision", json=application(trained, i)).status_code
                == 200
            )
    checkpoints = tmp_path / "audit" / "checkpoints.jsonl"
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(audit_app, ["verify", "--db", db_url, *args])

    assert run().exit_code == 0, run().output
    engine = create_engine(db_url)
    with engine.connect() as connection:
        total = connection.execute(text("SELECT max(seq) FROM audit_log")).scalar_one()

    # act / assert: a checkpoint line edited (the head moved back one record)
    original = checkpoints.read_text()
    last = original.splitlines()[-1]
    checkpoints.write_text(original.replace(last, last.replace(f'"seq":{total}', '"seq":1')))
    edited = run()
    checkpoints.write_text(original)
    assert edited.exit_code == 1
    assert "audit checkpoints BROKEN" in edited.output and "bad signature" in edited.output

    # another key
    other = create_audit_key(tmp_path / "other" / "signing.key")
    assert other is not None
    foreign = run("--key", str(tmp_path / "other" / "signing.pub"))
    assert foreign.exit_code == 1 and "wrong key" in foreign.output

    # records deleted after the checkpoint, the head moved back so the chain looks complete
    with engine.begin() as connection:
        truncate_after(connection, total - 3)
    assert run("--chain-only").exit_code == 0
    truncated = run()
    assert truncated.exit_code == 1
    assert f"BROKEN at record {total - 2}: records {total - 2}..{total} are missing" in (
        truncated.output
    )
    engine.dispose()
