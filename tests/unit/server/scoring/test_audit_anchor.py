"""Signed checkpoints of the audit chain on a real SQLite database: key files, the checkpoint
file's own checks, and the rewrites and truncations only the checkpoints can reveal."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from server.scoring.anchor import (
    AuditAnchor,
    AuditAnchorError,
    CheckpointFileError,
    WebhookSender,
    create_audit_key,
    load_audit_key,
    load_public_key,
    read_checkpoints,
)
from server.scoring.audit import VerifyReport, audited_transaction, verify_chain
from server.scoring.cli import audit_app
from server.scoring.db.engine import make_engine
from server.scoring.db.migrate import upgrade_database
from server.scoring.settings import Settings
from tests.support.audit import WebhookReceiver, checkpoint_lines, rehash_from, truncate_after


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    made = make_engine(f"sqlite:///{tmp_path / 'scoring.db'}")
    upgrade_database(made)
    yield made
    made.dispose()


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "audit" / "signing.key", tmp_path / "audit" / "checkpoints.jsonl"


def open_anchor(
    engine: Engine,
    files: tuple[Path, Path],
    *,
    every_records: int = 10_000,
    every_seconds: float = 3600.0,
) -> AuditAnchor:
    """The anchor as the service opens it; by default only start-up and shutdown checkpoints."""
    return AuditAnchor.open(
        key_path=files[0],
        checkpoint_path=files[1],
        engine=engine,
        every_records=every_records,
        every_seconds=every_seconds,
    )


def append_records(engine: Engine, anchor: AuditAnchor | None, n: int, *, tag: str = "x") -> None:
    """``n`` commits of one record each, through the service's audited transaction."""
    for i in range(n):
        audited_transaction(
            engine,
            lambda _c, chain, i=i: chain.append("note", {"i": i, "tag": tag}),
            on_commit=None if anchor is None else anchor.observe,
        )


def verify(engine: Engine, files: tuple[Path, Path], *, anchored: bool = True) -> VerifyReport:
    signed = read_checkpoints(files[1], load_public_key(files[0])) if anchored else []
    with engine.connect() as connection:
        return verify_chain(connection, checkpoints=signed)


def trail(engine: Engine, files: tuple[Path, Path], sessions: int, per_session: int) -> None:
    """A checkpoint file written by ``sessions`` service runs of ``per_session`` records each."""
    for _ in range(sessions):
        anchor = open_anchor(engine, files)
        append_records(engine, anchor, per_session)
        anchor.close()


def test_first_start_creates_a_private_key_and_signs_every_head(
    engine: Engine, files: tuple[Path, Path]
) -> None:
    # arrange / act
    trail(engine, files, sessions=2, per_session=3)

    # assert
    key_path, checkpoint_path = files
    assert oct(key_path.stat().st_mode & 0o777) == oct(0o600)
    assert key_path.with_name("signing.pub").read_text().startswith("-----BEGIN PUBLIC KEY")
    signed = read_checkpoints(checkpoint_path, load_public_key(key_path.with_name("signing.pub")))
    assert [(c.n, c.seq) for c in signed] == [(1, 3), (2, 6)]
    assert [c["reason"] for c in checkpoint_lines(checkpoint_path)] == ["shutdown", "shutdown"]
    report = verify(engine, files)
    assert (report.ok, report.records) == (True, 6)


def test_interval_checkpoints_follow_the_writers_head(
    engine: Engine, files: tuple[Path, Path]
) -> None:
    # arrange: a checkpoint every 2 records
    anchor = open_anchor(engine, files, every_records=2, every_seconds=0.05)

    # act: the signer thread checkpoints on its own; wait (bounded) until it has, since on a
    # busy machine close() could otherwise sign everything first
    append_records(engine, anchor, 7)
    deadline = time.monotonic() + 30
    # (the signer thread creates the checkpoint file with its first line)
    while not files[1].exists() or not any(
        line["reason"] == "interval" for line in checkpoint_lines(files[1])
    ):
        assert time.monotonic() < deadline, "no interval checkpoint within 30 s"
        time.sleep(0.05)
    anchor.close()

    # assert: interval checkpoints on the way, the shutdown one at the head
    lines = checkpoint_lines(files[1])
    assert lines[-1]["seq"] == 7
    assert any(line["reason"] == "interval" for line in lines)
    assert verify(engine, files).ok


def test_rewrite_inside_a_checkpoint_interval_is_caught(
    engine: Engine, files: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    # arrange: records committed, no checkpoint of them yet (the window an attacker aims at)
    append_records(engine, None, 2)
    anchor = open_anchor(engine, files)
    append_records(engine, anchor, 6)

    # act: edit record 5 and rehash the chain, then the service stops
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE audit_log SET payload = :p WHERE seq = 5"), {"p": '{"i":99,"tag":"x"}'}
        )
        rehash_from(connection, 5)
    with caplog.at_level(logging.ERROR, logger="server.scoring.anchor"):
        anchor.close()

    # assert: the chain alone looks fine; the head the writer computed does not match
    assert verify(engine, files, anchored=False).ok
    report = verify(engine, files)
    assert (report.ok, report.first_broken) == (False, 8)
    assert "rewritten and rehashed" in report.problem
    assert "records 3..8" in report.problem
    assert "does not continue the last signed head" in caplog.text


def test_truncated_tail_is_caught(engine: Engine, files: tuple[Path, Path]) -> None:
    # arrange
    trail(engine, files, sessions=1, per_session=6)

    # act: delete records 5 and 6 and move the head back, so the chain alone is complete
    with engine.begin() as connection:
        truncate_after(connection, 4)

    # assert
    assert verify(engine, files, anchored=False).ok
    report = verify(engine, files)
    assert (report.ok, report.first_broken) == (False, 5)
    assert "records 5..6 are missing" in report.problem


def test_edited_deleted_or_foreign_checkpoint_lines_are_named(
    engine: Engine, files: tuple[Path, Path], tmp_path: Path
) -> None:
    # arrange
    trail(engine, files, sessions=3, per_session=2)
    key_path, checkpoint_path = files
    public = load_public_key(key_path)
    original = checkpoint_path.read_text().splitlines()
    assert len(original) == 3

    def rewritten(lines: list[str]) -> Path:
        path = tmp_path / f"edited-{len(lines)}-{abs(hash(tuple(lines)))}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        return path

    edited_hash = original[1].replace('"seq":4', '"seq":3')
    other_key = create_audit_key(tmp_path / "other" / "signing.key")

    # act / assert
    with pytest.raises(CheckpointFileError, match="bad signature") as bad:
        read_checkpoints(rewritten([original[0], edited_hash, original[2]]), public)
    assert bad.value.line == 2
    with pytest.raises(CheckpointFileError, match="does not follow") as gap:
        read_checkpoints(rewritten([original[0], original[2]]), public)
    assert gap.value.line == 2
    with pytest.raises(CheckpointFileError, match="wrong key") as foreign:
        read_checkpoints(checkpoint_path, other_key.public_key())
    assert foreign.value.line == 1
    with pytest.raises(CheckpointFileError, match="not a checkpoint"):
        read_checkpoints(rewritten([original[0], "{not json"]), public)


def test_key_file_problems_are_refused_with_the_path(
    engine: Engine, files: tuple[Path, Path], tmp_path: Path
) -> None:
    # arrange: a trail signed by the first key
    trail(engine, files, sessions=1, per_session=2)
    key_path, checkpoint_path = files
    good = key_path.read_bytes()

    # act / assert: readable by others
    key_path.chmod(0o644)
    with pytest.raises(AuditAnchorError, match="must be mode 0600"):
        load_audit_key(key_path)
    # not a key
    key_path.write_bytes(b"garbage")
    key_path.chmod(0o600)
    with pytest.raises(AuditAnchorError, match=f"{key_path}.*PEM private key"):
        open_anchor(engine, files)
    # missing while checkpoints exist
    key_path.unlink()
    with pytest.raises(AuditAnchorError, match="is missing, but checkpoint file"):
        open_anchor(engine, files)
    assert not key_path.exists()
    # another valid key
    create_audit_key(key_path)
    with pytest.raises(AuditAnchorError, match="wrong key"):
        open_anchor(engine, files)
    # the right key again: the trail continues
    key_path.unlink()
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, good)
    os.close(fd)
    anchor = open_anchor(engine, files)
    append_records(engine, anchor, 1)
    anchor.close()
    assert [c.seq for c in read_checkpoints(checkpoint_path, load_public_key(key_path))] == [2, 3]


def test_records_appended_by_another_process_are_linked_not_trusted(
    engine: Engine, files: tuple[Path, Path]
) -> None:
    # arrange: the service runs; the CLI appends 2 records on its own connection
    anchor = open_anchor(engine, files, every_records=1, every_seconds=0.05)
    append_records(engine, anchor, 2)
    append_records(engine, None, 2, tag="cli")

    # act
    append_records(engine, anchor, 1)
    anchor.close()

    # assert: no divergence, and the checkpoints cover the CLI's records
    assert anchor.divergences == 0
    assert checkpoint_lines(files[1])[-1]["seq"] == 5
    assert verify(engine, files).ok


def test_webhook_retries_then_gives_up_without_raising(caplog: pytest.LogCaptureFixture) -> None:
    # arrange: a real HTTP server that fails the first 2 requests
    # act: one checkpoint gets through on its 3rd try; the next fails every try
    with (
        WebhookReceiver(fail_first=2) as receiver,
        caplog.at_level(logging.WARNING, logger="server.scoring.anchor"),
    ):
        sender = WebhookSender(receiver.url, attempts=3, backoff=0.01)
        sender.send('{"n":1}')
        sender.close()
        failing = WebhookSender("http://127.0.0.1:9/nothing", attempts=2, backoff=0.01)
        failing.send('{"n":2}')
        failing.close()

    # assert
    assert receiver.bodies == [b'{"n":1}']
    assert (sender.delivered, sender.failed) == (1, 0)
    assert (failing.delivered, failing.failed) == (0, 1)
    assert "attempt 2/3 failed: HTTP 500" in caplog.text
    assert "not delivered after 2 attempts" in caplog.text
    assert "secret" not in caplog.text


def test_cli_creates_the_key_once_and_verify_needs_the_checkpoints(
    engine: Engine, tmp_path: Path
) -> None:
    # arrange
    runner = CliRunner()
    db_url = f"sqlite:///{tmp_path / 'scoring.db'}"
    append_records(engine, None, 2)

    # act
    created = runner.invoke(audit_app, ["init-key", "--db", db_url])
    again = runner.invoke(audit_app, ["init-key", "--db", db_url])
    unanchored = runner.invoke(audit_app, ["verify", "--db", db_url])
    with engine.begin() as connection:
        connection.execute(text("UPDATE audit_log SET payload = '{}' WHERE seq = 2"))
    broken = runner.invoke(audit_app, ["verify", "--db", db_url])
    with engine.begin() as connection:
        rehash_from(connection, 2)
    chain_only = runner.invoke(audit_app, ["verify", "--db", db_url, "--chain-only"])

    # assert
    key_path = tmp_path / "audit" / "signing.key"
    assert created.exit_code == 0, created.output
    assert oct(key_path.stat().st_mode & 0o777) == oct(0o600)
    assert again.exit_code == 2 and "refusing to overwrite" in again.output
    assert unanchored.exit_code == 2 and "no checkpoint file found" in unanchored.output
    assert broken.exit_code == 1 and "BROKEN at record 2: record 2 was edited" in broken.output
    assert chain_only.exit_code == 0 and "NOT checked against signed checkpoints" in (
        chain_only.output
    )


def test_settings_refuse_a_webhook_that_is_not_http() -> None:
    with pytest.raises(ValidationError, match="audit_webhook_url"):
        Settings(registry_dir=Path("r"), development=True, audit_webhook_url="file:///etc/passwd")
