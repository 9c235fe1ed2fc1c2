"""Boosted trees: learned missing directions, persistence, and exact TreeSHAP contributions."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest

from fedrisk.data.datasets import load_dataset
from fedrisk.data.schema import DatasetSchema, FeatureKind
from fedrisk.ml.features import FeatureStats
from fedrisk.ml.tree_shap import TreeExplainer
from fedrisk.ml.trees import (
    BoostingState,
    Forest,
    Shard,
    TreeBinning,
    TreeParams,
    _best_for_feature,
    _route_left,
    base_margin_of,
    best_split,
    fit_central,
    tree_columns,
)


def _fit(frame: pd.DataFrame, schema: DatasetSchema, params: TreeParams) -> Forest:
    stats = FeatureStats.from_frame(frame, schema, n_bins=256)
    binning = TreeBinning.from_stats(stats, max_bins=params.max_bins)
    target = schema.target_column
    assert target is not None
    shard = Shard.split("a", binning.transform(frame), frame[target].to_numpy(), params=params)
    return fit_central([shard], binning, params, base_margin=base_margin_of(stats)).forest()


@pytest.fixture(scope="module")
def synthetic() -> tuple[pd.DataFrame, DatasetSchema]:
    data = load_dataset("synthetic", rng=np.random.default_rng(3), n_rows=1500)
    return data.frame, data.schema


@pytest.fixture(scope="module")
def forest(synthetic: tuple[pd.DataFrame, DatasetSchema]) -> Forest:
    frame, schema = synthetic
    return _fit(frame, schema, TreeParams(n_trees=6, max_depth=3, max_bins=16, seed=1))


def _path_game(forest: Forest, tree_index: int, codes: np.ndarray, known: set[int]) -> float:
    """E[tree(x) | x_known], unknown features following both branches by cover."""
    tree = forest.trees[tree_index]

    def value(node: int) -> float:
        if tree.feature[node] < 0:
            return tree.value[node]
        if tree.feature[node] in known:
            left = _route_left(tree, node, codes[None, :], forest.binning.n_bins)[0]
            return value(tree.left[node] if left else tree.right[node])
        lo, hi = tree.left[node], tree.right[node]
        return (tree.cover[lo] * value(lo) + tree.cover[hi] * value(hi)) / tree.cover[node]

    return value(0)


def test_contributions_are_the_shapley_values_of_the_path_game(
    forest: Forest, synthetic: tuple[pd.DataFrame, DatasetSchema]
) -> None:
    frame, _ = synthetic
    codes = forest.binning.transform(frame.iloc[:3])
    used = sorted({f for t in forest.trees for f in t.feature if f >= 0})
    assert {forest.binning.features[f].kind for f in used} == {"numeric", "categorical"}

    phi = TreeExplainer(forest).shap_values(codes)

    for row in range(codes.shape[0]):
        oracle = np.zeros(len(forest.binning.features))
        for t, tree in enumerate(forest.trees):
            # Features a tree does not split on are null players of its game.
            players = sorted({f for f in tree.feature if f >= 0})
            d = len(players)
            for i in players:
                others = [j for j in players if j != i]
                for size in range(d):
                    weight = math.factorial(size) * math.factorial(d - size - 1) / math.factorial(d)
                    for subset in itertools.combinations(others, size):
                        known = set(subset)
                        oracle[i] += weight * (
                            _path_game(forest, t, codes[row], known | {i})
                            - _path_game(forest, t, codes[row], known)
                        )
        np.testing.assert_allclose(phi[row], oracle, atol=1e-12)


def test_contributions_and_base_value_sum_to_the_logit(
    forest: Forest, synthetic: tuple[pd.DataFrame, DatasetSchema]
) -> None:
    frame, _ = synthetic
    codes = forest.binning.transform(frame)
    explainer = TreeExplainer(forest)

    phi = explainer.shap_values(codes)

    assert np.abs(phi.sum(axis=1) + explainer.expected_value - forest.margins(codes)).max() < 1e-6


def test_contributions_match_the_shap_library(
    synthetic: tuple[pd.DataFrame, DatasetSchema],
) -> None:
    shap = pytest.importorskip("shap")
    frame, schema = synthetic
    # shap's own tree format has numeric thresholds only: train on the numeric features.
    numeric = DatasetSchema(
        name="numeric",
        id_column=schema.id_column,
        target_column=schema.target_column,
        features=tuple(f for f in schema.features if f.kind is FeatureKind.NUMERIC),
    )
    forest = _fit(frame, numeric, TreeParams(n_trees=5, max_depth=4, max_bins=32, seed=2))
    codes = forest.binning.transform(frame.iloc[:50])
    n_bins = forest.binning.n_bins
    trees = []
    for tree in forest.trees:
        split = np.asarray(tree.feature) >= 0
        trees.append(
            {
                "children_left": np.asarray(tree.left),
                "children_right": np.asarray(tree.right),
                "children_default": np.where(np.asarray(tree.default_left), tree.left, tree.right),
                "features": np.where(split, tree.feature, -2),
                # Codes are integers: "code <= t" and "code < t + 0.5" agree.
                "thresholds": np.where(split, np.asarray(tree.threshold) + 0.5, -2.0),
                "values": np.asarray(tree.value)[:, None],
                "node_sample_weight": np.asarray(tree.cover),
            }
        )
    x = codes.astype(np.float64)
    x[codes == n_bins[None, :]] = np.nan  # the missing bin: shap follows children_default

    expected = shap.TreeExplainer({"trees": trees, "base_offset": forest.base_margin})
    ours = TreeExplainer(forest)

    np.testing.assert_allclose(ours.shap_values(codes), expected.shap_values(x), atol=1e-6)
    assert ours.expected_value == pytest.approx(
        float(np.ravel(expected.expected_value)[0]), abs=1e-6
    )


def test_missing_values_learn_their_own_direction() -> None:
    # Missing income means bad here: the trees must send missing rows to the bad side.
    rng = np.random.default_rng(0)
    data = load_dataset("synthetic", rng=rng, n_rows=2000)
    frame, schema = data.frame.copy(), data.schema
    target = schema.target_column
    assert target is not None
    bad = frame[target].to_numpy() == 1
    frame.loc[bad & (rng.random(len(frame)) < 0.7), "income"] = np.nan
    forest = _fit(frame, schema, TreeParams(n_trees=10, max_depth=2, seed=0))
    row = frame.iloc[:200].copy()

    with_income = forest.margins(forest.binning.transform(row))
    row["income"] = np.nan
    without = forest.margins(forest.binning.transform(row))

    assert (without - with_income).mean() > 0.5


def test_state_survives_serialisation_between_steps(
    synthetic: tuple[pd.DataFrame, DatasetSchema],
) -> None:
    frame, schema = synthetic
    params = TreeParams(n_trees=3, max_depth=3, max_bins=16, subsample=0.7, seed=5)
    stats = FeatureStats.from_frame(frame, schema, n_bins=256)
    binning = TreeBinning.from_stats(stats, max_bins=16)
    target = schema.target_column
    assert target is not None
    shard = Shard.split("a", binning.transform(frame), frame[target].to_numpy(), params=params)
    direct = fit_central([shard], binning, params, base_margin=base_margin_of(stats))

    # As a party does: the state goes through JSON between every step.
    state = BoostingState(binning, params, base_margin=base_margin_of(stats))
    while not state.done:
        vector = state.local_vector(shard)
        state = BoostingState.from_dict(json.loads(state.to_json()))
        state.apply(vector)

    assert [t.to_dict() for t in state.trees] == [t.to_dict() for t in direct.trees]
    forest = Forest.from_dict(json.loads(json.dumps(state.forest().to_dict())))
    codes = binning.transform(frame)
    np.testing.assert_array_equal(forest.margins(codes), direct.forest().margins(codes))


def test_column_subsampling_splits_each_tree_on_its_own_drawn_columns(
    synthetic: tuple[pd.DataFrame, DatasetSchema],
) -> None:
    # Arrange
    frame, schema = synthetic
    params = TreeParams(n_trees=5, max_depth=3, max_bins=16, seed=2, colsample=0.4)
    n_features = len(schema.features)

    # Act
    forest = _fit(frame, schema, params)
    again = _fit(frame, schema, params)

    # Assert: every split uses a drawn column; draws differ by tree, not by run.
    draws = [tree_columns(params, k, n_features) for k in range(len(forest.trees))]
    assert all(d is not None and len(d) == round(0.4 * n_features) for d in draws)
    assert len({tuple(d or ()) for d in draws}) > 1
    for tree, drawn in zip(forest.trees, draws, strict=True):
        used = {f for f in tree.feature if f >= 0}
        assert used and used <= set(drawn or ())
    assert json.dumps(forest.to_dict()) == json.dumps(again.to_dict())
    assert tree_columns(params.model_copy(update={"colsample": 1.0}), 0, n_features) is None


@pytest.mark.parametrize("columns", [None, [0, 2, 3, 5]])
def test_split_search_over_all_features_at_once_equals_a_scan_feature_by_feature(
    synthetic: tuple[pd.DataFrame, DatasetSchema], columns: list[int] | None
) -> None:
    # Arrange: pooled-like histograms (multiples of 2^-16, as a decrypted sum is), empty bins
    # included, over numeric and categorical features.
    frame, schema = synthetic
    binning = TreeBinning.from_stats(FeatureStats.from_frame(frame, schema, n_bins=256))
    params = TreeParams(min_child_weight=0.5, reg_lambda=0.7, gamma=0.01)
    rng = np.random.default_rng(11)
    for _ in range(200):
        n = binning.total_bins
        g = rng.integers(-(2**20), 2**20, size=n) * rng.random(n).round()
        h = rng.integers(0, 2**21, size=n) * (rng.random(n) < 0.8)
        hist = np.stack([g, h]).astype(np.float64) / 2.0**16

        # Act
        found = best_split(hist, binning, params, columns=columns)

        # Assert: the first best of a scan feature by feature, bit for bit.
        expected = None
        for j, fb in enumerate(binning.features):
            if columns is not None and j not in columns:
                continue
            start = int(binning.offsets[j])
            split = _best_for_feature(hist[:, start : start + fb.n_bins + 1], fb, j, params)
            if split is not None and (expected is None or split.gain > expected.gain):
                expected = split
        assert found == expected
