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
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
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

from fedrisk.data.schema import FeatureKind, FeatureSpec
from fedrisk.decisions.lifecycle import ApplicationPolicy, BehaviourPolicy
from server.scoring.errors import InvalidInputError
from server.scoring.registry import LoadedModel
from server.scoring.settings import Stage

logger = logging.getLogger(__name__)

UploadFormat = Literal["csv", "parquet"]

# Labels of the lifecycle codes (0 favourable, 1 middle, 2 unfavourable), in the API's words.
_DECISIONS = np.array(["approve", "manual_review", "decline"], dtype=object)
_RISK_BANDS = np.array(["raise_eligible", "keep", "cut"], dtype=object)


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
    """Vectorised ``fedrisk.decisions.lifecycle.decide_application`` without fraud input.

    Uses the policy's own cut-offs and limit bands (``decision_codes``, ``band_indices``).

    Returns
    -------
    tuple of numpy.ndarray
        Decision, credit limit, price tier and APR per row (NaN/None where none is offered).
    """
    code = policy.decision_codes(pd_, score)
    band = policy.band_indices(score)
    no_band = band < 0
    # As decide_application: an approval without an offer goes to review; a decline gets none.
    code = np.where((code == 0) & no_band, 1, code)
    offered = (code != 2) & ~no_band
    idx = np.clip(band, 0, len(policy.limit_bands) - 1)
    bands = policy.limit_bands
    limits = np.array([b.limit for b in bands], dtype=np.float64)[idx]
    aprs = np.array([np.nan if b.apr is None else b.apr for b in bands], dtype=np.float64)[idx]
    tier = np.array([b.price_tier for b in bands], dtype=object)[idx]
    tier[~offered] = None
    return (
        _DECISIONS[code],
        np.where(offered, limits, np.nan),
        tier,
        np.where(offered, aprs, np.nan),
    )


def behaviour_band(
    pd_: npt.NDArray[np.float64], score: npt.NDArray[np.float64], *, policy: BehaviourPolicy
) -> npt.NDArray[np.object_]:
    """B-card risk band per row from the policy cut-offs: raise_eligible, keep or cut."""
    return _RISK_BANDS[policy.risk_band_codes(pd_, score)]


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


@dataclass
class _CheckedRows:
    """One batch's feature columns as arrays, and each row's first problem (None if valid)."""

    columns: dict[str, Any]
    problems: npt.NDArray[np.object_]
    bad: npt.NDArray[np.bool_]

    def flag(self, mask: npt.NDArray[np.bool_], message: str) -> None:
        """Record ``message`` for the rows in ``mask``; a row keeps its first problem."""
        hit = mask & ~self.bad
        if hit.any():
            self.problems[hit] = message
            self.bad[hit] = True


def _check_rows(batch: pa.RecordBatch, specs: Sequence[FeatureSpec]) -> _CheckedRows:
    """Convert every feature column of ``batch`` and flag the rows a value makes invalid."""
    n = batch.num_rows
    present = set(batch.schema.names)
    checked = _CheckedRows(
        columns={}, problems=np.full(n, None, dtype=object), bad=np.zeros(n, dtype=bool)
    )
    for spec in specs:
        numeric = spec.kind is FeatureKind.NUMERIC
        if spec.name not in present:
            checked.columns[spec.name] = (
                np.full(n, np.nan) if numeric else np.full(n, None, dtype=object)
            )
        elif numeric:
            checked.columns[spec.name] = _check_numeric(batch.column(spec.name), spec, checked)
        else:
            checked.columns[spec.name] = _check_category(batch.column(spec.name), spec, checked)
    return checked


def _check_numeric(
    column: pa.Array | pa.ChunkedArray, spec: FeatureSpec, checked: _CheckedRows
) -> npt.NDArray[np.float64]:
    floats, bad = _to_float(column)
    checked.flag(bad, f"{spec.name} must be a number")
    if not spec.nullable:
        checked.flag(np.isnan(floats) & ~bad, f"{spec.name} is required")
    lo = -np.inf if spec.min is None else spec.min
    hi = np.inf if spec.max is None else spec.max
    checked.flag(
        ~np.isnan(floats) & ((floats < lo) | (floats > hi)),
        f"{spec.name} must be in [{spec.min}, {spec.max}]",
    )
    return floats


def _check_category(
    column: pa.Array | pa.ChunkedArray, spec: FeatureSpec, checked: _CheckedRows
) -> npt.NDArray[np.object_]:
    texts = _to_text(column)
    as_arrow = pa.array(texts, type=pa.string(), from_pandas=True)
    missing = np.asarray(pc.is_null(as_arrow))
    if not spec.nullable:
        checked.flag(missing, f"{spec.name} is required")
    value_set = pa.array(list(spec.categories or ()), type=pa.string())
    known = np.asarray(pc.is_in(as_arrow, value_set=value_set))
    checked.flag(~known & ~missing, f"{spec.name} must be one of the schema's categories")
    return texts


def _reason_columns(reasons: list[list[str]], ok: npt.NDArray[np.bool_]) -> dict[str, Any]:
    """``reason_1`` .. ``reason_4`` (None where a row has fewer reasons or was not scored)."""
    out: dict[str, Any] = {}
    for i in range(4):
        col = np.full(len(ok), None, dtype=object)
        col[ok] = [r[i] if i < len(r) else None for r in reasons]
        out[f"reason_{i + 1}"] = col
    return out


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
        checked = _check_rows(batch, self._specs)
        ok = ~checked.bad
        out: dict[str, Any] = {"row": np.arange(self.rows + 1, self.rows + n + 1, dtype=np.int64)}
        self.rows += n
        self.errors += int(checked.bad.sum())
        if self.plan.id_column:
            out[self.plan.id_column] = _to_text(batch.column(self.plan.id_column))
        pd_col, score_col, reasons = self._score_rows(checked.columns, ok)
        out |= {"pd": pd_col, "score": score_col}
        out |= self._stage_columns(pd_col, score_col, ok)
        if self.plan.with_reasons:
            out |= _reason_columns(reasons, ok)
        out["error"] = checked.problems
        return self._render(out)

    def _score_rows(
        self, columns: dict[str, Any], ok: npt.NDArray[np.bool_]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], list[list[str]]]:
        """PD, score and reason codes of the valid rows (NaN and no reasons for the others)."""
        n = len(ok)
        pd_col = np.full(n, np.nan)
        score_col = np.full(n, np.nan)
        if not ok.any():
            return pd_col, score_col, []
        # object dtype keeps pandas from converting the strings to Arrow-backed arrays,
        # which cost more than the whole model pass
        good = pd.DataFrame(
            {k: pd.Series(v[ok], dtype=v.dtype, copy=False) for k, v in columns.items()}
        )
        scored = self.plan.model.score_frame(good)
        pd_col[ok] = scored.pd
        score_col[ok] = scored.score
        reasons: list[list[str]] = []
        if self.plan.with_reasons:
            reasons = [[r.code for r in rr] for rr in self.plan.model.reasons(scored)]
        return pd_col, score_col, reasons

    def _stage_columns(
        self,
        pd_col: npt.NDArray[np.float64],
        score_col: npt.NDArray[np.float64],
        ok: npt.NDArray[np.bool_],
    ) -> dict[str, Any]:
        """The stage's decision columns (None where a row was not scored)."""
        if self.plan.stage == "application":
            decision, limit, tier, apr = decide_application_batch(
                pd_col, score_col, policy=self.application
            )
            decision[~ok] = None
            tier[~ok] = None
            return {"decision": decision, "credit_limit": limit, "price_tier": tier, "apr": apr}
        if self.plan.stage == "behaviour":
            band = behaviour_band(pd_col, score_col, policy=self.behaviour)
            band[~ok] = None
            return {"risk_band": band}
        return {"recovery_probability": 1.0 - pd_col}

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
