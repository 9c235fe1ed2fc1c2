"""Tests for fedrisk.data.partitions: parsing, and seeded, disjoint, complete, skewed partitions."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.data.partitions import (
    MIN_QUANTITY_ROWS,
    PartitionSpec,
    PartyData,
    parse_partition,
    partition_frame,
)
from fedrisk.data.schema import DatasetSchema, FeatureKind, FeatureSpec
from fedrisk.data.synthetic import SYNTHETIC_SCHEMA, generate_pooled
from fedrisk.errors import ConfigError

SCHEMA = DatasetSchema(
    name="toy",
    id_column="id",
    target_column="bad",
    features=(
        FeatureSpec(name="age", kind=FeatureKind.NUMERIC, min=18, max=100, nullable=True),
        FeatureSpec(
            name="region", kind=FeatureKind.CATEGORICAL, categories=tuple("abcdefgh"), nullable=True
        ),
    ),
)


def toy_frame(n_rows: int, *, bad_rate: float, seed: int, missing: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 90, size=n_rows).astype(float)
    age[rng.random(n_rows) < missing] = np.nan
    region = pd.Series(rng.choice(list("abcdefgh"), size=n_rows), dtype="str")
    region[rng.random(n_rows) < missing] = np.nan
    bad = (rng.random(n_rows) < bad_rate).astype(np.int64)
    if bad.sum() < 2:
        bad[:2] = 1
    if (bad == 0).sum() < 2:
        bad[-2:] = 0
    return pd.DataFrame({"id": np.arange(n_rows) + 1000, "bad": bad, "age": age, "region": region})


def ids_of(parties: list[PartyData]) -> list[np.ndarray]:
    return [np.concatenate([p.train["id"].to_numpy(), p.test["id"].to_numpy()]) for p in parties]


def assert_disjoint_and_complete(frame: pd.DataFrame, parties: list[PartyData]) -> None:
    every = np.concatenate(ids_of(parties))
    assert len(every) == len(frame)
    assert sorted(every.tolist()) == sorted(frame["id"].tolist())
    for party in parties:
        assert not set(party.train["id"]) & set(party.test["id"])
        assert list(party.train.columns) == list(frame.columns)


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("iid", PartitionSpec(kind="iid")),
        (" IID ", PartitionSpec(kind="iid")),
        ("quantity", PartitionSpec(kind="quantity")),
        ("dirichlet:0.3", PartitionSpec(kind="dirichlet", alpha=0.3)),
        ("dirichlet: 10", PartitionSpec(kind="dirichlet", alpha=10.0)),
        ("by:AGE", PartitionSpec(kind="by", column="AGE")),
        ("by:addr_state", PartitionSpec(kind="by", column="addr_state")),
    ],
)
def test_parse_partition_accepts_every_form(text: str, spec: PartitionSpec) -> None:
    parsed = parse_partition(text)

    assert parsed == spec
    assert parse_partition(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "partition must be 'iid', 'dirichlet:<alpha>'"),
        ("random", "partition must be 'iid', 'dirichlet:<alpha>'"),
        ("dirichlet", "dirichlet needs an alpha, e.g. dirichlet:0.3"),
        ("dirichlet:", "alpha must be a positive number; got ''"),
        ("dirichlet:abc", "alpha must be a positive number; got 'abc'"),
        ("dirichlet:0", "alpha must be a positive number for dirichlet; got 0.0"),
        ("dirichlet:-2", "alpha must be a positive number for dirichlet; got -2.0"),
        ("dirichlet:inf", "alpha must be a positive number for dirichlet; got inf"),
        ("by", "by needs a column, e.g. by:AGE"),
        ("by:", "by needs a column"),
        ("iid:2", "iid takes no argument"),
        ("quantity:0.5", "quantity takes no argument"),
    ],
)
def test_parse_partition_explains_bad_text(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_partition(text)


def test_partition_spec_rejects_fields_of_other_kinds() -> None:
    with pytest.raises(ValueError, match="alpha applies to dirichlet only"):
        PartitionSpec(kind="iid", alpha=1.0)
    with pytest.raises(ValueError, match="column applies to by only"):
        PartitionSpec(kind="quantity", column="age")


# ------------------------------------------------------------------ properties

specs = st.sampled_from(
    [
        PartitionSpec(kind="iid"),
        PartitionSpec(kind="quantity"),
        PartitionSpec(kind="dirichlet", alpha=0.1),
        PartitionSpec(kind="dirichlet", alpha=1.0),
        PartitionSpec(kind="by", column="age"),
        PartitionSpec(kind="by", column="region"),
    ]
)


@settings(max_examples=120, deadline=None)
@given(
    spec=specs,
    n_parties=st.integers(1, 6),
    n_rows=st.integers(50, 600),
    bad_rate=st.floats(0.03, 0.6),
    missing=st.sampled_from([0.0, 0.1]),
    data_seed=st.integers(0, 2**16),
    seed=st.integers(0, 2**16),
    test_fraction=st.sampled_from([0.1, 0.2, 0.5]),
)
def test_partitions_are_seeded_disjoint_and_complete(
    spec: PartitionSpec,
    n_parties: int,
    n_rows: int,
    bad_rate: float,
    missing: float,
    data_seed: int,
    seed: int,
    test_fraction: float,
) -> None:
    if spec.kind == "quantity":
        n_rows = max(n_rows, MIN_QUANTITY_ROWS * n_parties)
    frame = toy_frame(n_rows, bad_rate=bad_rate, seed=data_seed, missing=missing)

    first = partition_frame(
        frame,
        SCHEMA,
        spec,
        n_parties=n_parties,
        rng=np.random.default_rng(seed),
        test_fraction=test_fraction,
    )
    again = partition_frame(
        frame,
        SCHEMA,
        spec,
        n_parties=n_parties,
        rng=np.random.default_rng(seed),
        test_fraction=test_fraction,
    )

    assert [p.name for p in first] == [f"party_{i}" for i in range(n_parties)]
    assert_disjoint_and_complete(frame, first)
    for a, b in zip(first, again, strict=True):
        pd.testing.assert_frame_equal(a.train, b.train)
        pd.testing.assert_frame_equal(a.test, b.test)
    for party in first:
        counts = pd.concat([party.train, party.test])["bad"].value_counts()
        for label, count in counts.items():
            in_test = int((party.test["bad"] == label).sum())
            if count >= 2:
                assert 1 <= in_test <= count - 1
    if spec.kind in ("iid", "quantity", "dirichlet"):
        # These kinds hand each party two rows of each class when the data allows.
        for party in first:
            assert set(party.test["bad"]) == {0, 1} or frame["bad"].value_counts().min() < (
                2 * n_parties
            )


@settings(max_examples=40, deadline=None)
@given(n_parties=st.integers(3, 10), seed=st.integers(0, 2**16))
def test_quantity_skew_has_one_large_party_and_a_clearly_small_one(
    n_parties: int, seed: int
) -> None:
    frame = toy_frame(20_000, bad_rate=0.1, seed=seed)

    parties = partition_frame(
        frame,
        SCHEMA,
        PartitionSpec(kind="quantity"),
        n_parties=n_parties,
        rng=np.random.default_rng(seed),
    )

    sizes = np.array([len(p.train) + len(p.test) for p in parties])
    assert sizes[0] / len(frame) == pytest.approx(0.5, abs=0.01)
    assert sizes.min() / len(frame) <= 0.05
    assert sizes.min() >= MIN_QUANTITY_ROWS
    assert (np.diff(sizes) <= 0).all()
    rates = [pd.concat([p.train, p.test])["bad"].mean() for p in parties]
    assert max(rates) - min(rates) < 0.05
    smallest = parties[int(np.argmin(sizes))]
    assert set(smallest.test["bad"]) == {0, 1}


def test_quantity_on_a_small_frame_keeps_a_few_dozen_rows_per_party() -> None:
    frame = toy_frame(400, bad_rate=0.08, seed=1)

    parties = partition_frame(
        frame, SCHEMA, PartitionSpec(kind="quantity"), n_parties=5, rng=np.random.default_rng(0)
    )

    assert_disjoint_and_complete(frame, parties)
    assert min(len(p.train) + len(p.test) for p in parties) >= MIN_QUANTITY_ROWS
    assert all(set(p.test["bad"]) == {0, 1} for p in parties)


def test_small_alpha_skews_labels_more_than_large_alpha() -> None:
    frame = toy_frame(6000, bad_rate=0.25, seed=2)

    def spread(alpha: float) -> float:
        parties = partition_frame(
            frame,
            SCHEMA,
            PartitionSpec(kind="dirichlet", alpha=alpha),
            n_parties=5,
            rng=np.random.default_rng(3),
        )
        rates = [pd.concat([p.train, p.test])["bad"].mean() for p in parties]
        return float(np.std(rates))

    assert spread(0.1) > 3 * spread(100.0)


def test_iid_parties_have_equal_size_and_bad_rate() -> None:
    frame = toy_frame(3001, bad_rate=0.2, seed=4)

    parties = partition_frame(
        frame, SCHEMA, PartitionSpec(kind="iid"), n_parties=4, rng=np.random.default_rng(0)
    )

    sizes = [len(p.train) + len(p.test) for p in parties]
    rates = [pd.concat([p.train, p.test])["bad"].mean() for p in parties]
    assert max(sizes) - min(sizes) <= 1
    assert max(rates) - min(rates) < 0.01
    assert all(
        len(p.test) == pytest.approx(0.2 * s, abs=2) for p, s in zip(parties, sizes, strict=True)
    )


def test_numeric_bands_do_not_overlap() -> None:
    frame = toy_frame(5000, bad_rate=0.2, seed=5)

    parties = partition_frame(
        frame,
        SCHEMA,
        PartitionSpec(kind="by", column="age"),
        n_parties=4,
        rng=np.random.default_rng(0),
    )

    ranges = [
        (pd.concat([p.train, p.test])["age"].min(), pd.concat([p.train, p.test])["age"].max())
        for p in parties
    ]
    for (_, high), (low, _) in itertools.pairwise(ranges):
        assert high < low
    sizes = [len(p.train) + len(p.test) for p in parties]
    assert max(sizes) < 1.3 * min(sizes)
    assert parties[0].description.startswith("age in [18, ")


def test_categories_are_grouped_whole_into_similar_sizes() -> None:
    frame = toy_frame(5000, bad_rate=0.2, seed=6, missing=0.05)

    parties = partition_frame(
        frame,
        SCHEMA,
        PartitionSpec(kind="by", column="region"),
        n_parties=3,
        rng=np.random.default_rng(0),
    )

    owners: dict[str, set[int]] = {}
    for index, party in enumerate(parties):
        rows = pd.concat([party.train, party.test])
        for value in rows["region"].fillna("<missing>"):
            owners.setdefault(value, set()).add(index)
    assert all(len(owner) == 1 for owner in owners.values())
    assert len(owners) == 9
    sizes = [len(p.train) + len(p.test) for p in parties]
    assert max(sizes) < 1.5 * min(sizes)
    assert sizes[0] == max(sizes)
    assert parties[0].description.startswith("region in {")


def test_by_segment_gives_the_natural_synthetic_parties() -> None:
    frame = generate_pooled(n_rows=3000, rng=np.random.default_rng(0))

    parties = partition_frame(
        frame,
        SYNTHETIC_SCHEMA,
        parse_partition("by:segment"),
        n_parties=3,
        rng=np.random.default_rng(0),
    )

    segments = [set(pd.concat([p.train, p.test])["segment"]) for p in parties]
    assert sorted(s.pop() for s in segments) == ["bank", "ecommerce", "telecom"]


@pytest.mark.parametrize(
    ("spec", "n_parties", "message"),
    [
        (PartitionSpec(kind="by", column="income"), 3, "must be one of the frame's columns"),
        (PartitionSpec(kind="iid"), 0, "n_parties must be a positive integer"),
        (PartitionSpec(kind="iid"), 500, "at least one row per party"),
        (PartitionSpec(kind="quantity"), 5, "needs at least 40 rows per party"),
    ],
)
def test_impossible_partitions_are_config_errors(
    spec: PartitionSpec, n_parties: int, message: str
) -> None:
    frame = toy_frame(150, bad_rate=0.2, seed=0)

    with pytest.raises(ConfigError, match=message):
        partition_frame(frame, SCHEMA, spec, n_parties=n_parties, rng=np.random.default_rng(0))


def test_too_few_distinct_values_and_missing_target_are_explained() -> None:
    frame = toy_frame(200, bad_rate=0.2, seed=0)
    frame["region"] = "a"
    unlabelled = SCHEMA.model_copy(update={"target_column": None})

    with pytest.raises(ConfigError, match=r"by:region needs at least 2 distinct values"):
        partition_frame(
            frame, SCHEMA, parse_partition("by:region"), n_parties=2, rng=np.random.default_rng(0)
        )
    with pytest.raises(ConfigError, match="dirichlet needs a target column"):
        partition_frame(
            frame.drop(columns=["bad"]),
            unlabelled,
            parse_partition("dirichlet:1"),
            n_parties=2,
            rng=np.random.default_rng(0),
        )
    with pytest.raises(ConfigError, match="test_fraction must be between 0 and 1"):
        partition_frame(
            frame,
            SCHEMA,
            parse_partition("iid"),
            n_parties=2,
            rng=np.random.default_rng(0),
            test_fraction=1.0,
        )
