"""Tests for fedrisk.data.datasets: data-dir resolution, missing files, and every real dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedrisk.data.datasets import (
    DATA_DIR_ENV,
    DATASET_FILES,
    DATASET_NAMES,
    FATE_HETERO_VIEWS,
    dataset_paths,
    dataset_schema,
    load_dataset,
    resolve_data_dir,
)
from fedrisk.data.schema import FeatureKind
from fedrisk.data.validation import validate_frame
from fedrisk.errors import ConfigError, DatasetNotFoundError, SchemaError

REAL_NAMES = [n for n in DATASET_NAMES if n != "synthetic"]


def require_files(name: str) -> None:
    missing = [p for p in dataset_paths(name) if not p.is_file()]
    if missing:
        pytest.skip(
            f"real dataset {name!r} is not available: {missing[0]} is missing "
            f"(set {DATA_DIR_ENV} to the shared data folder)"
        )


# ------------------------------------------------------------------ resolution and errors


def test_explicit_data_dir_wins_over_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "from-env"))

    assert resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert resolve_data_dir() == tmp_path / "from-env"


def test_default_data_dir_is_shared_data_beside_the_checkout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    beside_repo = Path(__file__).resolve().parents[4].parent / "shared" / "data"

    resolved = resolve_data_dir()

    if beside_repo.is_dir():
        assert resolved == beside_repo
    else:
        assert resolved.parts[-2:] == ("shared", "data")


def test_missing_file_names_full_path_and_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)

    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_dataset("taiwan", data_dir=tmp_path)

    message = str(excinfo.value)
    assert str((tmp_path / "UCI_Credit_Card.csv.gz").resolve()) in message
    assert f"export {DATA_DIR_ENV}=" in message
    assert "data_dir argument" in message
    assert isinstance(excinfo.value, FileNotFoundError)


def test_missing_file_from_environment_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "nowhere"))

    with pytest.raises(DatasetNotFoundError, match=f"the {DATA_DIR_ENV} environment variable"):
        load_dataset("german")


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"dataset name must be one of synthetic, taiwan"):
        load_dataset("tiawan")


def test_n_rows_is_for_synthetic_only() -> None:
    with pytest.raises(ConfigError, match="n_rows applies to the synthetic dataset only"):
        load_dataset("german", n_rows=10)


def test_every_name_has_a_schema_and_files() -> None:
    for name in DATASET_NAMES:
        schema = dataset_schema(name)
        assert schema.target_column is not None
        assert (name == "synthetic") == (name not in DATASET_FILES)


def test_fate_hetero_views_cover_its_features() -> None:
    schema = dataset_schema("fate-hetero")

    held = [c for view in FATE_HETERO_VIEWS.values() for c in view]

    assert sorted(held) == sorted(schema.feature_names)


# ------------------------------------------------------------------ synthetic


def test_synthetic_is_seeded_and_validates() -> None:
    first = load_dataset("synthetic", rng=np.random.default_rng(5), n_rows=3000)
    again = load_dataset("synthetic", rng=np.random.default_rng(5), n_rows=3000)
    default = load_dataset("synthetic", n_rows=500)

    pd.testing.assert_frame_equal(first.frame, again.frame)
    validate_frame(first.frame, first.schema)
    assert set(first.frame["segment"]) == {"bank", "ecommerce", "telecom"}
    assert len(default.frame) == 500
    assert first.test_frame is None


# ------------------------------------------------------------------ real data

EXPECTED = {
    # name: (rows, positive rate from shared/data/README.md)
    "taiwan": (30_000, 0.2212),
    "fate-homo": (24_000, 0.2220),
    "fate-hetero": (30_000, 0.2212),
    "give-credit": (30_000, 0.0670),
    "german": (1_000, 0.3000),
    "lending-club": (9_857, 0.0525),
    "credit-data": (4_454, 0.2815),
}


@pytest.mark.realdata
@pytest.mark.parametrize("name", REAL_NAMES)
def test_real_dataset_validates_against_its_own_schema(name: str) -> None:
    require_files(name)

    dataset = load_dataset(name)

    schema = dataset.schema
    assert schema.target_column is not None
    validate_frame(dataset.frame, schema, source=name)
    rows, rate = EXPECTED[name]
    assert len(dataset.frame) == rows
    assert dataset.frame[schema.target_column].mean() == pytest.approx(rate, abs=5e-4)
    assert dataset.frame[schema.target_column].dtype == np.int64
    for spec in schema.features:
        column = dataset.frame[spec.name]
        if spec.kind is FeatureKind.NUMERIC:
            assert column.dtype == np.float64, spec.name
        else:
            assert pd.api.types.is_string_dtype(column.dtype), spec.name
        assert spec.nullable or not column.isna().any(), spec.name
        if spec.transform == "log1p":
            assert (column.dropna() >= 0).all(), spec.name


@pytest.mark.realdata
def test_taiwan_types_and_transforms() -> None:
    require_files("taiwan")

    dataset = load_dataset("taiwan")

    schema = dataset.schema
    assert set(dataset.frame["SEX"]) == {"1", "2"}
    assert schema.feature("EDUCATION").kind is FeatureKind.CATEGORICAL
    assert schema.feature("PAY_0").kind is FeatureKind.NUMERIC
    assert schema.feature("LIMIT_BAL").transform == "log1p"
    assert schema.feature("PAY_AMT3").transform == "log1p"
    assert schema.feature("BILL_AMT1").transform == "none"
    assert (dataset.frame["BILL_AMT1"] < 0).any()


@pytest.mark.realdata
def test_fate_homo_pools_the_parties_and_keeps_the_test_file() -> None:
    require_files("fate-homo")

    dataset = load_dataset("fate-homo")

    assert dataset.frame["party"].value_counts().to_dict() == {
        "guest": 8000,
        "host_1": 8000,
        "host_2": 8000,
    }
    assert dataset.test_frame is not None
    assert len(dataset.test_frame) == 6000
    validate_frame(dataset.test_frame, dataset.schema)
    all_ids = pd.concat([dataset.frame["id"], dataset.test_frame["id"]])
    assert all_ids.is_unique
    assert len(all_ids) == 30_000


@pytest.mark.realdata
def test_fate_hetero_joins_guest_and_host_on_id() -> None:
    require_files("fate-hetero")
    require_files("taiwan")

    hetero = load_dataset("fate-hetero").frame
    taiwan = load_dataset("taiwan").frame

    joined = hetero.merge(taiwan, left_on="id", right_on="ID")
    assert len(joined) == 30_000
    assert (joined["y"] == joined["default.payment.next.month"]).all()
    # host_x0 is LIMIT_BAL z-scored: a perfect linear relation.
    assert np.corrcoef(joined["host_x0"], joined["LIMIT_BAL"])[0, 1] == pytest.approx(1.0)


@pytest.mark.realdata
def test_relabelled_datasets_map_bad_to_one() -> None:
    for name in ("german", "lending-club", "credit-data"):
        require_files(name)
    german = load_dataset("german").frame
    lending = load_dataset("lending-club").frame
    credit = load_dataset("credit-data").frame

    raw_german = pd.read_csv(dataset_paths("german")[0])
    raw_lending = pd.read_csv(dataset_paths("lending-club")[0])
    assert ((raw_german["class"] == 2).astype(int) == german["bad"]).all()
    assert ((raw_lending["Class"] == "bad").astype(int) == lending["bad"]).all()
    assert german["id"].tolist() == list(range(1, 1001))
    assert "addr_state" in lending.columns
    assert credit.isna().sum()[lambda s: s > 0].to_dict() == {
        "Home": 6,
        "Marital": 1,
        "Job": 2,
        "Income": 381,
        "Assets": 47,
        "Debt": 18,
    }


@pytest.mark.realdata
def test_a_corrupted_copy_is_reported_by_file_line(tmp_path: Path) -> None:
    require_files("german")
    source = dataset_paths("german")[0]
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[5] = "A19," + lines[5].split(",", 1)[1]  # file line 6: an unknown code
    (tmp_path / source.name).write_text("".join(lines), encoding="utf-8")
    relabelled = lines.copy()
    relabelled[8] = relabelled[8].rstrip("\n")[:-1] + "3\n"  # file line 9: class 3
    (tmp_path / "relabelled").mkdir()
    (tmp_path / "relabelled" / source.name).write_text("".join(relabelled), encoding="utf-8")

    with pytest.raises(SchemaError) as bad_code:
        load_dataset("german", data_dir=tmp_path)
    with pytest.raises(SchemaError) as bad_label:
        load_dataset("german", data_dir=tmp_path / "relabelled")

    assert bad_code.value.problems == [
        "column checking_status: 1 value not among the allowed categories "
        "[A11, A12, A13, A14] (got 'A19'), e.g. line 6"
    ]
    assert bad_label.value.problems == [
        "column class: 1 value not among the labels [1, 2] (got '3'), e.g. line 9"
    ]


@pytest.mark.realdata
def test_loading_never_modifies_the_files(tmp_path: Path) -> None:
    require_files("credit-data")
    copy = tmp_path / DATASET_FILES["credit-data"][0]
    shutil.copy(dataset_paths("credit-data")[0], copy)
    before = copy.read_bytes()

    load_dataset("credit-data", data_dir=tmp_path)

    assert copy.read_bytes() == before
