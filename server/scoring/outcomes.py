"""Loan outcomes: validating, importing (API, CSV, Parquet) and verifying monthly performance rows.

One input row is one month of one booked loan: the deciding ``decision_id``, the loan's static
facts (origination month, principal, segment tags) and that month's performance. The static
facts go to ``loans`` once, the month to ``outcomes``.

An import is one transaction: every row is validated first (a bad row raises
:class:`OutcomeImportError` naming its line and column) and nothing of the import is kept when
any row fails. Re-importing a row already stored with the same values is skipped, so an import
can be repeated; a row that contradicts a stored one is an error (outcomes are append-only, a
correction is a new month, never an edit).

Notes
-----
Outcomes join the audit chain: each chunk of new rows appends one ``outcomes`` record holding
the row counts and the SHA-256 of the chunk's rows in canonical form, and every row stores that
record's ``seq``. :func:`verify_outcomes` recomputes each digest from the stored rows, so an
edited, deleted or inserted outcome breaks the chain check.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import ColumnElement, func, insert, inspect, or_, select, update
from sqlalchemy.engine import Connection

from server.scoring.audit import AuditChain, canonical_json, utc_now
from server.scoring.db.tables import SEGMENT_LEN, audit_log, decisions, loans, outcomes
from server.scoring.errors import ScoringError

AUDIT_KIND: Final = "outcomes"
"""Kind of the audit record appended for each chunk of imported outcome rows."""

MONTH_PATTERN: Final = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")

LOAN_FIELDS: Final = (
    "decision_id",
    "account_id",
    "originated",
    "principal",
    "industry",
    "purpose",
    "purpose_text",
    "customer_type",
    "region",
)
"""Columns of ``loans`` given by an input row (constant over a loan's months)."""

MONTH_FIELDS: Final = (
    "decision_id",
    "month_on_book",
    "month",
    "dpd",
    "balance",
    "paid",
    "interest_fees",
    "charge_off",
    "recoveries",
)
"""Columns of ``outcomes`` (``month`` is derived: origination month + month on book)."""

INPUT_COLUMNS: Final = (
    *LOAN_FIELDS,
    *(f for f in MONTH_FIELDS if f not in ("decision_id", "month")),
)
"""Columns of an import file, in this order in the CSV the generator writes."""

CHUNK_ROWS: Final = 5000

BAD_DPD: Final = 90
"""A month with this many days past due (or a charge-off) makes the loan bad."""

SUMMARY_FIELDS: Final = ("months_on_book", "first_bad_mob", "income", "charged_off", "recovered")
"""Columns of ``loans`` derived from the loan's outcome rows (kept by the import)."""


class OutcomeImportError(ScoringError, ValueError):
    """A bad outcome row (its line and column named) or a contradiction with stored rows."""


Amount = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]
Segment = Annotated[str, Field(min_length=1, max_length=SEGMENT_LEN)]


class OutcomeRow(BaseModel):
    """One month of one booked loan, keyed to the application decision that booked it."""

    model_config = ConfigDict(extra="forbid")

    decision_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._:@-]{1,32}$")]
    account_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    originated: Annotated[str, Field(description="origination month, YYYY-MM")]
    principal: Annotated[float, Field(gt=0, le=1e12, allow_inf_nan=False)]
    industry: Segment
    purpose: Segment
    purpose_text: Annotated[str, Field(max_length=1000)] = ""
    customer_type: Segment
    region: Segment
    month_on_book: Annotated[int, Field(ge=1, le=600)]
    dpd: Annotated[int, Field(ge=0, le=100_000, description="days past due at month end")]
    balance: Amount
    paid: Amount
    interest_fees: Amount
    charge_off: Amount
    recoveries: Amount

    @field_validator("originated")
    @classmethod
    def _month(cls, value: str) -> str:
        if not MONTH_PATTERN.fullmatch(value):
            raise ValueError(f"originated must be a month YYYY-MM; got {value!r}")
        return value


def add_months(month: str, n: int) -> str:
    """``YYYY-MM`` plus ``n`` months."""
    year, mon = int(month[:4]), int(month[5:7])
    index = year * 12 + mon - 1 + n
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def months_between(start: str, end: str) -> int:
    """Whole months from ``start`` to ``end`` (both ``YYYY-MM``)."""
    return (int(end[:4]) - int(start[:4])) * 12 + int(end[5:7]) - int(start[5:7])


@dataclass(frozen=True)
class ImportReport:
    """What one import did: rows inserted, rows skipped as already stored, loans added."""

    rows: int
    inserted: int
    skipped: int
    loans_added: int
    audit_records: int


def _location(where: str, error: Mapping[str, Any]) -> str:
    column = ".".join(str(p) for p in error["loc"]) or "row"
    return f"{where}, column {column}: {error['msg']}"


def validate_row(where: str, raw: dict[str, Any]) -> OutcomeRow:
    """Validate one input row; raises :class:`OutcomeImportError` naming ``where`` and column."""
    try:
        return OutcomeRow.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(_location(where, err) for err in e.errors())
        raise OutcomeImportError(problems) from e


def _loan_row(row: OutcomeRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in LOAN_FIELDS}


def _month_row(row: OutcomeRow) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in MONTH_FIELDS if name != "month"}
    return {**values, "month": add_months(row.originated, row.month_on_book)}


def chunk_digest(loan_rows: Sequence[dict[str, Any]], month_rows: Sequence[dict[str, Any]]) -> str:
    """SHA-256 of a chunk's rows in canonical form (order-free: rows are sorted first)."""
    digest = hashlib.sha256()
    for row in sorted(loan_rows, key=lambda r: r["decision_id"]):
        digest.update(canonical_json(["loan", *(row[n] for n in LOAN_FIELDS)]).encode())
        digest.update(b"\n")
    for row in sorted(month_rows, key=lambda r: (r["decision_id"], r["month_on_book"])):
        digest.update(canonical_json(["month", *(row[n] for n in MONTH_FIELDS)]).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _same(stored: dict[str, Any], new: dict[str, Any], fields: Iterable[str]) -> str | None:
    for name in fields:
        if stored[name] != new[name]:
            return name
    return None


class _Importer:
    """State of one import transaction: loans seen so far and the chunk being written."""

    def __init__(self, connection: Connection, chain: AuditChain) -> None:
        self.connection = connection
        self.chain = chain
        self.loans_seen: dict[str, tuple[Any, ...]] = {}
        self.rows = self.inserted = self.skipped = self.loans_added = self.records = 0

    def chunk(self, located: Sequence[tuple[str, OutcomeRow]]) -> None:
        ids = sorted({row.decision_id for _, row in located})
        decided = {
            r.decision_id: r.stage
            for r in self.connection.execute(
                select(decisions.c.decision_id, decisions.c.stage).where(
                    decisions.c.decision_id.in_(ids)
                )
            )
        }
        stored_loans = {
            r.decision_id: dict(r._mapping)
            for r in self.connection.execute(select(loans).where(loans.c.decision_id.in_(ids)))
        }
        stored_months = {
            (r.decision_id, int(r.month_on_book)): dict(r._mapping)
            for r in self.connection.execute(
                select(outcomes).where(outcomes.c.decision_id.in_(ids))
            )
        }
        new_loans: list[dict[str, Any]] = []
        new_months: dict[tuple[str, int], dict[str, Any]] = {}
        for where, row in located:
            self.rows += 1
            if decided.get(row.decision_id) != "application":
                raise OutcomeImportError(
                    f"{where}, column decision_id: decision_id must name a stored application "
                    f"decision; got {row.decision_id!r}"
                )
            loan = _loan_row(row)
            key = tuple(loan[n] for n in LOAN_FIELDS)
            known = self.loans_seen.get(row.decision_id)
            if known is None:
                stored = stored_loans.get(row.decision_id)
                if stored is not None:
                    self.loans_seen[row.decision_id] = tuple(stored[n] for n in LOAN_FIELDS)
                    known = self.loans_seen[row.decision_id]
                else:
                    self.loans_seen[row.decision_id] = key
                    new_loans.append(loan)
                    known = key
            if known != key:
                column = next(n for n, a, b in zip(LOAN_FIELDS, known, key, strict=True) if a != b)
                raise OutcomeImportError(
                    f"{where}, column {column}: loan {row.decision_id} must keep the same "
                    f"{column} in every month; got {key[LOAN_FIELDS.index(column)]!r}, stored "
                    f"or earlier {known[LOAN_FIELDS.index(column)]!r}"
                )
            month = _month_row(row)
            mkey = (row.decision_id, row.month_on_book)
            previous = stored_months.get(mkey) or new_months.get(mkey)
            if previous is not None:
                differs = _same(previous, month, MONTH_FIELDS)
                if differs is not None:
                    raise OutcomeImportError(
                        f"{where}, column {differs}: month {row.month_on_book} of loan "
                        f"{row.decision_id} is already recorded with {differs}="
                        f"{previous[differs]!r}; got {month[differs]!r} (outcomes are "
                        "append-only)"
                    )
                self.skipped += 1
                continue
            new_months[mkey] = month
        self._write(new_loans, list(new_months.values()))

    def _write(self, new_loans: list[dict[str, Any]], new_months: list[dict[str, Any]]) -> None:
        if not new_loans and not new_months:
            return
        created_at = utc_now()
        payload = {
            "loans": len(new_loans),
            "months": len(new_months),
            "sha256": chunk_digest(new_loans, new_months),
        }
        seq = self.chain.append(AUDIT_KIND, payload, created_at=created_at)
        stamp = {"created_at": created_at, "audit_seq": seq}
        if new_loans:
            empty = {"months_on_book": 0, "first_bad_mob": None, "income": 0.0}
            empty |= {"charged_off": 0.0, "recovered": 0.0}
            self.connection.execute(insert(loans), [{**r, **stamp, **empty} for r in new_loans])
        if new_months:
            self.connection.execute(insert(outcomes), [{**r, **stamp} for r in new_months])
            refresh_summaries(self.connection, sorted({r["decision_id"] for r in new_months}))
        self.inserted += len(new_months)
        self.loans_added += len(new_loans)
        self.records += 1

    def report(self) -> ImportReport:
        return ImportReport(
            rows=self.rows,
            inserted=self.inserted,
            skipped=self.skipped,
            loans_added=self.loans_added,
            audit_records=self.records,
        )


def is_bad_month() -> ColumnElement[bool]:
    """An outcome month that makes its loan bad: 90+ days past due or a charge-off."""
    return or_(outcomes.c.dpd >= BAD_DPD, outcomes.c.charge_off > 0)


def _summary_values() -> dict[str, Any]:
    def of_loan(expr: Any, *where: Any) -> Any:
        return (
            select(expr)
            .where(outcomes.c.decision_id == loans.c.decision_id, *where)
            .scalar_subquery()
        )

    return {
        "months_on_book": of_loan(func.max(outcomes.c.month_on_book)),
        "first_bad_mob": of_loan(func.min(outcomes.c.month_on_book), is_bad_month()),
        "income": of_loan(func.coalesce(func.sum(outcomes.c.interest_fees), 0.0)),
        "charged_off": of_loan(func.coalesce(func.sum(outcomes.c.charge_off), 0.0)),
        "recovered": of_loan(func.coalesce(func.sum(outcomes.c.recoveries), 0.0)),
    }


def refresh_summaries(connection: Connection, decision_ids: Sequence[str]) -> None:
    """Recompute the performance-to-date columns of these loans from their outcome rows."""
    for start in range(0, len(decision_ids), 1000):
        part = decision_ids[start : start + 1000]
        connection.execute(
            update(loans).where(loans.c.decision_id.in_(part)).values(**_summary_values())
        )


def import_rows(
    connection: Connection,
    chain: AuditChain,
    rows: Iterable[tuple[str, dict[str, Any]]],
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> ImportReport:
    """Validate and store ``(location, raw row)`` pairs inside the caller's write transaction.

    Rows are streamed in chunks of ``chunk_rows``; the caller's transaction makes the import
    all-or-nothing. Raises :class:`OutcomeImportError` at the first bad row.
    """
    importer = _Importer(connection, chain)
    pending: list[tuple[str, OutcomeRow]] = []
    for where, raw in rows:
        pending.append((where, validate_row(where, raw)))
        if len(pending) >= chunk_rows:
            importer.chunk(pending)
            pending = []
    if pending:
        importer.chunk(pending)
    return importer.report()


# ------------------------------------------------------------------------------ reading files
def _blank_to_none(raw: dict[str, Any]) -> dict[str, Any]:
    # a CSV cannot say "null": an empty optional cell means absent
    return {k: (None if v == "" and k == "account_id" else v) for k, v in raw.items()}


def read_csv_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Stream a CSV file's rows as ``("line N", row)``; line 1 is the header."""
    with path.open("r", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise OutcomeImportError(f"{path}: the file is empty; a header line is required")
        for raw in reader:
            if None in raw:
                raise OutcomeImportError(
                    f"line {reader.line_num}: the row has more cells than the header's "
                    f"{len(reader.fieldnames)}"
                )
            yield f"line {reader.line_num}", _blank_to_none(dict(raw))


def read_parquet_rows(
    path: Path, *, batch_rows: int = 50_000
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Stream a Parquet file's rows as ``("row N", row)`` (N from 1), one record batch at a time."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own ArrowInvalid / OSError for a non-Parquet file
        raise OutcomeImportError(f"{path}: not a readable Parquet file ({e})") from e
    n = 0
    for batch in parquet.iter_batches(batch_size=batch_rows):
        for raw in batch.to_pylist():
            n += 1
            yield f"row {n}", raw


def read_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """CSV or Parquet rows, by file suffix (``.csv``, ``.parquet`` / ``.pq``)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv_rows(path)
    if suffix in (".parquet", ".pq"):
        return read_parquet_rows(path)
    raise OutcomeImportError(f"file must end in .csv, .parquet or .pq; got {path.name!r}")


def rows_to_csv(rows: Iterable[dict[str, Any]]) -> str:
    """CSV text of input rows (the columns of :data:`INPUT_COLUMNS`)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(INPUT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in INPUT_COLUMNS})
    return out.getvalue()


# ------------------------------------------------------------------------------ verification
@dataclass(frozen=True)
class OutcomeProblem:
    """The first outcome chunk whose stored rows no longer match its audit record."""

    seq: int
    problem: str


def verify_outcomes(connection: Connection) -> OutcomeProblem | None:
    """Recompute every ``outcomes`` record's digest from the rows stamped with its ``seq``.

    Returns the first mismatch (edited, deleted or added rows), else None. Rows stamped with a
    ``seq`` that is not an ``outcomes`` record are reported too. A database from before the
    outcome tables existed has nothing to check.
    """
    if not inspect(connection).has_table(outcomes.name):
        return None
    records = connection.execute(
        select(audit_log.c.seq, audit_log.c.payload)
        .where(audit_log.c.kind == AUDIT_KIND)
        .order_by(audit_log.c.seq)
    ).all()
    known = {int(r.seq) for r in records}
    for table in (loans, outcomes):
        query = select(table.c.audit_seq).limit(1)
        if known:
            query = query.where(table.c.audit_seq.not_in(known))
        stray = connection.execute(query).scalar()
        if stray is not None:
            return OutcomeProblem(
                int(stray),
                f"{table.name} rows point at audit record {stray}, not an outcomes record",
            )
    for record in records:
        seq = int(record.seq)
        payload = json.loads(record.payload)
        loan_rows = [
            dict(r._mapping)
            for r in connection.execute(
                select(*(loans.c[n] for n in LOAN_FIELDS)).where(loans.c.audit_seq == seq)
            )
        ]
        month_rows = [
            dict(r._mapping)
            for r in connection.execute(
                select(*(outcomes.c[n] for n in MONTH_FIELDS)).where(outcomes.c.audit_seq == seq)
            )
        ]
        if (
            len(loan_rows) != payload["loans"]
            or len(month_rows) != payload["months"]
            or chunk_digest(loan_rows, month_rows) != payload["sha256"]
        ):
            return OutcomeProblem(
                seq, f"outcome rows of audit record {seq} differ from it (edited, added or deleted)"
            )
    # the rows are as recorded: now the per-loan columns derived from them
    return _verify_summaries(connection)


def _verify_summaries(connection: Connection) -> OutcomeProblem | None:
    """The first loan whose performance-to-date columns differ from its outcome rows."""
    values = _summary_values()
    query = select(
        loans.c.decision_id, loans.c.audit_seq, *(loans.c[n] for n in SUMMARY_FIELDS),
        *(values[n].label(f"expected_{n}") for n in SUMMARY_FIELDS),
    )  # fmt: skip
    for row in connection.execution_options(yield_per=5000).execute(query):
        mapping = row._mapping
        for name in SUMMARY_FIELDS:
            stored, expected = mapping[name], mapping[f"expected_{name}"]
            if stored is None or expected is None:
                same = stored == expected
            else:  # sums may add in another order: equal up to rounding
                same = abs(float(stored) - float(expected)) <= 1e-9 * max(1.0, abs(float(expected)))
            if not same:
                return OutcomeProblem(
                    int(mapping["audit_seq"]),
                    f"loan {mapping['decision_id']}: {name} {stored!r} differs from its outcome "
                    f"rows ({expected!r}); the loan row was edited",
                )
    return None
