"""Tests for fedrisk.data.splits: the one seeded, stratified train/test split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.data.splits import split_frame, stratified_split
from fedrisk.errors import ConfigError, SchemaError


@settings(max_examples=200, deadline=None)
@given(
    labels=st.lists(st.integers(0, 3), min_size=0, max_size=300),
    fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_is_complete_disjoint_sorted_and_follows_the_per_class_rule(
    labels: list[int], fraction: float, seed: int
) -> None:
    # Act
    train, test = stratified_split(labels, test_fraction=fraction, rng=np.random.default_rng(seed))

    # Assert
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(labels)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)
    classes = np.asarray(labels, dtype=np.int64)
    for code in np.unique(classes):
        n = int((classes == code).sum())
        expected = min(max(round(fraction * n), 1), n - 1) if n >= 2 else 0
        assert int((classes[test] == code).sum()) == expected


def test_split_is_seeded() -> None:
    labels = np.random.default_rng(0).integers(0, 2, 500)

    a = stratified_split(labels, test_fraction=0.2, rng=np.random.default_rng(1))
    b = stratified_split(labels, test_fraction=0.2, rng=np.random.default_rng(1))
    c = stratified_split(labels, test_fraction=0.2, rng=np.random.default_rng(2))

    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[1], c[1])


def test_split_frame_keeps_the_bad_rate_and_resets_the_index() -> None:
    # Arrange: 100 bad rows in 1000, on a shuffled index
    rng = np.random.default_rng(3)
    bad = np.zeros(1000, dtype=np.int64)
    bad[:100] = 1
    frame = pd.DataFrame({"id": np.arange(1000), "bad": bad}, index=rng.permutation(1000))

    # Act
    train, test = split_frame(frame, target="bad", rng=np.random.default_rng(0))

    # Assert
    assert (len(train), len(test)) == (800, 200)
    assert (int(train["bad"].sum()), int(test["bad"].sum())) == (80, 20)
    assert list(test.index) == list(range(200))
    assert sorted([*train["id"], *test["id"]]) == list(range(1000))


def test_bad_arguments_are_refused() -> None:
    frame = pd.DataFrame({"bad": [0, 1, None, 1]})
    with pytest.raises(ConfigError, match="test_fraction must be between 0 and 1"):
        stratified_split([0, 1], test_fraction=1.0, rng=np.random.default_rng())
    with pytest.raises(ConfigError, match="one-dimensional"):
        stratified_split([[0, 1]], test_fraction=0.5, rng=np.random.default_rng())
    with pytest.raises(SchemaError, match="target column label"):
        split_frame(frame, target="label", rng=np.random.default_rng())
    with pytest.raises(SchemaError, match="no missing values"):
        split_frame(frame, target="bad", rng=np.random.default_rng())
