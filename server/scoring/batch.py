"""Batch scoring of CSV or Parquet uploads, streamed chunk by chunk into a CSV response.

The upload is spooled to a temporary file (never held in memory), then read in chunks (pyarrow's
streaming CSV reader / ``ParquetFile.iter_batches``); each chunk is validated, scored and written
out before the next is read, so memory stays flat for millions of rows. Every input row yields
one output row: scored, or with an ``error`` naming the problem (bad value, malformed line).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fedrisk.decisions.lifecycle import ApplicationPolicy, BehaviourPolicy
from server.scoring.errors import InvalidInputError
from server.scoring.registry import LoadedModel
from server.scoring.settings import Stage

logger = logging.getLogger(__name__)

UploadFormat = Literal["csv", "parquet"]

_DECISIONS = np.array(["approve", "manual_review", "decline"], dtype=object)


@dataclass
class BatchPlan:
    """What to read from an upload and how to score it."""

    stage: Stage
    model: LoadedModel
    path: Path
    fmt: UploadFormat
    columns: list[str]
    id_column: str | None
    chunk_rows: int
    with_reasons: bool
    stats: dict[str, Any] = field(default_factory=dict)


def decide_application_batch(
    pd_: npt.NDArray[np.float64], score: npt.NDArray[np.float64], *, policy: ApplicationPolicy
) -> tuple[
    npt.NDArray[np.object_],
    npt.NDArray[np.float64],
    npt.NDArray[np.object_],
    npt.NDArray[np.float64],
]:
    """Vectorised A-card cut-offs and limit bands
    (``fedrisk.decisions.lifecycle.decide_application`` without
    fraud input): decision, credit limit, price tier and APR per row (NaN/None where none)."""
    if policy.basis == "pd":
        code = np.where(
            pd_ <= policy.approve_cutoff, 0, np.where(pd_ > policy.decline_cutoff, 2, 1)
        )
    else:
        code = np.where(
            score >= policy.approve_cutoff, 0, np.where(score < policy.decline_cutoff, 2, 1)
        )
    mins = np.array([b.min_score for b in policy.limit_bands], dtype=np.float64)
    band = np.searchsorted(mins, score, side="right") - 1  # highest band with min_score <= score
    no_band = band < 0
    code = np.where((code == 0) & no_band, 1, code)  # approve without an offer -> review
    offered = (code != 2) & ~no_band
    idx = np.clip(band, 0, len(mins) - 1)
    limits = np.array([b.limit for b in policy.limit_bands], dtype=np.float64)[idx]
    aprs = np.array(
        [np.nan if b.apr is None else b.apr for b in policy.limit_bands], dtype=np.float64
    )[idx]
    tiers = np.array([b.price_tier for b in policy.limit_bands], dtype=object)[idx]
    limit = np.where(offered, limits, np.nan)
    apr = np.where(offered, aprs, np.nan)
    tier = tiers.copy()
    tier[~offered] = None
    return _DECISIONS[code], limit, tier, apr


def behaviour_band(
    pd_: npt.NDArray[np.float64], score: npt.NDArray[np.float64], *, policy: BehaviourPolicy
) -> npt.NDArray[np.object_]:
    """B-card risk band per row from the policy cut-offs: raise_eligible, keep or cut."""
    labels = np.array(["raise_eligible", "keep", "cut"], dtype=object)
    if policy.basis == "pd":
        code = np.where(pd_ <= policy.raise_cutoff, 0, np.where(pd_ > policy.cut_cutoff, 2, 1))
    else:
        code = np.where(score >= policy.raise_cutoff, 0, np.where(score < policy.cut_cutoff, 2, 1))
    return labels[code]


def read_header(path: Path, fmt: UploadFormat) -> list[str]:
    """Column names of an upload.

    Raises
    ------
    InvalidInputError
        The file is not readable CSV/Parquet or has no header.
    """
    try:
        if fmt == "parquet":
            return list(pq.ParquetFile(path).schema_arrow.names)
        with path.open("r", encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle), None)
    except (OSError, UnicodeDecodeError, csv.Error, pa.ArrowException, StopIteration) as e:
        raise InvalidInputError(
            [_err(["body"], "value_error", f"upload must be a readable {fmt.upper()} file: {e}")]
        ) from e
    if not header:
        raise InvalidInputError(
            [_err(["body"], "missing", "CSV upload must start with a header line")]
        )
    return [name.strip() for name in header]


def _err(loc: list[str], kind: str, msg: str) -> dict[str, object]:
    return {"type": kind, "loc": loc, "msg": msg}


def plan_batch(
    *,
    stage: Stage,
    model: LoadedModel,
    path: Path,
    fmt: UploadFormat,
    chunk_rows: int,
    with_reasons: bool,
) -> BatchPlan:
    """Check an upload's header against the model and decide what to read.

    Raises
    ------
    InvalidInputError
        A required (non-nullable) feature column is missing, or a column repeats.
    """
    header = read_header(path, fmt)
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise InvalidInputError(
            [_err(["body", c], "value_error", "column appears more than once") for c in duplicates]
        )
    present = set(header)
    missing = [s.name for s in model.schema.features if s.name not in present and not s.nullable]
    if missing:
        raise InvalidInputError(
            [
                _err(
                    ["body", name],
                    "missing",
                    f"column {name} is required by model {model.model_id}",
                )
                for name in missing
            ]
        )
    id_column = model.schema.id_column if model.schema.id_column in present else None
    wanted = [s.name for s in model.schema.features if s.name in present]
    columns = ([id_column] if id_column else []) + wanted
    return BatchPlan(
        stage=stage,
        model=model,
        path=path,
        fmt=fmt,
        columns=columns,
        id_column=id_column,
        chunk_rows=chunk_rows,
        with_reasons=with_reasons,
    )


def _csv_batches(plan: BatchPlan, bad_rows: list[str]) -> Iterator[pa.RecordBatch]:
    def on_invalid(row: Any) -> str:
        line = "?" if row.number is None else str(row.number)
        bad_rows.append(
            f"malformed CSV line {line}: expected {row.expected_columns} fields, "
            f"got {row.actual_columns}"
        )
        return "skip"

    # every column as text: a bad number then fails one row, not the whole block
    types = {name: pa.string() for name in plan.columns}
    reader = pacsv.open_csv(
        plan.path,
        read_options=pacsv.ReadOptions(block_size=max(1 << 20, plan.chunk_rows * 64)),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types=types, include_columns=plan.columns, strings_can_be_null=True
        ),
    )
    yield from reader


def _parquet_batches(plan: BatchPlan) -> Iterator[pa.RecordBatch]:
    yield from pq.ParquetFile(plan.path).iter_batches(
        batch_size=plan.chunk_rows, columns=plan.columns
    )


def _to_float(
    column: pa.Array | pa.ChunkedArray,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Float values and a mask of entries that were present but not numbers."""
    if (
        pa.types.is_floating(column.type)
        or pa.types.is_integer(column.type)
        or pa.types.is_boolean(column.type)
    ):
        cast = pc.cast(column, pa.float64())
        return np.asarray(cast.to_numpy(zero_copy_only=False), dtype=np.float64), np.zeros(
            len(column), dtype=bool
        )
    text = pc.cast(column, pa.string())
    try:
        cast = pc.cast(pc.utf8_trim_whitespace(text), pa.float64())
        return np.asarray(cast.to_numpy(zero_copy_only=False), dtype=np.float64), np.zeros(
            len(column), dtype=bool
        )
    except pa.ArrowInvalid:
        series = pd.Series(text.to_numpy(zero_copy_only=False), dtype=object)
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = series.notna().to_numpy() & np.isnan(values)
        return values, bad


def _to_text(column: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.object_]:
    if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
        if pa.types.is_floating(column.type):
            # integer codes stored as floats (1.0) match the schema's "1"
            values = column.to_numpy(zero_copy_only=False)
            out = np.array(
                [
                    None if v != v else (str(int(v)) if float(v).is_integer() else repr(float(v)))
                    for v in values
                ],
                dtype=object,
            )
            return out
        column = pc.cast(column, pa.string())
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=object)


class BatchScorer:
    """Turns record batches into scored CSV chunks for one plan."""

    def __init__(
        self, plan: BatchPlan, *, application: ApplicationPolicy, behaviour: BehaviourPolicy
    ) -> None:
        self.plan = plan
        self.application = application
        self.behaviour = behaviour
        self.rows = 0
        self.errors = 0
        self._first = True
        self._specs = plan.model.schema.features

    def header_columns(self) -> list[str]:
        """Output columns, in order."""
        cols = ["row"] + ([self.plan.id_column] if self.plan.id_column else []) + ["pd", "score"]
        if self.plan.stage == "application":
            cols += ["decision", "credit_limit", "price_tier", "apr"]
        elif self.plan.stage == "behaviour":
            cols += ["risk_band"]
        else:
            cols += ["recovery_probability"]
        if self.plan.with_reasons:
            cols += [f"reason_{i}" for i in range(1, 5)]
        return [*cols, "error"]

    def score_batch(self, batch: pa.RecordBatch) -> bytes:
        """Validate, score and render one record batch as CSV bytes."""
        n = batch.num_rows
        present = set(batch.schema.names)
        frame: dict[str, Any] = {}
        problems = np.full(n, None, dtype=object)
        bad_rows = np.zeros(n, dtype=bool)

        def flag(mask: npt.NDArray[np.bool_], message: str) -> None:
            # first problem of a row wins
            hit = mask & ~bad_rows
            if hit.any():
                problems[hit] = message
                bad_rows[hit] = True

        for spec in self._specs:
            if spec.name not in present:
                values: Any = (
                    np.full(n, np.nan)
                    if spec.kind.value == "numeric"
                    else np.full(n, None, dtype=object)
                )
                frame[spec.name] = values
                continue
            column = batch.column(spec.name)
            if spec.kind.value == "numeric":
                floats, bad = _to_float(column)
                flag(bad, f"{spec.name} must be a number")
                missing = np.isnan(floats) & ~bad
                if not spec.nullable:
                    flag(missing, f"{spec.name} is required")
                lo = -np.inf if spec.min is None else spec.min
                hi = np.inf if spec.max is None else spec.max
                flag(
                    ~np.isnan(floats) & ((floats < lo) | (floats > hi)),
                    f"{spec.name} must be in [{spec.min}, {spec.max}]",
                )
                frame[spec.name] = floats
            else:
                texts = _to_text(column)
                missing = np.asarray(
                    pc.is_null(pa.array(texts, type=pa.string(), from_pandas=True))
                )
                if not spec.nullable:
                    flag(missing, f"{spec.name} is required")
                value_set = pa.array(list(spec.categories or ()), type=pa.string())
                known = np.asarray(
                    pc.is_in(
                        pa.array(texts, type=pa.string(), from_pandas=True), value_set=value_set
                    )
                )
                flag(~known & ~missing, f"{spec.name} must be one of the schema's categories")
                frame[spec.name] = texts
        ok = ~bad_rows
        rows = np.arange(self.rows + 1, self.rows + n + 1, dtype=np.int64)
        self.rows += n
        self.errors += int((~ok).sum())
        out: dict[str, Any] = {"row": rows}
        if self.plan.id_column:
            out[self.plan.id_column] = _to_text(batch.column(self.plan.id_column))
        pd_col = np.full(n, np.nan)
        score_col = np.full(n, np.nan)
        reasons: list[list[str]] = []
        if ok.any():
            # object dtype keeps pandas from converting the strings to Arrow-backed arrays,
            # which cost more than the whole model pass
            good = pd.DataFrame(
                {k: pd.Series(v[ok], dtype=v.dtype, copy=False) for k, v in frame.items()}
            )
            scored = self.plan.model.score_matrix(self.plan.model.preprocessor.transform(good))
            pd_col[ok] = scored.pd
            score_col[ok] = scored.score
            if self.plan.with_reasons:
                reasons = [[r.code for r in rr] for rr in self.plan.model.reasons(scored)]
        out["pd"] = pd_col
        out["score"] = score_col
        if self.plan.stage == "application":
            decision, limit, tier, apr = decide_application_batch(
                pd_col, score_col, policy=self.application
            )
            decision[~ok] = None
            tier[~ok] = None
            out |= {"decision": decision, "credit_limit": limit, "price_tier": tier, "apr": apr}
        elif self.plan.stage == "behaviour":
            band = behaviour_band(pd_col, score_col, policy=self.behaviour)
            band[~ok] = None
            out["risk_band"] = band
        else:
            out["recovery_probability"] = 1.0 - pd_col
        if self.plan.with_reasons:
            for i in range(4):
                col = np.full(n, None, dtype=object)
                col[ok] = [r[i] if i < len(r) else None for r in reasons]
                out[f"reason_{i + 1}"] = col
        out["error"] = problems
        return self._render(out)

    def error_rows(self, messages: list[str]) -> bytes:
        """Output rows for input lines that could not be parsed at all."""
        n = len(messages)
        if n == 0:
            return b""
        self.errors += n
        out: dict[str, Any] = {c: np.full(n, None, dtype=object) for c in self.header_columns()}
        out["error"] = np.array(messages, dtype=object)
        return self._render(out)

    def _render(self, columns: dict[str, Any]) -> bytes:
        arrays = []
        names = self.header_columns()
        for name in names:
            values = columns[name]
            if isinstance(values, np.ndarray) and values.dtype.kind == "f":
                arrays.append(pa.array(values, from_pandas=True))
            elif isinstance(values, np.ndarray) and values.dtype.kind in "iu":
                arrays.append(pa.array(values))
            else:
                arrays.append(pa.array(values, type=pa.string(), from_pandas=True))
        table = pa.Table.from_arrays(arrays, names=names)
        sink = io.BytesIO()
        if self._first:
            # Arrow quotes every header name; write a plain one (quoted only where needed)
            header = io.StringIO()
            csv.writer(header, lineterminator="\n").writerow(names)
            sink.write(header.getvalue().encode())
            self._first = False
        options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
        pacsv.write_csv(table, sink, write_options=options)
        return sink.getvalue()


def stream_batch(
    plan: BatchPlan,
    *,
    application: ApplicationPolicy,
    behaviour: BehaviourPolicy,
    on_done: Callable[[BatchPlan, int, int, str], None],
) -> Iterator[bytes]:
    """Yield the scored CSV of an upload chunk by chunk; calls ``on_done(plan, rows, errors,
    status)`` at the end (also when the client went away). Deletes the upload file."""
    scorer = BatchScorer(plan, application=application, behaviour=behaviour)
    bad_rows: list[str] = []
    status = "incomplete"
    try:
        batches = _csv_batches(plan, bad_rows) if plan.fmt == "csv" else _parquet_batches(plan)
        first = True
        try:
            for batch in batches:
                chunk = scorer.score_batch(batch)
                if bad_rows:
                    chunk += scorer.error_rows(bad_rows)
                    bad_rows.clear()
                first = False
                yield chunk
            status = "complete"
        except (pa.ArrowException, UnicodeDecodeError, ValueError, OSError) as e:
            # the status line is gone already: end the CSV with a row that says why it stopped
            logger.warning("batch upload aborted after %d rows: %s", scorer.rows, e)
            status = "aborted"
            message = f"stream aborted after {scorer.rows} rows: {str(e).splitlines()[0][:300]}"
            if first:
                yield scorer.error_rows([message])
            else:
                yield scorer.error_rows([message])
        if bad_rows:
            yield scorer.error_rows(bad_rows)
        if first and status == "complete":
            # empty upload: still send the header
            yield scorer._render({c: np.array([], dtype=object) for c in scorer.header_columns()})
    finally:
        plan.path.unlink(missing_ok=True)
        on_done(plan, scorer.rows, scorer.errors, status)


def sha256_file(path: Path) -> str:
    """SHA-256 hex of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_END = object()


async def prefetched(chunks: Iterator[bytes], *, depth: int = 2) -> AsyncIterator[bytes]:
    """Yield ``chunks`` while a worker thread already computes the next ones.

    Scoring a chunk (CPU) and sending the previous one (network) then overlap on two cores,
    instead of alternating. At most ``depth`` chunks wait in memory. When the client goes away
    the producer stops at its next chunk and closes ``chunks`` (which removes the upload).
    """
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(_END)
        except BaseException as e:  # handed to the consumer, which re-raises it
            put(e)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = await anyio.to_thread.run_sync(handoff.get, abandon_on_cancel=True)
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item
    finally:
        stop.set()
        # wake a getter thread abandoned by a cancelled request (a full queue wakes it anyway)
        with contextlib.suppress(queue.Full):
            handoff.put_nowait(_END)
