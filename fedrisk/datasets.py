"""Named credit datasets: seeded synthetic parties and loaders for the real files in the data dir.

Every loader validates the file against its schema (shipped as TOML in ``fedrisk/schemas``)
and returns coerced frames: numeric features ``float64``, categorical features strings,
target ``int64`` with 1 = bad. What each name means:

- ``synthetic``: :func:`fedrisk.synthetic.generate_pooled` (20 000 rows unless ``n_rows``),
  with a ``segment`` column (bank / ecommerce / telecom).
- ``taiwan``: ``UCI_Credit_Card.csv.gz``, 30 000 credit-card clients; ``SEX``, ``EDUCATION``
  and ``MARRIAGE`` are categorical, ``PAY_*`` numeric months late, ``LIMIT_BAL`` and
  ``PAY_AMT*`` log1p money; ``BILL_AMT*`` can be negative and stay untransformed.
- ``fate-homo``: FATE's horizontal split, the three party files pooled into ``frame`` with a
  ``party`` column (``guest``, ``host_1``, ``host_2``); ``test_frame`` is ``homo_test``.
- ``fate-hetero``: FATE's vertical split, guest (label, ``x0..x12``) and host (``x0..x9``)
  inner-joined on ``id``, features renamed ``guest_x*`` and ``host_x*``; both files must hold
  the same ids. :data:`FATE_HETERO_VIEWS` says which party holds which columns.
- ``give-credit``: FATE's 30 000-row Give Me Some Credit subset (z-scored ``x0..x9``).
- ``german``: UCI Statlog German credit; ``class`` 2 (bad) becomes ``bad`` = 1.
- ``lending-club``: Lending Club 2016Q1 sample; ``Class`` "bad" becomes ``bad`` = 1.
- ``credit-data``: Belanche credit data; ``Status`` "bad" becomes ``bad`` = 1; ``Home``,
  ``Marital``, ``Job``, ``Income``, ``Assets`` and ``Debt`` have missing values.

The last three files have no id column: ``id`` is added as the 1-based data row number.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from fedrisk.errors import ConfigError, DatasetNotFoundError, SchemaError
from fedrisk.schema import DatasetSchema, schema_from_toml
from fedrisk.synthetic import SYNTHETIC_SCHEMA, generate_pooled
from fedrisk.validation import map_target, read_table_with_lines, validate_and_coerce

__all__ = [
    "DATASET_FILES",
    "DATASET_NAMES",
    "DATA_DIR_ENV",
    "FATE_HETERO_VIEWS",
    "SYNTHETIC_DEFAULT_ROWS",
    "Dataset",
    "dataset_paths",
    "dataset_schema",
    "load_dataset",
    "resolve_data_dir",
]

DATASET_NAMES: tuple[str, ...] = (
    "synthetic",
    "taiwan",
    "fate-homo",
    "fate-hetero",
    "give-credit",
    "german",
    "lending-club",
    "credit-data",
)

DATA_DIR_ENV = "FEDRISK_DATA_DIR"
SYNTHETIC_DEFAULT_ROWS = 20_000

_FATE_HOMO_PARTIES = ("guest", "host_1", "host_2")

DATASET_FILES: Mapping[str, tuple[str, ...]] = {
    "taiwan": ("UCI_Credit_Card.csv.gz",),
    "fate-homo": (
        *(f"fate/default_credit_homo_{p}.csv.gz" for p in _FATE_HOMO_PARTIES),
        "fate/default_credit_homo_test.csv.gz",
    ),
    "fate-hetero": (
        "fate/default_credit_hetero_guest.csv.gz",
        "fate/default_credit_hetero_host.csv.gz",
    ),
    "give-credit": ("fate/give_credit_homo_test.csv.gz",),
    "german": ("german_credit.csv",),
    "lending-club": ("lending_club_2016q1_sample.csv",),
    "credit-data": ("credit_data_belanche.csv",),
}
"""The files each real dataset reads, relative to the data directory."""

FATE_HETERO_VIEWS: Mapping[str, tuple[str, ...]] = {
    "guest": tuple(f"guest_x{i}" for i in range(13)),
    "host": tuple(f"host_x{i}" for i in range(10)),
}
"""Feature columns of ``fate-hetero`` held by each party; the guest also holds the label."""


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: its rows, its schema and, when the source fixes one, a test split."""

    name: str
    frame: pd.DataFrame
    schema: DatasetSchema
    test_frame: pd.DataFrame | None = None


def _data_dir_candidates(explicit: Path | None) -> list[tuple[Path, str]]:
    if explicit is not None:
        return [(Path(explicit), "the data_dir argument")]
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env:
        return [(Path(from_env), f"the {DATA_DIR_ENV} environment variable")]
    beside_repo = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return [
        (beside_repo, "the default ../shared/data beside the fedrisk checkout"),
        (Path.cwd().parent / "shared" / "data", "the default ../shared/data from the working dir"),
    ]


def _resolve(explicit: Path | None) -> tuple[Path, str]:
    candidates = _data_dir_candidates(explicit)
    for path, origin in candidates:
        if path.is_dir():
            return path, origin
    return candidates[0]


def resolve_data_dir(explicit: Path | None = None) -> Path:
    """Return the directory holding the real data files.

    The first that applies: ``explicit``; the ``FEDRISK_DATA_DIR`` environment variable;
    ``../shared/data`` beside the repository holding this package; ``../shared/data``
    relative to the working directory. An explicit or environment path is returned even
    if it does not exist, so the error about a missing file names the place the user chose.
    """
    return _resolve(explicit)[0]


@cache
def dataset_schema(name: str) -> DatasetSchema:
    """Return the schema of dataset ``name`` (no data files needed).

    Raises
    ------
    ConfigError
        If ``name`` is not one of :data:`DATASET_NAMES`.
    """
    _check_name(name)
    if name == "synthetic":
        return SYNTHETIC_SCHEMA
    text = resources.files("fedrisk.schemas").joinpath(f"{name}.toml").read_text("utf-8")
    return schema_from_toml(text, source=f"fedrisk/schemas/{name}.toml")


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise ConfigError(f"dataset name must be one of {', '.join(DATASET_NAMES)}; got {name!r}")


def dataset_paths(name: str, *, data_dir: Path | None = None) -> tuple[Path, ...]:
    """Return the files dataset ``name`` reads (empty for ``synthetic``), existing or not."""
    _check_name(name)
    root = resolve_data_dir(data_dir)
    return tuple(root / relative for relative in DATASET_FILES.get(name, ()))


def load_dataset(
    name: str,
    *,
    data_dir: Path | None = None,
    rng: np.random.Generator | None = None,
    n_rows: int | None = None,
) -> Dataset:
    """Load dataset ``name``, validated against its schema.

    Parameters
    ----------
    name
        One of :data:`DATASET_NAMES`.
    data_dir
        Directory holding the real files; see :func:`resolve_data_dir`.
    rng
        Randomness for ``synthetic`` (default: a generator seeded with 0). Real datasets
        are read as they are and ignore it.
    n_rows
        Number of rows for ``synthetic`` (default 20 000); real datasets refuse it.

    Raises
    ------
    ConfigError
        If the name is unknown or ``n_rows`` is given for a real dataset.
    DatasetNotFoundError
        If a file is missing; the message gives the full path and how to set
        ``FEDRISK_DATA_DIR``.
    DataFileError, SchemaError
        If a file is malformed or does not match the dataset's schema.
    """
    _check_name(name)
    schema = dataset_schema(name)
    if name == "synthetic":
        generator = rng if rng is not None else np.random.default_rng(0)
        rows = SYNTHETIC_DEFAULT_ROWS if n_rows is None else n_rows
        frame = generate_pooled(n_rows=rows, rng=generator)
        return Dataset(name=name, frame=frame, schema=schema)
    if n_rows is not None:
        raise ConfigError(f"n_rows applies to the synthetic dataset only; got {n_rows} for {name}")

    root, origin = _resolve(data_dir)
    paths = [root / relative for relative in DATASET_FILES[name]]
    for path in paths:
        if not path.is_file():
            raise DatasetNotFoundError(
                f"dataset {name!r} needs the file {path.resolve()}, which does not exist "
                f"(data directory {root} from {origin}). Point {DATA_DIR_ENV} at the folder "
                f"holding the credit data files, e.g. "
                f"`export {DATA_DIR_ENV}=/path/to/shared/data`, or pass data_dir."
            )
    loader = _LOADERS[name]
    return loader(name, schema, paths)


_Loader = Callable[[str, DatasetSchema, list[Path]], Dataset]


def _read_validated(path: Path, schema: DatasetSchema) -> pd.DataFrame:
    frame, lines = read_table_with_lines(path)
    return validate_and_coerce(frame, schema, source=str(path), line_numbers=lines)


def _load_plain(name: str, schema: DatasetSchema, paths: list[Path]) -> Dataset:
    return Dataset(name=name, frame=_read_validated(paths[0], schema), schema=schema)


def _load_fate_homo(name: str, schema: DatasetSchema, paths: list[Path]) -> Dataset:
    parts: list[pd.DataFrame] = []
    for party, path in zip(_FATE_HOMO_PARTIES, paths, strict=False):
        part = _read_validated(path, schema)
        part["party"] = pd.Series([party] * len(part), index=part.index, dtype="str")
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    duplicated = frame[schema.id_column].duplicated()
    if duplicated.any():
        raise SchemaError(
            f"the fate-homo party files must hold disjoint ids; got {int(duplicated.sum())} "
            "ids in more than one party file"
        )
    test_frame = _read_validated(paths[-1], schema)
    return Dataset(name=name, frame=frame, schema=schema, test_frame=test_frame)


def _view_schema(schema: DatasetSchema, view: str, *, with_target: bool) -> DatasetSchema:
    return DatasetSchema(
        name=f"{schema.name}-{view}",
        id_column=schema.id_column,
        target_column=schema.target_column if with_target else None,
        features=tuple(schema.feature(n) for n in FATE_HETERO_VIEWS[view]),
    )


def _load_fate_hetero(name: str, schema: DatasetSchema, paths: list[Path]) -> Dataset:
    views: list[pd.DataFrame] = []
    for view, path in zip(FATE_HETERO_VIEWS, paths, strict=True):
        frame, lines = read_table_with_lines(path)
        renamed = frame.rename(
            columns={c: f"{view}_{c}" for c in frame.columns if str(c).startswith("x")}
        )
        view_schema = _view_schema(schema, view, with_target=view == "guest")
        views.append(
            validate_and_coerce(renamed, view_schema, source=str(path), line_numbers=lines)
        )
    guest, host = views
    only_guest = int((~guest[schema.id_column].isin(host[schema.id_column])).sum())
    only_host = int((~host[schema.id_column].isin(guest[schema.id_column])).sum())
    if only_guest or only_host:
        raise SchemaError(
            f"fate-hetero guest and host files must hold the same ids; got {only_guest} ids "
            f"only in {paths[0]} and {only_host} only in {paths[1]}"
        )
    joined = guest.merge(host, on=schema.id_column, how="inner", validate="one_to_one")
    return Dataset(name=name, frame=joined[schema.columns], schema=schema)


def _load_relabelled(label_column: str, mapping: Mapping[str, int]) -> _Loader:
    def load(name: str, schema: DatasetSchema, paths: list[Path]) -> Dataset:
        assert schema.target_column is not None
        path = paths[0]
        frame, lines = read_table_with_lines(path)
        frame = map_target(
            frame,
            label_column=label_column,
            mapping=mapping,
            target_column=schema.target_column,
            source=str(path),
            line_numbers=lines,
        )
        # These files have no id: the 1-based data row number is stable and traceable.
        frame.insert(0, schema.id_column, np.arange(1, len(frame) + 1, dtype=np.int64))
        coerced = validate_and_coerce(frame, schema, source=str(path), line_numbers=lines)
        return Dataset(name=name, frame=coerced, schema=schema)

    return load


_LOADERS: Mapping[str, _Loader] = {
    "taiwan": _load_plain,
    "fate-homo": _load_fate_homo,
    "fate-hetero": _load_fate_hetero,
    "give-credit": _load_plain,
    "german": _load_relabelled("class", {"1": 0, "2": 1}),
    "lending-club": _load_relabelled("Class", {"good": 0, "bad": 1}),
    "credit-data": _load_relabelled("Status", {"good": 0, "bad": 1}),
}
