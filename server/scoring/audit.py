"""Hash-chained audit log: canonical JSON records, in-transaction appends and chain verification.

Every record holds the hash of the previous one, so editing, deleting or reordering any record
breaks the chain from that record on. ``audit_head`` holds the last ``seq`` and hash, so even a
deleted tail is seen. Decisions rows are cross-checked against their audit record too.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, Table, insert, select, update
from sqlalchemy.engine import Connection

from server.scoring.db.engine import write_connection
from server.scoring.db.tables import audit_head, audit_log, decisions

if TYPE_CHECKING:
    from server.scoring.anchor import Checkpoint

T = TypeVar("T")

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first record."""

DECISION_FIELDS = (
    "decision_id",
    "stage",
    "subject_hash",
    "fingerprint",
    "model_id",
    "role",
    "score",
    "probability",
    "outcome",
    "reasons",
    "rules_hit",
    "details",
)
"""Columns of ``decisions`` copied into the decision's audit payload (and cross-checked)."""


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""Compact JSON for stored JSON columns (one instance: ``json.dumps`` builds one per call)."""


def canonical_json(value: object) -> str:
    """Canonical JSON text: sorted keys, no whitespace, UTF-8, no NaN/Infinity."""
    return _CANONICAL.encode(value)


def utc_now() -> str:
    """Current UTC time as ISO-8601 text with microseconds (sorts lexicographically)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def record_hash(*, seq: int, created_at: str, kind: str, payload: str, prev_hash: str) -> str:
    """SHA-256 of one audit record: the canonical JSON of ``[seq, created_at, kind, prev_hash]``,
    a newline, then the payload exactly as stored (itself canonical JSON).

    Hashing the stored payload text means the check needs no float round-trip: any change to
    the stored bytes changes the hash. The header line cannot contain a newline, so the split
    between header and payload is unambiguous.
    """
    header = _CANONICAL.encode([seq, created_at, kind, prev_hash])
    digest = hashlib.sha256(header.encode("utf-8"))
    digest.update(b"\n")
    digest.update(payload.encode("utf-8"))
    return digest.hexdigest()


@functools.cache
def raw_insert(table: Table) -> str:
    """``INSERT INTO t (every column) VALUES (?, …)`` for the sqlite3 driver's qmark style."""
    columns = [c.name for c in table.c]
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    )


@dataclass
class AuditChain:
    """Appends records to the chain inside one open write transaction.

    Use :meth:`open` after ``BEGIN`` (``BEGIN IMMEDIATE`` on SQLite): it locks the head row
    (``SELECT … FOR UPDATE`` on PostgreSQL), so concurrent writers (the service's writer thread and
    the CLI) append one after the other. Records are buffered and inserted by :meth:`flush` in one
    ``executemany``, which is what makes group commit cheap.
    """

    connection: Connection | None
    seq: int
    hash: str
    _rows: list[dict[str, object]] = field(default_factory=list)
    _has_head: bool = True
    opened_seq: int = field(init=False)
    """Head ``seq`` when the chain was opened: this transaction appends ``opened_seq + 1 …``."""
    opened_hash: str = field(init=False)

    def __post_init__(self) -> None:
        self.opened_seq, self.opened_hash = self.seq, self.hash

    @property
    def pending(self) -> list[dict[str, object]]:
        """Records appended since the last flush (for writers that insert them themselves)."""
        return self._rows

    @property
    def has_head(self) -> bool:
        """Whether the ``audit_head`` row exists already (else the first flush inserts it)."""
        return self._has_head

    @classmethod
    def open(cls, connection: Connection) -> AuditChain:
        """Read (and lock) the chain head in the current transaction."""
        row = connection.execute(
            select(audit_head.c.seq, audit_head.c.hash)
            .where(audit_head.c.id == 1)
            .with_for_update()
        ).first()
        if row is None:
            return cls(connection=connection, seq=0, hash=GENESIS_HASH, _has_head=False)
        return cls(connection=connection, seq=int(row.seq), hash=str(row.hash))

    def append(
        self, kind: str, payload: Mapping[str, Any], *, created_at: str | None = None
    ) -> int:
        """Add one record; returns its ``seq``. Written by :meth:`flush`."""
        stamp = created_at or utc_now()
        text = canonical_json(dict(payload))
        seq = self.seq + 1
        digest = record_hash(
            seq=seq, created_at=stamp, kind=kind, payload=text, prev_hash=self.hash
        )
        self._rows.append(
            {
                "seq": seq,
                "created_at": stamp,
                "kind": kind,
                "payload": text,
                "prev_hash": self.hash,
                "hash": digest,
            }
        )
        self.seq, self.hash = seq, digest
        return seq

    def flush(self) -> None:
        """Insert the buffered records and move the head, in the caller's transaction."""
        if not self._rows:
            return
        if self.connection is None:
            raise RuntimeError("this chain has no connection: insert .pending yourself")
        if self.connection.dialect.name == "sqlite":
            # the hot path: a prepared statement and plain tuples, no SQLAlchemy compilation
            self.connection.exec_driver_sql(
                raw_insert(audit_log), [tuple(r[c.name] for c in audit_log.c) for r in self._rows]
            )
        else:
            self.connection.execute(insert(audit_log), self._rows)
        if self._has_head:
            self.connection.execute(
                update(audit_head).where(audit_head.c.id == 1).values(seq=self.seq, hash=self.hash)
            )
        else:
            self.connection.execute(insert(audit_head).values(id=1, seq=self.seq, hash=self.hash))
            self._has_head = True
        self._rows.clear()


def audited_transaction(
    engine: Engine,
    fn: Callable[[Connection, AuditChain], T],
    *,
    on_commit: Callable[[AuditChain], None] | None = None,
) -> T:
    """Run ``fn(connection, chain)`` in one write transaction; its audit records commit with it.

    The transaction takes the write lock up front (SQLite ``BEGIN IMMEDIATE``, the locked chain
    head on PostgreSQL), so it appends after any writer already inside. ``on_commit`` gets the
    chain after the commit (the service's checkpoint signer).
    """
    with write_connection(engine) as connection:
        with connection.begin():
            chain = AuditChain.open(connection)
            result = fn(connection, chain)
            chain.flush()
        if on_commit is not None:
            on_commit(chain)
    return result


@dataclass(frozen=True)
class VerifyReport:
    """Result of :func:`verify_chain`. ``first_broken`` is the seq of the first bad record."""

    ok: bool
    records: int
    decisions: int
    first_broken: int | None = None
    problem: str = ""


def _audit_rows(connection: Connection, batch: int) -> Iterator[Any]:
    result = connection.execution_options(yield_per=batch).execute(
        select(audit_log).order_by(audit_log.c.seq)
    )
    yield from result


def verify_chain(
    connection: Connection, *, batch: int = 5000, checkpoints: Sequence[Checkpoint] = ()
) -> VerifyReport:
    """Check the whole audit chain and every decision row against its audit record.

    Parameters
    ----------
    connection
        Open connection; rows are streamed in ``seq`` order, so memory stays flat.
    batch
        Rows fetched per round trip.
    checkpoints
        Signed checkpoints of the chain head (already checked against the public key, see
        :func:`server.scoring.anchor.read_checkpoints`). Without them the check proves only that
        the chain is consistent, which anyone able to write the database can make it again.

    Returns
    -------
    VerifyReport
        ``ok`` is False at the first problem found, in ``seq`` order, naming the record: an
        edited record (hash mismatch), a deleted or reordered one (``seq`` gap or ``prev_hash``
        mismatch), a record whose hash differs from a signed checkpoint (the chain was rewritten
        and rehashed), records missing below a checkpoint or the head (deleted tail), a
        decision row that differs from its record, or loan outcome rows that differ from the
        digest in their ``outcomes`` record.
    """
    signed = sorted((c for c in checkpoints if c.seq > 0), key=lambda c: (c.seq, c.n))
    next_signed = 0
    confirmed = 0
    expected_prev = GENESIS_HASH
    expected_seq = 1
    count = 0
    decision_records = 0
    for row in _audit_rows(connection, batch):
        seq = int(row.seq)
        if seq != expected_seq:
            missing = f"record {expected_seq} is missing (deleted or reordered)"
            return VerifyReport(False, count, 0, expected_seq, f"{missing}; next present is {seq}")
        if row.prev_hash != expected_prev:
            return VerifyReport(
                False, count, 0, seq,
                f"record {seq} does not follow record {seq - 1} (prev_hash mismatch: "
                "a record was deleted, reordered or edited)",
            )  # fmt: skip
        digest = record_hash(
            seq=seq,
            created_at=row.created_at,
            kind=row.kind,
            payload=row.payload,
            prev_hash=row.prev_hash,
        )
        if digest != row.hash:
            return VerifyReport(False, count, 0, seq, f"record {seq} was edited (hash mismatch)")
        while next_signed < len(signed) and signed[next_signed].seq <= seq:
            checkpoint = signed[next_signed]
            if checkpoint.hash != row.hash:
                return VerifyReport(
                    False, count, 0, seq,
                    f"record {seq} differs from signed checkpoint #{checkpoint.n} (checkpoint "
                    f"file line {checkpoint.line}) although the chain links: the chain was "
                    f"rewritten and rehashed; the rewrite starts in records {confirmed + 1}.."
                    f"{seq} (record {confirmed} is the last one a checkpoint confirms)",
                )  # fmt: skip
            confirmed = seq
            next_signed += 1
        expected_prev = row.hash
        expected_seq = seq + 1
        count += 1
        decision_records += row.kind == "decision"
    if next_signed < len(signed):
        checkpoint = signed[-1]
        problem = (
            f"records {count + 1}..{checkpoint.seq} are missing (deleted): signed checkpoint "
            f"#{checkpoint.n} (checkpoint file line {checkpoint.line}) covers record "
            f"{checkpoint.seq}, the chain ends at record {count}"
        )
        return VerifyReport(False, count, 0, count + 1, problem)
    head = connection.execute(select(audit_head.c.seq, audit_head.c.hash)).first()
    head_seq, head_hash = (0, GENESIS_HASH) if head is None else (int(head.seq), str(head.hash))
    if head_seq != count or head_hash != expected_prev:
        if head_seq > count:
            problem = f"records {count + 1}..{head_seq} are missing (deleted tail)"
            return VerifyReport(False, count, 0, count + 1, problem)
        problem = f"chain head (seq {head_seq}) does not match the last record (seq {count})"
        return VerifyReport(False, count, 0, min(head_seq, count) + 1, problem)
    report = _verify_decisions(connection, count, batch=batch)
    if report.ok and report.decisions != decision_records:
        return _missing_decision(connection, count, report.decisions)
    if report.ok:
        # imported here: outcomes builds on this module's chain
        from server.scoring.outcomes import verify_outcomes

        broken = verify_outcomes(connection)
        if broken is not None:
            return VerifyReport(False, count, report.decisions, broken.seq, broken.problem)
    return report


def _missing_decision(connection: Connection, records: int, n_decisions: int) -> VerifyReport:
    orphan = connection.execute(
        select(audit_log.c.seq)
        .join_from(audit_log, decisions, decisions.c.audit_seq == audit_log.c.seq, isouter=True)
        .where(audit_log.c.kind == "decision", decisions.c.decision_id.is_(None))
        .order_by(audit_log.c.seq)
        .limit(1)
    ).scalar()
    seq = None if orphan is None else int(orphan)
    problem = f"the decision row recorded by audit record {seq} is missing (deleted)"
    return VerifyReport(False, records, n_decisions, seq, problem)


def _verify_decisions(connection: Connection, records: int, *, batch: int) -> VerifyReport:
    query = (
        select(
            decisions, audit_log.c.payload, audit_log.c.kind, audit_log.c.created_at.label("a_ts")
        )
        .join_from(decisions, audit_log, audit_log.c.seq == decisions.c.audit_seq, isouter=True)
        .order_by(decisions.c.audit_seq)
    )
    n = 0
    for row in connection.execution_options(yield_per=batch).execute(query):
        mapping = row._mapping
        seq = int(mapping["audit_seq"])
        if mapping["payload"] is None or mapping["kind"] != "decision":
            problem = (
                f"decision {mapping['decision_id']} points at audit record {seq}, not a decision"
            )
            return VerifyReport(False, records, n, seq, problem)
        stored = {name: mapping[name] for name in DECISION_FIELDS}
        if canonical_json(stored) != mapping["payload"] or mapping["created_at"] != mapping["a_ts"]:
            problem = f"decision {mapping['decision_id']} differs from its audit record {seq}"
            return VerifyReport(False, records, n, seq, problem)
        n += 1
    return VerifyReport(True, records, n)
