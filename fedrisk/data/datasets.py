"""Named credit datasets: seeded synthetic parties and loaders for the real files in the data dir.

Every loader validates the file against its schema (shipped as TOML in ``fedrisk/data/schemas``)
and returns coerced frames: numeric features ``float64``, categorical features strings,
target ``int64`` with 1 = bad. What each name means:

- ``synthetic``: :func:`fedrisk.data.synthetic.generate_pooled` (20 000 rows unless ``n_rows``),
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

Derived datasets (:data:`DERIVED_DATASET_NAMES`) are computed from a real file on load:

- ``taiwan-collection``: the C-card (collection) target derived from ``taiwan`` by
  :func:`derive_collection_frame`: among accounts delinquent in one month, are they still
  delinquent the next month (1 = not cured = bad)? 7 700 rows, bad rate 63.2 %. Nothing in it
  is synthetic.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from fedrisk.data.catalog import DATASET_NAMES, DERIVED_DATASET_NAMES
from fedrisk.data.schema import DatasetSchema, schema_from_toml
from fedrisk.data.synthetic import SYNTHETIC_SCHEMA, generate_pooled
from fedrisk.data.validation import map_target, read_table_with_lines, validate_and_coerce
from fedrisk.errors import ConfigError, DatasetNotFoundError, SchemaError

__all__ = [
    "BILL_BY_MONTH",
    "COLLECTION_MONTHS",
    "DATASET_FILES",
    "DATASET_NAMES",
    "DATA_DIR_ENV",
    "DERIVED_DATASET_NAMES",
    "FATE_HETERO_VIEWS",
    "PAID_BY_MONTH",
    "STATUS_BY_MONTH",
    "SYNTHETIC_DEFAULT_ROWS",
    "Dataset",
    "dataset_paths",
    "dataset_schema",
    "derive_collection_frame",
    "load_dataset",
    "resolve_data_dir",
]

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
    "taiwan-collection": ("UCI_Credit_Card.csv.gz",),
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
    beside_repo = Path(__file__).resolve().parents[2].parent / "shared" / "data"
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
        If ``name`` is not one of :data:`DATASET_NAMES` or :data:`DERIVED_DATASET_NAMES`.
    """
    _check_name(name)
    if name == "synthetic":
        return SYNTHETIC_SCHEMA
    text = resources.files("fedrisk.data.schemas").joinpath(f"{name}.toml").read_text("utf-8")
    return schema_from_toml(text, source=f"fedrisk/data/schemas/{name}.toml")


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES and name not in DERIVED_DATASET_NAMES:
        known = ", ".join((*DATASET_NAMES, *DERIVED_DATASET_NAMES))
        raise ConfigError(f"dataset name must be one of {known}; got {name!r}")


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
        One of :data:`DATASET_NAMES` or :data:`DERIVED_DATASET_NAMES`.
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


COLLECTION_MONTHS: tuple[str, ...] = (
    "2005-04",
    "2005-05",
    "2005-06",
    "2005-07",
    "2005-08",
    "2005-09",
)
"""The six observed months of the Taiwan data, oldest first."""

# Taiwan's monthly columns in calendar order (April ... September 2005). The source numbers
# them backwards and skips PAY_1: PAY_0/BILL_AMT1/PAY_AMT1 are September, ..._6 are April.
STATUS_BY_MONTH = ("PAY_6", "PAY_5", "PAY_4", "PAY_3", "PAY_2", "PAY_0")
BILL_BY_MONTH = tuple(f"BILL_AMT{k}" for k in range(6, 0, -1))
PAID_BY_MONTH = tuple(f"PAY_AMT{k}" for k in range(6, 0, -1))
_STATIC_COLUMNS = ("ID", "LIMIT_BAL", "SEX", "EDUCATION", "MARRIAGE", "AGE")
_COLLECTION_LAGS = 2


def derive_collection_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Derive the C-card (collection) rows and target from Taiwan credit-card accounts.

    Definition
    ----------
    Months run April (index 0) to September 2005 (index 5); an account is *delinquent* in a
    month when its repayment status ``PAY_*`` is >= 1 (months past due; -2, -1 and 0 mean no
    consumption, paid in full and revolving credit, all paid duly).

    - **Who is in the data:** accounts delinquent in at least one month from April to August
      (a month that has a following month). Accounts never delinquent there are not in
      collections and are left out.
    - **One row per account, at entry:** the row is taken at the account's *first* delinquent
      month ``m`` in April ... August (its entry into collections), so rows are independent.
      The first month, not the last, because choosing the last delinquent month would peek at
      the future: an account whose last delinquent month is before August is, by that very
      choice, not delinquent the month after, so the label would leak into the selection.
      The first delinquent month depends on months up to ``m`` only.
    - **Target** ``not_cured``: 1 (bad) when the account is still delinquent in month
      ``m + 1`` (status >= 1, whatever the number of months), 0 (good) when it paid (status
      <= 0).
    - **Features**, only what is known at the end of month ``m``: ``LIMIT_BAL``, ``SEX``,
      ``EDUCATION``, ``MARRIAGE``, ``AGE``; ``ENTRY_MONTH`` (``"2005-04"`` ... ``"2005-08"``);
      ``MONTHS_LATE`` (status in ``m``); ``BILL_AMT`` and ``PAY_AMT`` (bill and payment in
      ``m``); ``BILL_AMT_PREV1/2``, ``PAY_AMT_PREV1/2`` and ``STATUS_PREV1/2`` for the one and
      two months before ``m`` (missing when that is before April 2005); ``UTILISATION`` =
      ``BILL_AMT / LIMIT_BAL`` (missing when the limit is 0). Nothing from ``m + 1`` or later
      is used, and the source's own target (default in October) is dropped.

    Parameters
    ----------
    frame
        Taiwan rows with ``ID``, the five static columns and every ``PAY_*``, ``BILL_AMT*``
        and ``PAY_AMT*`` column (raw or as loaded by ``load_dataset("taiwan")``).

    Returns
    -------
    pandas.DataFrame
        One row per selected account, in input order, with ``ID``, the features above and
        ``not_cured`` (int64). Not yet validated: :func:`load_dataset` validates it against
        the ``taiwan-collection`` schema.

    Raises
    ------
    SchemaError
        If a needed column is missing or a status is not a number.

    Notes
    -----
    In this file status 1 appears only in September, so entries (April ... August) start at 2
    months past due; a September status of 1 (partly paid) still counts as not cured. ``AGE``
    is recorded once, so it may be a few months later than ``m``; that adds no outcome
    information.
    """
    needed = (*_STATIC_COLUMNS, *STATUS_BY_MONTH, *BILL_BY_MONTH, *PAID_BY_MONTH)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"the collection derivation needs every Taiwan column; missing {missing}",
            problems=[f"{c}: column missing" for c in missing],
        )
    try:
        status = frame[list(STATUS_BY_MONTH)].to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise SchemaError(
            "the PAY_* status columns must be numbers; got non-numeric values",
            problems=["PAY_*: non-numeric values"],
        ) from e
    if np.isnan(status).any():
        raise SchemaError(
            "the PAY_* status columns must have no missing values; got some",
            problems=["PAY_*: missing values"],
        )
    bills = frame[list(BILL_BY_MONTH)].to_numpy(dtype=np.float64)
    paid = frame[list(PAID_BY_MONTH)].to_numpy(dtype=np.float64)
    delinquent = status[:, :-1] >= 1.0  # months that have a following month
    rows = np.flatnonzero(delinquent.any(axis=1))
    entry = np.argmax(delinquent[rows], axis=1)  # first delinquent month

    def lagged(values: npt.NDArray[np.float64], lag: int) -> npt.NDArray[np.float64]:
        month = entry - lag
        out = np.full(len(rows), np.nan)
        known = month >= 0
        out[known] = values[rows[known], month[known]]
        return out

    limit = frame["LIMIT_BAL"].to_numpy(dtype=np.float64)[rows]
    bill_now = lagged(bills, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        utilisation = np.where(limit > 0, bill_now / limit, np.nan)
    derived = frame.iloc[rows][list(_STATIC_COLUMNS)].reset_index(drop=True)
    derived["ENTRY_MONTH"] = np.asarray(COLLECTION_MONTHS, dtype=object)[entry]
    derived["MONTHS_LATE"] = lagged(status, 0)
    derived["BILL_AMT"] = bill_now
    for lag in range(1, _COLLECTION_LAGS + 1):
        derived[f"BILL_AMT_PREV{lag}"] = lagged(bills, lag)
    derived["PAY_AMT"] = lagged(paid, 0)
    for lag in range(1, _COLLECTION_LAGS + 1):
        derived[f"PAY_AMT_PREV{lag}"] = lagged(paid, lag)
    for lag in range(1, _COLLECTION_LAGS + 1):
        derived[f"STATUS_PREV{lag}"] = lagged(status, lag)
    derived["UTILISATION"] = utilisation
    derived["not_cured"] = (status[rows, entry + 1] >= 1.0).astype(np.int64)
    return derived


def _load_collection(name: str, schema: DatasetSchema, paths: list[Path]) -> Dataset:
    accounts = _read_validated(paths[0], dataset_schema("taiwan"))
    derived = derive_collection_frame(accounts)
    frame = validate_and_coerce(derived, schema, source=f"{paths[0]} (derived {name})")
    return Dataset(name=name, frame=frame, schema=schema)


_LOADERS: Mapping[str, _Loader] = {
    "taiwan": _load_plain,
    "fate-homo": _load_fate_homo,
    "fate-hetero": _load_fate_hetero,
    "give-credit": _load_plain,
    "german": _load_relabelled("class", {"1": 0, "2": 1}),
    "lending-club": _load_relabelled("Class", {"good": 0, "bad": 1}),
    "credit-data": _load_relabelled("Status", {"good": 0, "bad": 1}),
    "taiwan-collection": _load_collection,
}
