"""Attacks on the audit trail as someone with write access to the database would make them."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from server.scoring.audit import canonical_json, record_hash
from server.scoring.db.rollup import rebuild_counts


def rehash_from(connection: Connection, seq: int) -> int:
    """Recompute ``hash`` and ``prev_hash`` of every record from ``seq`` on, and the head row,
    with the project's own :func:`record_hash`: the chain links again. Returns the records
    rewritten."""
    rows = (
        connection.execute(
            text("SELECT * FROM audit_log WHERE seq >= :s ORDER BY seq"), {"s": seq - 1}
        )
        .mappings()
        .all()
    )
    prev = rows[0]["hash"] if rows and rows[0]["seq"] == seq - 1 else "0" * 64
    rewritten = 0
    for row in rows:
        if row["seq"] < seq:
            continue
        digest = record_hash(
            seq=row["seq"], created_at=row["created_at"], kind=row["kind"],
            payload=row["payload"], prev_hash=prev,
        )  # fmt: skip
        connection.execute(
            text("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE seq = :s"),
            {"p": prev, "h": digest, "s": row["seq"]},
        )
        prev, rewritten = digest, rewritten + 1
    last = connection.execute(text("SELECT max(seq) FROM audit_log")).scalar_one()
    connection.execute(
        text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1"), {"s": last, "h": prev}
    )
    return rewritten


def flip_decision(connection: Connection, *, audit_seq: int, outcome: str) -> None:
    """Change a decision's outcome in ``decisions`` and in its audit payload, then rehash the
    chain from that record on (the attack the signed checkpoints exist for)."""
    connection.execute(
        text("UPDATE decisions SET outcome = :o WHERE audit_seq = :s"),
        {"o": outcome, "s": audit_seq},
    )
    payload = connection.execute(
        text("SELECT payload FROM audit_log WHERE seq = :s"), {"s": audit_seq}
    ).scalar_one()
    changed = canonical_json({**json.loads(payload), "outcome": outcome})
    connection.execute(
        text("UPDATE audit_log SET payload = :p WHERE seq = :s"), {"p": changed, "s": audit_seq}
    )
    rehash_from(connection, audit_seq)


def truncate_after(connection: Connection, seq: int) -> None:
    """Delete every record after ``seq`` and the decisions they recorded; the head points at
    ``seq`` again, so the chain alone looks complete."""
    connection.execute(text("DELETE FROM review_items WHERE decision_id IN (SELECT decision_id "
                            "FROM decisions WHERE audit_seq > :s)"), {"s": seq})  # fmt: skip
    connection.execute(text("DELETE FROM fraud_links WHERE decision_id IN (SELECT decision_id "
                            "FROM decisions WHERE audit_seq > :s)"), {"s": seq})  # fmt: skip
    connection.execute(text("DELETE FROM decision_feature_bins WHERE decision_id IN (SELECT "
                            "decision_id FROM decisions WHERE audit_seq > :s)"),
                       {"s": seq})  # fmt: skip
    connection.execute(text("DELETE FROM decisions WHERE audit_seq > :s"), {"s": seq})
    rebuild_counts(connection)  # the CSI rollup counted the deleted decisions' bins
    connection.execute(text("DELETE FROM audit_log WHERE seq > :s"), {"s": seq})
    digest = connection.execute(
        text("SELECT hash FROM audit_log WHERE seq = :s"), {"s": seq}
    ).scalar_one()
    connection.execute(
        text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1"), {"s": seq, "h": digest}
    )


def checkpoint_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a checkpoint file, parsed (no checks)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def first_checkpoint_at_or_after(path: Path, seq: int) -> int:
    """``seq`` of the first checkpoint that covers record ``seq``."""
    return min(c["seq"] for c in checkpoint_lines(path) if c["seq"] >= seq)


class WebhookReceiver:
    """A real HTTP server on 127.0.0.1 (in a thread) that stores every POSTed body; the first
    ``fail_first`` requests get HTTP 500 (to exercise retries)."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.bodies: list[bytes] = []
        self.failures = 0
        self._fail_first = fail_first
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver._lock:
                    failing = receiver.failures < receiver._fail_first
                    if failing:
                        receiver.failures += 1
                    else:
                        receiver.bodies.append(body)
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/audit-checkpoints?token=secret"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
