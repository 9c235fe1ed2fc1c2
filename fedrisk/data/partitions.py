"""Horizontal partitioning of one frame into parties (IID, label, feature and quantity skew).

Every partition is seeded by the ``rng`` passed in, disjoint and complete: each row goes to
exactly one party, and within a party to exactly one of its train and test splits. Party
``i`` is named ``party_i``.

- ``iid``: a stratified random deal into parties of equal size and equal bad rate; each
  party holds two rows of each class when the data allows (a deal of few rows can leave a
  party one short, which a swap with another party fixes).
- ``dirichlet:<alpha>``: label skew. For each class, the shares of the parties are drawn
  from Dirichlet(alpha, ..., alpha); small alpha gives parties dominated by one class.
  Each party first gets two rows of each class (when the data allows), so both its train
  and test splits hold both classes; draws leaving a party with fewer than 20 rows are
  redrawn (up to 200 times).
- ``by:<column>``: feature skew. A numeric column is cut into contiguous value bands of
  about equal row counts (party 0 holds the lowest band; equal values never straddle two
  bands); a categorical column's categories are packed into groups of about equal row
  counts (largest first, party 0 the largest group). Missing values count as a category;
  for numeric columns they are dealt at random over the parties.
- ``quantity``: quantity skew, same bad rate everywhere. Party 0 holds 50 % of the rows,
  the smallest party about 4 % (less when there are many parties) and the parties between
  shrink geometrically; every party gets at least 40 rows and two rows of each class. With
  two parties the split is 90 / 10.

Each party's rows are split into train and test stratified by the target with
:func:`fedrisk.data.splits.stratified_split`: for a class with ``n >= 2`` rows in the party,
``round(test_fraction * n)`` of them, but at least 1 and at most ``n - 1``, go to test.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from fedrisk.data.schema import DatasetSchema, FeatureKind
from fedrisk.data.splits import stratified_split
from fedrisk.errors import ConfigError

__all__ = [
    "MIN_QUANTITY_ROWS",
    "PartitionSpec",
    "PartyData",
    "assign_parties",
    "parse_partition",
    "partition_frame",
]

IntArray = npt.NDArray[np.int64]

MIN_QUANTITY_ROWS = 40
_MIN_PER_CLASS = 2
_MIN_DIRICHLET_ROWS = 20
_DIRICHLET_ATTEMPTS = 200
_SYNTAX = (
    "'iid', 'dirichlet:<alpha>' (e.g. dirichlet:0.3), 'by:<column>' (e.g. by:AGE) or 'quantity'"
)


class PartitionSpec(BaseModel):
    """How to split a frame over parties; see :func:`parse_partition` for the text form."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["iid", "dirichlet", "by", "quantity"]
    alpha: float | None = None
    column: str | None = None

    @model_validator(mode="after")
    def _fields_match_kind(self) -> Self:
        if self.kind == "dirichlet":
            if self.alpha is None or not math.isfinite(self.alpha) or self.alpha <= 0:
                raise ValueError(f"alpha must be a positive number for dirichlet; got {self.alpha}")
        elif self.alpha is not None:
            raise ValueError(f"alpha applies to dirichlet only; got alpha for {self.kind}")
        if self.kind == "by":
            if not self.column:
                raise ValueError(f"column must name a column for by; got {self.column!r}")
        elif self.column is not None:
            raise ValueError(f"column applies to by only; got column for {self.kind}")
        return self

    def __str__(self) -> str:
        if self.kind == "dirichlet":
            return f"dirichlet:{self.alpha:g}"
        if self.kind == "by":
            return f"by:{self.column}"
        return self.kind


@dataclass(frozen=True)
class PartyData:
    """One party's rows: its train and test splits, and what sets the party apart."""

    name: str
    train: pd.DataFrame
    test: pd.DataFrame
    description: str = ""


def parse_partition(text: str) -> PartitionSpec:
    """Parse ``"iid"``, ``"dirichlet:0.3"``, ``"by:AGE"`` or ``"quantity"``.

    Raises
    ------
    ConfigError
        If the text has another form, alpha is not a positive number, or the column is empty.
    """
    raw = text.strip()
    kind, sep, argument = raw.partition(":")
    kind = kind.strip().lower()
    argument = argument.strip()
    try:
        if kind in ("iid", "quantity") and not sep:
            return PartitionSpec(kind=kind)
        if kind == "dirichlet" and sep:
            try:
                alpha = float(argument)
            except ValueError as e:
                raise ConfigError(
                    f"partition dirichlet alpha must be a positive number; got {argument!r}"
                ) from e
            return PartitionSpec(kind="dirichlet", alpha=alpha)
        if kind == "by" and sep and argument:
            return PartitionSpec(kind="by", column=argument)
    except ValidationError as e:
        message = "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in e.errors())
        raise ConfigError(f"partition {raw!r} is invalid: {message}") from e
    if kind == "dirichlet":
        raise ConfigError(f"partition dirichlet needs an alpha, e.g. dirichlet:0.3; got {text!r}")
    if kind == "by":
        raise ConfigError(f"partition by needs a column, e.g. by:AGE; got {text!r}")
    if kind in ("iid", "quantity"):
        raise ConfigError(f"partition {kind} takes no argument; got {text!r}")
    raise ConfigError(f"partition must be {_SYNTAX}; got {text!r}")


def _check_args(
    frame: pd.DataFrame, schema: DatasetSchema, n_parties: int, test_fraction: float
) -> None:
    if isinstance(n_parties, bool) or not isinstance(n_parties, int | np.integer) or n_parties < 1:
        raise ConfigError(f"n_parties must be a positive integer; got {n_parties!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be between 0 and 1 (exclusive); got {test_fraction}")
    if len(frame) < n_parties:
        raise ConfigError(
            f"frame must have at least one row per party; got {len(frame)} rows for "
            f"{n_parties} parties"
        )
    if schema.target_column is not None and schema.target_column not in frame.columns:
        raise ConfigError(
            f"frame must hold the target column {schema.target_column}; got columns "
            f"{list(frame.columns)}"
        )


def _class_codes(frame: pd.DataFrame, schema: DatasetSchema) -> IntArray:
    """Per-row class code for stratification (all zeros when the schema has no target)."""
    if schema.target_column is None:
        return np.zeros(len(frame), dtype=np.int64)
    codes, _ = pd.factorize(frame[schema.target_column], use_na_sentinel=False)
    return np.asarray(codes, dtype=np.int64)


def assign_parties(
    frame: pd.DataFrame,
    schema: DatasetSchema,
    spec: PartitionSpec,
    *,
    n_parties: int,
    rng: np.random.Generator,
) -> tuple[IntArray, list[str]]:
    """Return each row's party index (0-based) and a one-line description of each party.

    Raises
    ------
    ConfigError
        If the partition cannot be made: too few rows, an unknown column, fewer distinct
        values than parties, or label skew without a target.
    """
    _check_args(frame, schema, n_parties, 0.5)
    classes = _class_codes(frame, schema)
    if spec.kind == "iid":
        parties = _deal_stratified(classes, _equal_sizes(len(frame), n_parties), rng)
        _ensure_classes(parties, classes, n_parties, rng)
        return parties, _size_descriptions(parties, n_parties, "IID share")
    if spec.kind == "quantity":
        sizes = _quantity_sizes(len(frame), n_parties)
        parties = _deal_stratified(classes, sizes, rng)
        _ensure_classes(parties, classes, n_parties, rng)
        return parties, _size_descriptions(parties, n_parties, "quantity skew")
    if spec.kind == "dirichlet":
        if schema.target_column is None:
            raise ConfigError("partition dirichlet needs a target column; the schema has none")
        assert spec.alpha is not None
        parties = _dirichlet(classes, n_parties, spec.alpha, rng)
        return parties, _size_descriptions(parties, n_parties, f"Dirichlet({spec.alpha:g})")
    assert spec.column is not None
    return _by_column(frame, schema, spec.column, n_parties, rng)


def partition_frame(
    frame: pd.DataFrame,
    schema: DatasetSchema,
    spec: PartitionSpec,
    *,
    n_parties: int,
    rng: np.random.Generator,
    test_fraction: float = 0.2,
) -> list[PartyData]:
    """Split ``frame`` over ``n_parties`` parties, each with a stratified train/test split.

    Parameters
    ----------
    frame
        The rows to split (validated against ``schema``).
    schema
        The dataset schema: gives the target (for stratification and label skew) and the
        kind of a ``by`` column. A ``by`` column outside the schema (such as a meta column
        like ``segment``) is numeric when its dtype is numeric, categorical otherwise.
    spec
        The partition; see the module docstring.
    n_parties
        Number of parties, named ``party_0`` .. ``party_{n-1}``.
    rng
        The source of randomness: the same seed gives the same partition.
    test_fraction
        Share of each party's rows held out for its test split.

    Returns
    -------
    list[PartyData]
        One entry per party; frames keep the input's columns, with a fresh index.

    Raises
    ------
    ConfigError
        If the arguments are invalid or the partition cannot be made (see
        :func:`assign_parties`).
    """
    _check_args(frame, schema, n_parties, test_fraction)
    parties, descriptions = assign_parties(frame, schema, spec, n_parties=n_parties, rng=rng)
    classes = _class_codes(frame, schema)
    result: list[PartyData] = []
    for party in range(n_parties):
        rows = np.flatnonzero(parties == party)
        train, test = stratified_split(classes[rows], test_fraction=test_fraction, rng=rng)
        result.append(
            PartyData(
                name=f"party_{party}",
                train=frame.iloc[rows[train]].reset_index(drop=True),
                test=frame.iloc[rows[test]].reset_index(drop=True),
                description=descriptions[party],
            )
        )
    return result


def _equal_sizes(n_rows: int, n_parties: int) -> IntArray:
    base, extra = divmod(n_rows, n_parties)
    return np.array([base + (i < extra) for i in range(n_parties)], dtype=np.int64)


def _stratified_order(classes: IntArray, rng: np.random.Generator) -> IntArray:
    """A random row order in which every prefix has about the overall class mix."""
    key = np.empty(len(classes))
    for code in np.unique(classes):
        members = np.flatnonzero(classes == code)
        # Systematic positions (k + u) / n_c interleave the classes evenly.
        key[rng.permutation(members)] = (np.arange(len(members)) + rng.random()) / len(members)
    return np.asarray(np.lexsort((rng.random(len(classes)), key)), dtype=np.int64)


def _deal_stratified(classes: IntArray, sizes: IntArray, rng: np.random.Generator) -> IntArray:
    """Cut a stratified random order into consecutive chunks of the given sizes."""
    order = _stratified_order(classes, rng)
    parties = np.empty(len(classes), dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for party, (start, stop) in enumerate(itertools.pairwise(starts)):
        parties[order[start:stop]] = party
    return parties


def _quantity_shares(n_parties: int) -> npt.NDArray[np.float64]:
    if n_parties == 1:
        return np.array([1.0])
    if n_parties == 2:
        return np.array([0.9, 0.1])
    rest = 0.5
    others = n_parties - 1
    smallest = min(0.04, rest / others / 2.0)
    # Find the ratio r < 1 with smallest * sum_{j < others} r**-j == rest (bisection; the
    # left side falls as r grows and equals smallest * others <= rest at r = 1).
    low, high = 1e-6, 1.0
    for _ in range(200):
        r = (low + high) / 2.0
        total = smallest * sum(r**-j for j in range(others))
        low, high = (r, high) if total > rest else (low, r)
    r = (low + high) / 2.0
    tail = [smallest * r ** -(others - 1 - i) for i in range(others)]
    shares = np.array([rest, *tail])
    return np.asarray(shares / shares.sum(), dtype=np.float64)


def _quantity_sizes(n_rows: int, n_parties: int) -> IntArray:
    if n_rows < MIN_QUANTITY_ROWS * n_parties:
        raise ConfigError(
            f"partition quantity needs at least {MIN_QUANTITY_ROWS} rows per party; got "
            f"{n_rows} rows for {n_parties} parties"
        )
    shares = _quantity_shares(n_parties)
    raw = shares * n_rows
    sizes = np.floor(raw).astype(np.int64)
    leftover = n_rows - int(sizes.sum())
    sizes[np.argsort(-(raw - sizes), kind="stable")[:leftover]] += 1
    # Raise tiny parties to the minimum, taking the rows from the largest party.
    for party in range(1, n_parties):
        deficit = MIN_QUANTITY_ROWS - int(sizes[party])
        if deficit > 0:
            sizes[party] += deficit
            sizes[0] -= deficit
    return sizes


def _ensure_classes(
    parties: IntArray, classes: IntArray, n_parties: int, rng: np.random.Generator
) -> None:
    """Swap rows between parties until each holds a few rows of every class (sizes kept).

    A party short of a class takes a row of it from party 0 (the largest party under
    quantity skew) or, when party 0 has none to spare, from the party with the most to
    spare, and gives back a row of a class it has to spare.
    """
    codes = np.unique(classes)
    need = {int(c): min(_MIN_PER_CLASS, int((classes == c).sum()) // n_parties) for c in codes}

    def count(party: int, code: int) -> int:
        return int(((parties == party) & (classes == code)).sum())

    for code in need:
        for party in range(n_parties):
            while count(party, code) < need[code]:
                spare = [count(p, code) - need[code] if p != party else 0 for p in range(n_parties)]
                donor = 0 if spare[0] > 0 else int(np.argmax(spare))
                surplus = [c for c in need if c != code and count(party, c) > need[c]]
                if spare[donor] <= 0 or not surplus:
                    break
                give = rng.choice(np.flatnonzero((parties == donor) & (classes == code)))
                take = rng.choice(np.flatnonzero((parties == party) & np.isin(classes, surplus)))
                parties[give], parties[take] = party, donor


def _dirichlet(
    classes: IntArray, n_parties: int, alpha: float, rng: np.random.Generator
) -> IntArray:
    codes = np.unique(classes)
    members = {int(c): rng.permutation(np.flatnonzero(classes == c)) for c in codes}
    reserve = {c: min(_MIN_PER_CLASS, len(m) // n_parties) for c, m in members.items()}
    min_rows = min(_MIN_DIRICHLET_ROWS, len(classes) // n_parties)
    best: dict[int, IntArray] | None = None
    best_smallest = -1
    for _ in range(_DIRICHLET_ATTEMPTS):
        counts: dict[int, IntArray] = {}
        for c, m in members.items():
            free = len(m) - reserve[c] * n_parties
            shares = rng.dirichlet(np.full(n_parties, alpha))
            raw = shares * free
            count = np.floor(raw).astype(np.int64)
            count[np.argsort(-(raw - count), kind="stable")[: free - int(count.sum())]] += 1
            counts[c] = count + reserve[c]
        smallest = int(np.sum(list(counts.values()), axis=0).min())
        if smallest > best_smallest:
            best, best_smallest = counts, smallest
        if smallest >= min_rows:
            break
    assert best is not None
    parties = np.empty(len(classes), dtype=np.int64)
    for c, m in members.items():
        starts = np.concatenate([[0], np.cumsum(best[c])])
        for party in range(n_parties):
            parties[m[starts[party] : starts[party + 1]]] = party
    return parties


def _size_descriptions(parties: IntArray, n_parties: int, label: str) -> list[str]:
    total = len(parties)
    return [
        f"{label}: {int((parties == p).sum())} rows ({100.0 * (parties == p).sum() / total:.1f} %)"
        for p in range(n_parties)
    ]


def _by_column(
    frame: pd.DataFrame,
    schema: DatasetSchema,
    column: str,
    n_parties: int,
    rng: np.random.Generator,
) -> tuple[IntArray, list[str]]:
    if column not in frame.columns:
        raise ConfigError(
            f"partition by column must be one of the frame's columns "
            f"{[str(c) for c in frame.columns]}; got {column!r}"
        )
    values = frame[column]
    if column in schema.feature_names:
        numeric = schema.feature(column).kind is FeatureKind.NUMERIC
    else:
        numeric = pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(
            values.dtype
        )
    if numeric:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        return _numeric_bands(numbers, column, n_parties, rng)
    return _category_groups(values, column, n_parties, rng)


def _numeric_bands(
    values: npt.NDArray[np.float64], column: str, n_parties: int, rng: np.random.Generator
) -> tuple[IntArray, list[str]]:
    present = ~np.isnan(values)
    uniques, counts = np.unique(values[present], return_counts=True)
    if len(uniques) < n_parties:
        raise ConfigError(
            f"partition by:{column} needs at least {n_parties} distinct values for "
            f"{n_parties} parties; got {len(uniques)}"
        )
    cumulative = np.cumsum(counts)
    total = int(cumulative[-1])
    # cut[i] = index of the last distinct value in band i: nearest to the ideal quantile,
    # while leaving at least one distinct value for every band after it.
    cuts: list[int] = []
    previous = -1
    for band in range(1, n_parties):
        low, high = previous + 1, len(uniques) - 1 - (n_parties - band)
        target = band * total / n_parties
        window = cumulative[low : high + 1]
        cut = low + int(np.argmin(np.abs(window - target)))
        cuts.append(cut)
        previous = cut
    band_of_unique = np.searchsorted(np.array(cuts, dtype=np.int64), np.arange(len(uniques)))
    parties = np.empty(len(values), dtype=np.int64)
    parties[present] = band_of_unique[np.searchsorted(uniques, values[present])]
    parties[~present] = rng.integers(0, n_parties, size=int((~present).sum()))
    bounds = np.array([-1, *cuts, len(uniques) - 1], dtype=np.int64)
    descriptions = []
    for band in range(n_parties):
        low_value, high_value = uniques[bounds[band] + 1], uniques[bounds[band + 1]]
        descriptions.append(f"{column} in [{low_value:g}, {high_value:g}]")
    if not present.all():
        descriptions = [d + " (and some missing values)" for d in descriptions]
    return parties, descriptions


def _category_groups(
    values: pd.Series, column: str, n_parties: int, rng: np.random.Generator
) -> tuple[IntArray, list[str]]:
    missing = np.asarray(values.isna().to_numpy(), dtype=bool)
    labels = np.array(
        ["<missing>" if m else _category_label(v) for v, m in zip(values, missing, strict=True)],
        dtype=object,
    )
    categories, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if len(categories) < n_parties:
        raise ConfigError(
            f"partition by:{column} needs at least {n_parties} distinct values for "
            f"{n_parties} parties; got {len(categories)}"
        )
    # Longest-processing-time packing: biggest category first into the lightest group;
    # a random order first breaks ties between equal counts.
    shuffled = rng.permutation(len(categories))
    order = shuffled[np.argsort(-counts[shuffled], kind="stable")]
    loads = np.zeros(n_parties, dtype=np.int64)
    members: list[list[str]] = [[] for _ in range(n_parties)]
    group_of = np.empty(len(categories), dtype=np.int64)
    for index in order:
        group = int(np.argmin(loads))
        group_of[index] = group
        loads[group] += counts[index]
        members[group].append(str(categories[index]))
    # Party 0 gets the largest group.
    rank = np.empty(n_parties, dtype=np.int64)
    rank[np.argsort(-loads, kind="stable")] = np.arange(n_parties)
    parties = rank[group_of[inverse]].astype(np.int64)
    descriptions = [""] * n_parties
    for group in range(n_parties):
        shown = sorted(members[group])
        text = ", ".join(shown[:8]) + (f", … ({len(shown)} values)" if len(shown) > 8 else "")
        descriptions[int(rank[group])] = f"{column} in {{{text}}}"
    return parties, descriptions


def _category_label(value: object) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)
