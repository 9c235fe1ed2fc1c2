"""Tests for fedrisk.data.validation: reading files, reporting every schema problem, coercion."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.data.schema import DatasetSchema, FeatureKind, FeatureSpec
from fedrisk.data.validation import (
    coerce_frame,
    load_party_frame,
    map_target,
    read_table,
    read_table_with_lines,
    validate_frame,
)
from fedrisk.errors import DataFileError, FedRiskError, SchemaError

SCHEMA = DatasetSchema(
    name="applications",
    id_column="ID",
    target_column="bad",
    features=(
        FeatureSpec(name="AGE", kind=FeatureKind.NUMERIC, min=18, max=100),
        FeatureSpec(
            name="INCOME", kind=FeatureKind.NUMERIC, min=0, transform="log1p", nullable=True
        ),
        FeatureSpec(name="EDUCATION", kind=FeatureKind.CATEGORICAL, categories=("1", "2", "3")),
        FeatureSpec(
            name="HOME", kind=FeatureKind.CATEGORICAL, categories=("own", "rent"), nullable=True
        ),
    ),
    meta_columns=("segment",),
)

GOOD_CSV = """ID,bad,AGE,INCOME,EDUCATION,HOME
1,0,25,1000.5,1,own
2,1,40,,2,rent
3,0,61,2500,3,
4,0,33,0,2,own
"""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(excinfo: pytest.ExceptionInfo[SchemaError]) -> list[str]:
    return excinfo.value.problems


def only_problem(problems: list[str], column: str) -> str:
    matches = [p for p in problems if p.startswith(f"column {column}:")]
    assert len(matches) == 1, problems
    return matches[0]


# ------------------------------------------------------------------ reading


def test_read_table_reads_csv_with_pandas_dtypes(tmp_path: Path) -> None:
    path = write(tmp_path / "good.csv", GOOD_CSV)

    frame = read_table(path)

    assert list(frame.columns) == ["ID", "bad", "AGE", "INCOME", "EDUCATION", "HOME"]
    assert frame["ID"].dtype == np.int64
    assert frame["INCOME"].dtype == np.float64
    assert math.isnan(frame["INCOME"][1])
    assert frame["HOME"].isna().tolist() == [False, False, True, False]
    pd.testing.assert_frame_equal(frame, pd.read_csv(path))


def test_read_table_reads_gzip_and_parquet_alike(tmp_path: Path) -> None:
    plain = write(tmp_path / "good.csv", GOOD_CSV)
    packed = tmp_path / "good.csv.gz"
    packed.write_bytes(gzip.compress(GOOD_CSV.encode()))
    parquet = tmp_path / "good.parquet"
    read_table(plain).to_parquet(parquet)

    expected = read_table(plain)

    pd.testing.assert_frame_equal(read_table(packed), expected)
    pd.testing.assert_frame_equal(read_table(parquet), expected)


def test_read_table_with_lines_counts_file_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "lines.csv", 'a,b\n1,"two\nlines"\n\n3,x\n')

    frame, lines = read_table_with_lines(path)

    assert frame["b"].tolist() == ["two\nlines", "x"]
    assert lines is not None
    assert lines.tolist() == [2, 5]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("fields.csv", "a,b,c\n1,2,3\n4,5\n6,7,8\n9,10,11,12\n", r"line 3 has 2, line 5 has 4"),
        ("quote.csv", 'a,b\n1,2\n3,"x"y\n', r"line 3: malformed CSV record"),
        ("open_quote.csv", 'a,b\n1,2\n3,"xy\n4,5\n', r"line 3: malformed CSV record"),
        ("empty.csv", "", r"the file is empty"),
        ("blank.csv", "\n\n", r"the file is empty"),
        ("spaces.csv", "\n\n  \n", r"line 3: column names must not be empty"),
        ("dup.csv", "a,b,a\n1,2,3\n", r"line 1: column names must be unique; got repeated a"),
        ("noname.csv", "a,,c\n1,2,3\n", r"line 1: column names must not be empty"),
        ("nul.csv", "a,b\n1,2\n3,\x004\n", r"line 3: contains a NUL byte"),
        ("notes.txt", "a,b\n1,2\n", r"must end in one of \.csv, \.csv\.gz, \.parquet"),
    ],
)
def test_malformed_csv_names_file_and_line(
    tmp_path: Path, name: str, content: str, expected: str
) -> None:
    path = write(tmp_path / name, content)

    with pytest.raises(DataFileError, match=expected) as excinfo:
        read_table(path)

    assert str(path) in str(excinfo.value)


def test_binary_garbage_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "garbage.csv"
    path.write_bytes(b"a,b\n1,2\n" + bytes(range(128, 256)) + b"\n")

    with pytest.raises(DataFileError, match=r"garbage\.csv: line 3: bytes are not UTF-8"):
        read_table(path)


def test_field_count_error_counts_every_bad_line(tmp_path: Path) -> None:
    rows = "".join("1,2\n" if i % 3 else "1\n" for i in range(30))
    path = write(tmp_path / "many.csv", "a,b\n" + rows)

    with pytest.raises(DataFileError, match=r"10 line\(s\) have a field count different"):
        read_table(path)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"ID,bad\n1,0\n", "not a valid gzip file"),
        (gzip.compress(GOOD_CSV.encode())[:-12], "not a valid gzip file"),
        (gzip.compress(b"a,b\n1,2\n\xff\xfe\n"), "line 3: bytes are not UTF-8"),
    ],
    ids=["not-gzip", "truncated", "binary-inside"],
)
def test_malformed_gzip_names_file(tmp_path: Path, payload: bytes, expected: str) -> None:
    path = tmp_path / "party.csv.gz"
    path.write_bytes(payload)

    with pytest.raises(DataFileError, match=expected) as excinfo:
        read_table(path)

    assert str(path) in str(excinfo.value)


def test_malformed_parquet_names_file(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    read_table(write(tmp_path / "good.csv", GOOD_CSV)).to_parquet(good)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1 this is not parquet at all PAR1")

    for path in (truncated, garbage):
        with pytest.raises(DataFileError, match="not a valid Parquet file") as excinfo:
            read_table(path)
        assert str(path) in str(excinfo.value)


def test_missing_file_and_directory_are_data_file_errors(tmp_path: Path) -> None:
    folder = tmp_path / "folder.csv"
    folder.mkdir()

    with pytest.raises(DataFileError, match="does not exist"):
        read_table(tmp_path / "absent.csv")
    with pytest.raises(DataFileError, match="is a directory"):
        read_table(folder)


def test_errors_are_builtin_compatible(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.csv", "a,b\n1\n")

    with pytest.raises(ValueError) as excinfo:
        read_table(path)

    assert isinstance(excinfo.value, FedRiskError)


def test_read_table_never_modifies_its_input(tmp_path: Path) -> None:
    plain = write(tmp_path / "good.csv", GOOD_CSV)
    packed = tmp_path / "good.csv.gz"
    packed.write_bytes(gzip.compress(GOOD_CSV.encode()))
    parquet = tmp_path / "good.parquet"
    pd.read_csv(plain).to_parquet(parquet)
    broken = write(tmp_path / "broken.csv", 'a,b\n1,"x"y\n')
    paths = [plain, packed, parquet, broken]
    before = {p: (sha256_of(p), p.stat().st_mtime_ns) for p in paths}

    for path in paths:
        with contextlib.suppress(DataFileError, SchemaError):
            load_party_frame(path, SCHEMA)

    assert {p: (sha256_of(p), p.stat().st_mtime_ns) for p in paths} == before


printable = st.text(st.characters(codec="utf-8", exclude_characters="\x00\r"), max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    numbers=st.lists(st.integers(-(10**12), 10**12), min_size=1, max_size=20),
    words=st.data(),
)
def test_csv_written_by_pandas_reads_back(numbers: list[int], words: st.DataObject) -> None:
    texts = [words.draw(printable.map(lambda t: "w" + t)) for _ in numbers]
    frame = pd.DataFrame({"n": numbers, "t": pd.Series(texts, dtype="str")})
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "frame.csv"
        frame.to_csv(path, index=False)

        result = read_table(path)

    pd.testing.assert_frame_equal(result, frame)


# ------------------------------------------------------------------ validation

BAD_CSV = """ID,bad,AGE,INCOME,EDUCATION,EXTRA
1,0,25,100,1,x
2,1,abc,200,2,x
2,0,17,300,9,x
4,2,130,-5,2,x
5,bad,,400,,x
6,0,40,500,1,x
7,,150,600,3,x
"""


def test_every_problem_is_reported_once_with_column_rule_count_and_lines(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "bad.csv", BAD_CSV)

    with pytest.raises(SchemaError) as excinfo:
        load_party_frame(path, SCHEMA)

    problems = problems_of(excinfo)
    message = str(excinfo.value)
    assert str(path) in message
    assert "lines are 1-based file lines" in message
    assert "column HOME: missing" in only_problem(problems, "HOME")
    assert any(p.startswith("unexpected columns") and "EXTRA" in p for p in problems)
    assert only_problem(problems, "ID") == (
        "column ID: 1 duplicate id (ids must be unique; each repeats an id of an earlier row), "
        "e.g. line 4"
    )
    age = [p for p in problems if p.startswith("column AGE:")]
    assert "column AGE: 1 value not a number in a numeric column ('abc'), e.g. line 3" in age
    assert "column AGE: 1 missing value but the column is not nullable, e.g. line 6" in age
    assert "column AGE: 3 values out of range [18, 100], e.g. lines 4, 5, 8" in age
    assert only_problem(problems, "INCOME") == (
        "column INCOME: 1 value below the minimum 0, e.g. line 5"
    )
    education = [p for p in problems if p.startswith("column EDUCATION:")]
    assert "column EDUCATION: 1 missing value but the column is not nullable, e.g. line 6" in (
        education
    )
    assert any(
        "1 value not among the allowed categories [1, 2, 3] (got '9')" in p for p in education
    )
    target = [p for p in problems if p.startswith("column bad:")]
    assert (
        "column bad: 1 missing target value (the target must be 0 or 1 on every row), e.g. line 8"
        in (target)
    )
    assert any("2 values not binary 0/1 ('2', 'bad'" in p and "lines 5, 6" in p for p in target)
    assert len(problems) == 11
    assert all(f"  - {p}" in message for p in problems)


def test_validate_frame_reports_data_rows(tmp_path: Path) -> None:
    frame = read_table(write(tmp_path / "bad.csv", BAD_CSV))

    with pytest.raises(SchemaError) as excinfo:
        validate_frame(frame, SCHEMA, source="bank_a upload")

    message = str(excinfo.value)
    assert message.startswith("bank_a upload does not match schema 'applications'")
    assert "rows are 1-based data rows" in message
    assert "column AGE: 3 values out of range [18, 100], e.g. rows 3, 4, 7" in message


def test_header_only_file_is_reported_empty(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.csv", "ID,bad,AGE,INCOME,EDUCATION,HOME\n")

    with pytest.raises(SchemaError) as excinfo:
        load_party_frame(path, SCHEMA)

    assert problems_of(excinfo) == ["the data has no rows (an empty file, or a header line only)"]


def test_examples_are_capped_at_five(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "ID": range(1, 21),
            "bad": 0,
            "AGE": [10] * 20,
            "INCOME": 1.0,
            "EDUCATION": "1",
            "HOME": "own",
        }
    )

    with pytest.raises(SchemaError) as excinfo:
        validate_frame(frame, SCHEMA)

    assert problems_of(excinfo) == [
        "column AGE: 20 values out of range [18, 100], e.g. rows 1, 2, 3, 4, 5"
    ]


def test_non_finite_and_bool_values_are_reported() -> None:
    frame = pd.DataFrame(
        {
            "ID": [1, 2],
            "bad": [True, False],
            "AGE": [np.inf, 30.0],
            "INCOME": [True, False],
            "EDUCATION": ["1", "2"],
            "HOME": ["own", "own"],
        }
    )

    with pytest.raises(SchemaError) as excinfo:
        validate_frame(frame, SCHEMA)

    problems = problems_of(excinfo)
    assert "column AGE: 1 value not finite (inf), e.g. row 1" in problems
    assert only_problem(problems, "INCOME").startswith(
        "column INCOME: 2 values not a number in a numeric column"
    )


def test_missing_ids_and_repeated_columns() -> None:
    frame = pd.DataFrame(
        [[None, 0, 30, 1.0, "1", "own"], [2, 0, 30, 1.0, "1", "own"]],
        columns=["ID", "bad", "AGE", "INCOME", "EDUCATION", "HOME"],
    )
    doubled = pd.concat([frame, frame[["AGE"]]], axis=1)

    with pytest.raises(SchemaError) as missing:
        validate_frame(frame, SCHEMA)
    with pytest.raises(SchemaError) as repeated:
        validate_frame(doubled, SCHEMA)

    assert problems_of(missing) == ["column ID: 1 missing id (every row needs an id), e.g. row 1"]
    assert problems_of(repeated) == ["columns must be unique; got repeated AGE"]


def test_valid_frame_passes_and_coerces(tmp_path: Path) -> None:
    path = write(tmp_path / "good.csv", GOOD_CSV)

    frame = load_party_frame(path, SCHEMA)

    assert list(frame.columns) == SCHEMA.columns
    assert frame["bad"].dtype == np.int64
    assert frame["AGE"].dtype == np.float64
    assert pd.api.types.is_string_dtype(frame["EDUCATION"].dtype)
    assert frame["EDUCATION"].tolist() == ["1", "2", "3", "2"]
    assert frame["HOME"].isna().tolist() == [False, False, True, False]


def test_coerce_frame_normalises_categories_target_and_order() -> None:
    frame = pd.DataFrame(
        {
            "segment": ["bank", "telecom"],
            "HOME": ["own", None],
            "EDUCATION": [1.0, 3.0],
            "INCOME": [1, 2],
            "AGE": ["30", "41"],
            "bad": [1.0, 0.0],
            "ID": ["a", "b"],
        }
    )

    out = coerce_frame(frame, SCHEMA)

    assert list(out.columns) == [*SCHEMA.columns, "segment"]
    assert out["EDUCATION"].tolist() == ["1", "3"]
    assert out["AGE"].tolist() == [30.0, 41.0]
    assert out["bad"].tolist() == [1, 0]
    assert out["bad"].dtype == np.int64
    assert frame["EDUCATION"].tolist() == [1.0, 3.0]  # input untouched


def test_coerce_frame_refuses_what_it_cannot_convert() -> None:
    frame = pd.DataFrame(
        {"ID": [1], "bad": [2], "AGE": [30], "INCOME": [1.0], "EDUCATION": ["1"], "HOME": ["own"]}
    )

    with pytest.raises(SchemaError, match="target column bad must hold 0 or 1"):
        coerce_frame(frame, SCHEMA)
    with pytest.raises(SchemaError, match="missing EDUCATION"):
        coerce_frame(frame.drop(columns=["EDUCATION"]), SCHEMA)


def test_map_target_maps_labels_and_reports_unknown_ones() -> None:
    frame = pd.DataFrame({"Status": ["good", "bad", "good"], "x": [1, 2, 3]})
    unknown = pd.DataFrame({"Status": ["good", "late", None]})

    mapped = map_target(
        frame, label_column="Status", mapping={"good": 0, "bad": 1}, target_column="bad"
    )

    assert list(mapped.columns) == ["bad", "x"]
    assert mapped["bad"].tolist() == [0, 1, 0]
    with pytest.raises(SchemaError) as excinfo:
        map_target(
            unknown, label_column="Status", mapping={"good": 0, "bad": 1}, target_column="bad"
        )
    assert problems_of(excinfo) == [
        "column Status: 1 missing label, e.g. row 3",
        "column Status: 1 value not among the labels [good, bad] (got 'late'), e.g. row 2",
    ]
