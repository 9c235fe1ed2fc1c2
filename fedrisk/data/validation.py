"""Reading party data files and checking them against a dataset schema, reporting every problem."""

from __future__ import annotations

import csv
import gzip
import io
import math
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fedrisk.data.schema import DatasetSchema, FeatureKind, FeatureSpec
from fedrisk.errors import DataFileError, SchemaError

__all__ = [
    "NA_TOKENS",
    "SUPPORTED_SUFFIXES",
    "coerce_frame",
    "load_party_frame",
    "map_target",
    "read_table",
    "read_table_with_lines",
    "validate_and_coerce",
    "validate_frame",
]

SUPPORTED_SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz", ".parquet")

# The CSV cells read as missing: pandas' default list, so files behave as they do in read_csv.
NA_TOKENS: frozenset[str] = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)

_MAX_EXAMPLES = 5
_MAX_SHOWN_VALUES = 3
_MAX_VALUE_CHARS = 24
_MAX_FIELD_ERRORS = 5

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def read_table(path: Path) -> pd.DataFrame:
    """Read a party data file: ``.csv``, ``.csv.gz`` or ``.parquet``.

    CSV cells are UTF-8 text separated by commas with ``"`` quoting; the first line holds the
    column names. Columns whose non-missing cells all parse as numbers become ``int64`` (no
    missing cells) or ``float64``; other columns become strings. The cells in
    :data:`NA_TOKENS` (as in ``pandas.read_csv``) are missing values. Blank lines are skipped.

    Parameters
    ----------
    path
        The file to read. It is opened read-only and never modified.

    Returns
    -------
    pandas.DataFrame
        The table, with a fresh ``RangeIndex``.

    Raises
    ------
    DataFileError
        If the file does not exist, has an unsupported extension, or is malformed: bad gzip
        stream, not UTF-8 text, binary data, bad quoting, rows whose field count differs from
        the header (every such line is counted), duplicate or empty column names, or an
        unreadable Parquet file. The message names the file and, for CSV, the line.
    """
    frame, _ = _read_table_with_lines(Path(path))
    return frame


def _suffix_of(path: Path) -> str | None:
    name = path.name.lower()
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return None


def _read_table_with_lines(path: Path) -> tuple[pd.DataFrame, IntArray | None]:
    """Read ``path``; for CSV also return the 1-based file line where each data row starts."""
    suffix = _suffix_of(path)
    if suffix is None:
        raise DataFileError(
            f"data file must end in one of {', '.join(SUPPORTED_SUFFIXES)}; got {path}"
        )
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise DataFileError(f"cannot read {path}: the file {what}")
    if suffix == ".parquet":
        return _read_parquet(path), None
    return _read_csv(path, compressed=suffix == ".csv.gz")


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
        frame: pd.DataFrame = table.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataFileError(f"cannot read {path}: not a valid Parquet file ({e})") from e
    names = [str(c) for c in frame.columns]
    _check_header(names, path=path, where="")
    frame.columns = pd.Index(names)
    return frame.reset_index(drop=True)


def _read_bytes(path: Path, *, compressed: bool) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataFileError(f"cannot read {path}: {e.strerror or e}") from e
    if not compressed:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        # gzip.BadGzipFile is an OSError; a truncated stream raises EOFError.
        raise DataFileError(f"cannot read {path}: not a valid gzip file ({e})") from e


def _read_csv(path: Path, *, compressed: bool) -> tuple[pd.DataFrame, IntArray]:
    raw = _read_bytes(path, compressed=compressed)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataFileError(
            f"cannot read {path}: line {line}: bytes are not UTF-8 text "
            f"(byte 0x{raw[e.start]:02x} at offset {e.start}); is this a binary file?"
        ) from e
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise DataFileError(
            f"cannot read {path}: line {line}: contains a NUL byte; is this a binary file?"
        )
    header, header_line, lines = _scan_csv(text, path=path)
    _check_header(header, path=path, where=f"line {header_line}: ")
    try:
        # The scan above proved the structure sound; pandas' C parser does the typing fast and
        # exactly as pandas.read_csv would.
        frame = pd.read_csv(io.StringIO(text), low_memory=False, skip_blank_lines=True)
    except (ValueError, pd.errors.ParserError) as e:
        raise DataFileError(f"cannot read {path}: malformed CSV ({e})") from e
    if len(frame) != len(lines) or list(frame.columns) != header:
        # pandas and the csv module read a record differently (e.g. a whitespace-only line):
        # fall back to typing the scanned cells ourselves so rows and lines stay aligned.
        frame = _frame_from_records(text, header)
    return frame.reset_index(drop=True), lines


def _scan_csv(text: str, *, path: Path) -> tuple[list[str], int, IntArray]:
    """Check the CSV structure; return the header, its line and each data row's start line."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    header_line = 0
    lines: list[int] = []
    bad_fields: list[tuple[int, int]] = []
    n_bad_fields = 0
    start = 1
    try:
        for record in reader:
            if not record:  # a blank line
                pass
            elif header is None:
                header, header_line = record, start
            elif len(record) != len(header):
                n_bad_fields += 1
                if len(bad_fields) < _MAX_FIELD_ERRORS:
                    bad_fields.append((start, len(record)))
            else:
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataFileError(
            f"cannot read {path}: line {start}: malformed CSV record ({e}); "
            "check the quoting of this line"
        ) from e
    if header is None:
        raise DataFileError(f"cannot read {path}: the file is empty (no header line)")
    if n_bad_fields:
        examples = ", ".join(f"line {ln} has {n}" for ln, n in bad_fields)
        raise DataFileError(
            f"cannot read {path}: {n_bad_fields} line(s) have a field count different from the "
            f"{len(header)} columns of the header (line {header_line}); e.g. {examples}"
        )
    return header, header_line, np.asarray(lines, dtype=np.int64)


def _frame_from_records(text: str, header: list[str]) -> pd.DataFrame:
    records = [r for r in csv.reader(io.StringIO(text, newline=""), strict=True) if r][1:]
    columns = list(zip(*records, strict=True)) if records else [() for _ in header]
    return pd.DataFrame(
        {name: _column_from_text(values) for name, values in zip(header, columns, strict=True)},
        index=pd.RangeIndex(len(records)),
    )


def _check_header(names: Sequence[str], *, path: Path, where: str) -> None:
    empty = [i + 1 for i, name in enumerate(names) if not name.strip()]
    if empty:
        raise DataFileError(
            f"cannot read {path}: {where}column names must not be empty; "
            f"got an empty name at position(s) {', '.join(map(str, empty))}"
        )
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    if repeated:
        raise DataFileError(
            f"cannot read {path}: {where}column names must be unique; "
            f"got repeated {', '.join(repeated)}"
        )


def _column_from_text(values: Sequence[str]) -> pd.Series:
    """Turn CSV cells into a numeric column when every present cell is a number, else text."""
    cells = pd.Series(values, dtype=object)
    missing = cells.isin(list(NA_TOKENS)).to_numpy()
    if missing.all():
        return pd.Series(np.full(len(cells), np.nan), dtype=np.float64)
    present = cells[~missing]
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.notna().all() and numbers.dtype.kind in "iuf":
        if not missing.any() and numbers.dtype.kind in "iu":
            return numbers.reset_index(drop=True)
        out = np.full(len(cells), np.nan)
        out[~missing] = numbers.to_numpy(dtype=np.float64)
        return pd.Series(out, dtype=np.float64)
    return cells.where(~missing, np.nan).astype("str")


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def validate_frame(frame: pd.DataFrame, schema: DatasetSchema, *, source: str = "frame") -> None:
    """Check ``frame`` against ``schema`` and raise one error listing every problem found.

    The checks: missing required columns and unexpected ones; an empty frame; for numeric
    features, text that is not a number, infinities, values outside ``[min, max]`` and
    missing values in non-nullable columns; for categorical features, values that are not
    among the categories and missing values; a target that is missing or not binary 0/1;
    missing or duplicate ids. Meta columns are optional and not checked.

    Parameters
    ----------
    frame
        The data, as read by :func:`read_table` or built in memory.
    schema
        The schema the data must satisfy.
    source
        What the data is called in the error message (a file name, a party name).

    Raises
    ------
    SchemaError
        With one line per problem in ``problems``: the column, the rule broken, how many
        values break it and up to five example rows (1-based data rows: row 1 is the first
        row after the header).

    Notes
    -----
    Messages quote offending category, text and target values (truncated) because they are
    needed to fix the file, but never numeric feature values, which may be personal data.
    """
    problems = _find_problems(frame, schema, line_numbers=None)
    if problems:
        raise _schema_error(problems, schema=schema, source=source, line_numbers=None)


def _schema_error(
    problems: list[str], *, schema: DatasetSchema, source: str, line_numbers: IntArray | None
) -> SchemaError:
    where = (
        "lines are 1-based file lines (the header is line 1)"
        if line_numbers is not None
        else "rows are 1-based data rows, row 1 being the first after the header"
    )
    listing = "\n".join(f"  - {p}" for p in problems)
    message = (
        f"{source} does not match schema {schema.name!r}: {len(problems)} problem(s) "
        f"({where}):\n{listing}"
    )
    return SchemaError(message, problems)


def _find_problems(
    frame: pd.DataFrame, schema: DatasetSchema, *, line_numbers: IntArray | None
) -> list[str]:
    problems: list[str] = []
    names = [str(c) for c in frame.columns]
    present = set(names)

    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    if repeated:
        problems.append(f"columns must be unique; got repeated {', '.join(repeated)}")
    if len(frame) == 0:
        problems.append("the data has no rows (an empty file, or a header line only)")

    roles: list[tuple[str, str]] = [(schema.id_column, "id")]
    if schema.target_column is not None:
        roles.append((schema.target_column, "target"))
    roles.extend((f.name, f"{f.kind.value} feature") for f in schema.features)
    for column, role in roles:
        if column not in present:
            problems.append(f"column {column}: missing (the schema needs it as the {role} column)")
    known = {c for c, _ in roles} | set(schema.meta_columns)
    unexpected = [n for n in names if n not in known]
    if unexpected:
        problems.append(
            f"unexpected columns not in schema {schema.name!r}: {', '.join(unexpected)}"
        )
    if repeated:
        return problems  # per-column checks are ambiguous when names repeat

    where = _RowFormatter(line_numbers)
    if schema.id_column in present:
        problems += _check_id(frame[schema.id_column], schema.id_column, where)
    if schema.target_column is not None and schema.target_column in present:
        problems += _check_target(frame[schema.target_column], schema.target_column, where)
    for spec in schema.features:
        if spec.name not in present:
            continue
        if spec.kind is FeatureKind.NUMERIC:
            problems += _check_numeric(frame[spec.name], spec, where)
        else:
            problems += _check_categorical(frame[spec.name], spec, where)
    return problems


class _RowFormatter:
    """Formats example positions as data rows or file lines."""

    def __init__(self, line_numbers: IntArray | None) -> None:
        self._lines = line_numbers

    def __call__(self, mask: BoolArray) -> str:
        positions = np.flatnonzero(mask)[:_MAX_EXAMPLES]
        if self._lines is not None:
            return "e.g. line" + _plural(len(positions)) + " " + _join(self._lines[positions])
        return "e.g. row" + _plural(len(positions)) + " " + _join(positions + 1)


def _plural(n: int) -> str:
    return "s" if n > 1 else ""


def _join(numbers: npt.NDArray[np.int64]) -> str:
    return ", ".join(str(int(n)) for n in numbers)


def _count(mask: BoolArray, noun: str) -> str:
    n = int(mask.sum())
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _show_values(values: pd.Series, mask: BoolArray) -> str:
    distinct: list[str] = []
    for value in values[mask]:
        text = str(value)
        if len(text) > _MAX_VALUE_CHARS:
            text = text[: _MAX_VALUE_CHARS - 1] + "…"
        if text not in distinct:
            distinct.append(text)
        if len(distinct) > _MAX_SHOWN_VALUES:
            break
    shown = ", ".join(repr(v) for v in distinct[:_MAX_SHOWN_VALUES])
    return shown + (", …" if len(distinct) > _MAX_SHOWN_VALUES else "")


def _format_number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _isna(column: pd.Series) -> BoolArray:
    return np.asarray(column.isna().to_numpy(), dtype=bool)


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column.dtype) and not pd.api.types.is_bool_dtype(
        column.dtype
    )


def _numbers(column: pd.Series) -> tuple[FloatArray, BoolArray]:
    """Return the column as float64 and a mask of present cells that are not numbers."""
    if _is_numeric(column):
        values = np.asarray(column.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
        return values, np.zeros(len(column), dtype=bool)
    if pd.api.types.is_bool_dtype(column.dtype):
        return np.full(len(column), np.nan), ~_isna(column)
    objects = column.astype(object)
    parsed = pd.to_numeric(objects, errors="coerce")
    values = np.asarray(parsed.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
    return values, np.isnan(values) & ~_isna(column)


def _category_text(column: pd.Series) -> pd.Series:
    """Render categorical cells as strings; integral numbers lose their ``.0`` (1.0 -> "1")."""
    out = np.full(len(column), np.nan, dtype=object)
    if _is_numeric(column):
        values = np.asarray(column.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)
        present = ~np.isnan(values)
        integral = present & np.isfinite(values) & (np.abs(values) < 2**53)
        integral &= np.floor(np.where(integral, values, 0.0)) == values
        out[integral] = values[integral].astype(np.int64).astype(str)
        other = present & ~integral
        out[other] = [repr(float(v)) for v in values[other]]
    else:
        missing = _isna(column)
        for i, value in enumerate(column.astype(object).to_numpy()):
            if not missing[i]:
                out[i] = _one_category_text(value)
    return pd.Series(out, index=column.index, dtype="str")


def _one_category_text(value: object) -> str:
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        return _format_number(number) if math.isfinite(number) else repr(number)
    return str(value)


def _check_id(column: pd.Series, name: str, where: _RowFormatter) -> list[str]:
    problems: list[str] = []
    missing = _isna(column)
    if missing.any():
        problems.append(
            f"column {name}: {_count(missing, 'missing id')} (every row needs an id), "
            f"{where(missing)}"
        )
    duplicated = np.asarray(column.duplicated(keep="first").to_numpy(), dtype=bool) & ~missing
    if duplicated.any():
        problems.append(
            f"column {name}: {_count(duplicated, 'duplicate id')} (ids must be unique; each "
            f"repeats an id of an earlier row), {where(duplicated)}"
        )
    return problems


def _check_target(column: pd.Series, name: str, where: _RowFormatter) -> list[str]:
    problems: list[str] = []
    missing = _isna(column)
    if missing.any():
        problems.append(
            f"column {name}: {_count(missing, 'missing target value')} (the target must be "
            f"0 or 1 on every row), {where(missing)}"
        )
    if pd.api.types.is_bool_dtype(column.dtype):
        return problems
    values, not_number = _numbers(column)
    bad = ~missing & (not_number | ~np.isin(values, (0.0, 1.0)))
    if bad.any():
        problems.append(
            f"column {name}: {_count(bad, 'value')} not binary 0/1 ({_show_values(column, bad)}; "
            f"the target must be 1 = bad or 0 = good), {where(bad)}"
        )
    return problems


def _check_numeric(column: pd.Series, spec: FeatureSpec, where: _RowFormatter) -> list[str]:
    problems: list[str] = []
    name = spec.name
    values, not_number = _numbers(column)
    if not_number.any():
        problems.append(
            f"column {name}: {_count(not_number, 'value')} not a number in a numeric column "
            f"({_show_values(column, not_number)}), {where(not_number)}"
        )
    missing = np.isnan(values) & ~not_number
    if missing.any() and not spec.nullable:
        problems.append(
            f"column {name}: {_count(missing, 'missing value')} but the column is not "
            f"nullable, {where(missing)}"
        )
    infinite = np.isinf(values)
    if infinite.any():
        problems.append(
            f"column {name}: {_count(infinite, 'value')} not finite (inf), {where(infinite)}"
        )
    finite = np.isfinite(values)
    low = finite & (values < spec.min) if spec.min is not None else np.zeros_like(finite)
    high = finite & (values > spec.max) if spec.max is not None else np.zeros_like(finite)
    outside = low | high
    if outside.any():
        if spec.min is not None and spec.max is not None:
            rule = f"out of range [{_format_number(spec.min)}, {_format_number(spec.max)}]"
        elif spec.min is not None:
            rule = f"below the minimum {_format_number(spec.min)}"
        else:
            assert spec.max is not None
            rule = f"above the maximum {_format_number(spec.max)}"
        problems.append(f"column {name}: {_count(outside, 'value')} {rule}, {where(outside)}")
    return problems


def _check_categorical(column: pd.Series, spec: FeatureSpec, where: _RowFormatter) -> list[str]:
    problems: list[str] = []
    assert spec.categories is not None
    text = _category_text(column)
    missing = _isna(text)
    if missing.any() and not spec.nullable:
        problems.append(
            f"column {spec.name}: {_count(missing, 'missing value')} but the column is not "
            f"nullable, {where(missing)}"
        )
    unknown = ~missing & ~np.asarray(text.isin(list(spec.categories)).to_numpy(), dtype=bool)
    if unknown.any():
        allowed = ", ".join(spec.categories[:12])
        if len(spec.categories) > 12:
            allowed += f", … ({len(spec.categories)} in all)"
        problems.append(
            f"column {spec.name}: {_count(unknown, 'value')} not among the allowed categories "
            f"[{allowed}] (got {_show_values(text, unknown)}), {where(unknown)}"
        )
    return problems


# --------------------------------------------------------------------------------------------
# Coercion
# --------------------------------------------------------------------------------------------


def coerce_frame(frame: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    """Return a copy of ``frame`` with normalised dtypes, in schema column order.

    Numeric features become ``float64``; categorical features become strings (``1`` and
    ``1.0`` both become ``"1"``) with NaN for missing; the target becomes ``int64``. Columns
    come in the order id, target, features, then whichever meta columns are present; other
    columns are dropped. Call :func:`validate_frame` first: this function does not check
    ranges or categories.

    Raises
    ------
    SchemaError
        If a required column is missing or a value cannot be converted.
    """
    missing = [c for c in schema.columns if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"frame must have every schema column; missing {', '.join(missing)}",
            [f"column {c}: missing" for c in missing],
        )
    out: dict[str, pd.Series] = {schema.id_column: frame[schema.id_column].copy()}
    if schema.target_column is not None:
        out[schema.target_column] = _coerce_target(frame[schema.target_column], schema)
    for spec in schema.features:
        column = frame[spec.name]
        if spec.kind is FeatureKind.NUMERIC:
            values, not_number = _numbers(column)
            if not_number.any():
                raise SchemaError(
                    f"column {spec.name} must hold numbers; got text such as "
                    f"{_show_values(column, not_number)}; run validate_frame for a full report"
                )
            out[spec.name] = pd.Series(values, index=frame.index, dtype=np.float64)
        else:
            out[spec.name] = _category_text(column)
    for meta in schema.meta_columns:
        if meta in frame.columns:
            out[meta] = frame[meta].copy()
    return pd.DataFrame(out, index=frame.index)


def _coerce_target(column: pd.Series, schema: DatasetSchema) -> pd.Series:
    if pd.api.types.is_bool_dtype(column.dtype) and not column.isna().any():
        return column.astype(np.int64)
    values, not_number = _numbers(column)
    if not_number.any() or not np.isin(values, (0.0, 1.0)).all():
        bad = not_number | ~np.isin(values, (0.0, 1.0))
        raise SchemaError(
            f"target column {schema.target_column} must hold 0 or 1 on every row; "
            f"got {_show_values(column, bad)}; run validate_frame for a full report"
        )
    return pd.Series(values.astype(np.int64), index=column.index, dtype=np.int64)


def load_party_frame(path: Path, schema: DatasetSchema) -> pd.DataFrame:
    """Read a party's data file, validate it against ``schema`` and return it coerced.

    Problems in CSV files are reported by file line (the header is line 1).

    Raises
    ------
    DataFileError
        If the file cannot be read (see :func:`read_table`).
    SchemaError
        If the data breaks the schema (see :func:`validate_frame`).
    """
    path = Path(path)
    frame, line_numbers = _read_table_with_lines(path)
    problems = _find_problems(frame, schema, line_numbers=line_numbers)
    if problems:
        raise _schema_error(problems, schema=schema, source=str(path), line_numbers=line_numbers)
    return coerce_frame(frame, schema)


def validate_and_coerce(
    frame: pd.DataFrame,
    schema: DatasetSchema,
    *,
    source: str,
    line_numbers: IntArray | None = None,
) -> pd.DataFrame:
    """Validate ``frame`` (reporting file lines when given) and return it coerced.

    Used by loaders that reshape a file's rows one-to-one before validating, so problems
    can still point at file lines.
    """
    problems = _find_problems(frame, schema, line_numbers=line_numbers)
    if problems:
        raise _schema_error(problems, schema=schema, source=source, line_numbers=line_numbers)
    return coerce_frame(frame, schema)


def read_table_with_lines(path: Path) -> tuple[pd.DataFrame, IntArray | None]:
    """Like :func:`read_table`, also returning each CSV data row's 1-based file line.

    The second item is ``None`` for Parquet files, which have no lines.
    """
    return _read_table_with_lines(Path(path))


def map_target(
    frame: pd.DataFrame,
    *,
    label_column: str,
    mapping: Mapping[str, int],
    target_column: str,
    source: str = "frame",
    line_numbers: IntArray | None = None,
) -> pd.DataFrame:
    """Return a copy of ``frame`` with a text or coded label turned into a 0/1 target.

    Parameters
    ----------
    frame
        The data holding ``label_column``.
    label_column
        The column with the original labels, for example ``"good"``/``"bad"`` or ``1``/``2``.
    mapping
        Label text -> 0 or 1 (1 = bad). Labels are compared as text; integral numbers as
        their integer text (``2`` and ``2.0`` are both ``"2"``).
    target_column
        Name of the new column, put where ``label_column`` was.
    source, line_numbers
        How problems name the data and its rows (see :func:`load_party_frame`).

    Raises
    ------
    SchemaError
        If the label column is missing or holds a label not in ``mapping`` or no label.
    """
    if set(mapping.values()) - {0, 1}:
        raise SchemaError(f"mapping must send labels to 0 or 1; got {dict(mapping)}")
    if label_column not in frame.columns:
        problem = f"column {label_column}: missing (it holds the labels)"
        raise SchemaError(f"{source}: {problem}", [problem])
    text = _category_text(frame[label_column])
    missing = _isna(text)
    unknown = ~missing & ~np.asarray(text.isin(list(mapping)).to_numpy(), dtype=bool)
    where = _RowFormatter(line_numbers)
    problems: list[str] = []
    if missing.any():
        problems.append(
            f"column {label_column}: {_count(missing, 'missing label')}, {where(missing)}"
        )
    if unknown.any():
        problems.append(
            f"column {label_column}: {_count(unknown, 'value')} not among the labels "
            f"[{', '.join(mapping)}] (got {_show_values(text, unknown)}), {where(unknown)}"
        )
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise SchemaError(f"{source} has bad labels:\n{listing}", problems)
    out = frame.copy()
    position = list(out.columns).index(label_column)
    target = text.map(dict(mapping)).astype(np.int64)
    out = out.drop(columns=[label_column])
    out.insert(position, target_column, target.to_numpy())
    return out
