"""Tests for the credit-risk metrics, exact and from pooled score histograms."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from fedrisk.errors import FedRiskError, SchemaError
from fedrisk.ml import metrics

labelled_scores = st.integers(min_value=2, max_value=200).flatmap(
    lambda n: st.tuples(
        st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n),
        # A small value set forces many ties.
        st.lists(st.integers(min_value=-5, max_value=5).map(float), min_size=n, max_size=n),
    )
)


@settings(max_examples=100, deadline=None)
@given(labelled_scores)
def test_auc_and_ks_match_scikit_learn(data: tuple[list[int], list[float]]) -> None:
    # Arrange
    y, s = data
    assume(0 < sum(y) < len(y))

    # Act
    auc = metrics.auc(y, s)
    ks = metrics.ks(y, s)

    # Assert
    fpr, tpr, _ = skm.roc_curve(y, s)
    assert auc == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert ks == pytest.approx(max(0.0, float(np.max(tpr - fpr))), abs=1e-12)
    assert metrics.gini(y, s) == pytest.approx(2 * auc - 1, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(labelled_scores)
def test_roc_curve_matches_scikit_learn_and_its_area_is_the_auc(
    data: tuple[list[int], list[float]],
) -> None:
    # Arrange
    y, s = data
    assume(0 < sum(y) < len(y))

    # Act
    curve = metrics.roc_curve(y, s)

    # Assert
    fpr, tpr, thresholds = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(curve.fpr, fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve.tpr, tpr, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(curve.thresholds, thresholds)
    area = float(np.trapezoid(curve.tpr, curve.fpr))
    assert area == pytest.approx(metrics.auc(y, s), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(labelled_scores)
def test_ks_curve_is_the_roc_against_population_and_its_widest_gap_is_ks(
    data: tuple[list[int], list[float]],
) -> None:
    # Arrange
    y, s = data
    assume(0 < sum(y) < len(y))
    n_bad = sum(y)
    n_good = len(y) - n_bad

    # Act
    chart = metrics.ks_curve(y, s)

    # Assert
    fpr, tpr, thresholds = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(chart.cum_bad, tpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(chart.cum_good, fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        chart.population, (tpr * n_bad + fpr * n_good) / len(y), rtol=0, atol=1e-12
    )
    np.testing.assert_array_equal(chart.thresholds, thresholds)
    widest = max(0.0, float(np.max(chart.cum_bad - chart.cum_good)))
    assert widest == pytest.approx(metrics.ks(y, s), abs=1e-12)


def test_hand_worked_curves_with_a_tie() -> None:
    # Scores 0.8 (bad), 0.5 (bad and good tied), 0.3 (good): the tie is one step.
    y = [1, 1, 0, 0]
    s = [0.8, 0.5, 0.5, 0.3]

    roc = metrics.roc_curve(y, s)
    chart = metrics.ks_curve(y, s)

    np.testing.assert_array_equal(roc.thresholds, [np.inf, 0.8, 0.5, 0.3])
    np.testing.assert_array_equal(roc.fpr, [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_array_equal(roc.tpr, [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(chart.population, [0.0, 0.25, 0.75, 1.0])
    np.testing.assert_array_equal(chart.cum_bad, roc.tpr)
    np.testing.assert_array_equal(chart.cum_good, roc.fpr)


@pytest.mark.parametrize("curve", [metrics.roc_curve, metrics.ks_curve])
def test_curves_reject_bad_inputs(curve: Callable[..., object]) -> None:
    with pytest.raises(SchemaError, match="both classes"):
        curve([0, 0], [0.1, 0.2])
    with pytest.raises(SchemaError, match="finite"):
        curve([0, 1], [0.1, float("inf")])


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0, 1]), st.floats(min_value=0.0, max_value=1.0)),
        min_size=1,
        max_size=100,
    )
)
def test_brier_and_log_loss_match_scikit_learn(pairs: list[tuple[int, float]]) -> None:
    y = [a for a, _ in pairs]
    p = [b for _, b in pairs]
    assert metrics.brier(y, p) == pytest.approx(skm.brier_score_loss(y, p, pos_label=1), abs=1e-12)
    clipped = np.clip(p, 1e-15, 1 - 1e-15)
    assert metrics.log_loss(y, p) == pytest.approx(
        skm.log_loss(y, clipped, labels=[0, 1]), rel=1e-9, abs=1e-12
    )


def test_hand_worked_auc_ks_with_ties() -> None:
    # Pairs (pos, neg): (0.8 > 0.3), (0.8 > 0.5), (0.5 = 0.5) -> 0.5, (0.5 > 0.3) => 3.5 / 4.
    y = [1, 1, 0, 0]
    s = [0.8, 0.5, 0.5, 0.3]
    assert metrics.auc(y, s) == pytest.approx(0.875)
    # Threshold 0.8: TPR 0.5, FPR 0 -> KS 0.5.
    assert metrics.ks(y, s) == pytest.approx(0.5)
    assert metrics.gini(y, s) == pytest.approx(0.75)


def test_log_loss_is_finite_at_certain_wrong_predictions() -> None:
    # 1 - 1e-15 rounds in float64, so the two clipped terms differ in the 4th digit.
    assert metrics.log_loss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(1e-15), rel=1e-4)


def test_psi_hand_worked_example() -> None:
    # Median split of 0..99: expected shares 0.5 / 0.5, actual 0.75 / 0.25.
    expected = np.arange(100.0)
    actual = np.array([0.0] * 75 + [99.0] * 25)
    want = 0.25 * math.log(1.5) + 0.25 * math.log(2.0)
    assert metrics.psi(expected, actual, n_bins=2) == pytest.approx(want)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=200))
def test_psi_of_a_sample_against_itself_is_zero(values: list[float]) -> None:
    assert metrics.psi(values, values) == pytest.approx(0.0, abs=1e-12)


def test_psi_grows_with_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 5000)
    small = metrics.psi(ref, rng.normal(0.1, 1, 5000))
    large = metrics.psi(ref, rng.normal(1.0, 1, 5000))
    assert small < 0.1 < 0.25 < large


@pytest.mark.parametrize(
    ("y", "s", "message"),
    [
        ([0, 1], [0.1], "same length"),
        ([0, 2], [0.1, 0.2], "only 0 and 1"),
        ([0, 1], [0.1, float("nan")], "finite"),
        ([1, 1], [0.1, 0.2], "both classes"),
        ([[0, 1]], [[0.1, 0.2]], "one-dimensional"),
        ([], [], "must not be empty"),
    ],
)
def test_auc_rejects_bad_inputs(y: object, s: object, message: str) -> None:
    with pytest.raises(SchemaError, match=message) as info:
        metrics.auc(y, s)  # type: ignore[arg-type]
    assert isinstance(info.value, FedRiskError) and isinstance(info.value, ValueError)


def test_probability_metrics_reject_out_of_range_p() -> None:
    with pytest.raises(SchemaError, match=r"\[0, 1\]"):
        metrics.brier([0, 1], [0.2, 1.5])
    with pytest.raises(SchemaError, match="n_bins"):
        metrics.psi([1.0], [1.0], n_bins=1)


def test_score_histograms_shape_counts_and_clipping() -> None:
    # Arrange
    y = np.array([0, 0, 1, 1])
    p = np.array([0.0, 0.5, 1.0, 0.5])

    # Act
    h = metrics.score_histograms(y, p, n_bins=24)

    # Assert: bins are 1 logit wide over [-12, 12]; p = 0 / 1 land in the end bins.
    assert h.shape == (2, 24)
    assert h[0, 0] == 1 and h[0, 12] == 1
    assert h[1, 23] == 1 and h[1, 12] == 1
    assert h.sum() == 4


party_data = st.tuples(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=2, max_value=5),
    st.integers(min_value=20, max_value=3000),
    st.floats(min_value=0.05, max_value=0.5),
    st.floats(min_value=0.0, max_value=2.5),
    st.floats(min_value=1.0, max_value=3.0),
)


def simulate_parties(
    seed: int, n_parties: int, n: int, rate: float, signal: float, spread: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    parties = []
    for _ in range(n_parties):
        y = (rng.random(n) < rate).astype(int)
        y[0], y[1] = 0, 1  # every party sees both classes
        z = rng.normal(-1.5 + signal * y, spread)
        parties.append((y, 1.0 / (1.0 + np.exp(-z))))
    return parties


@settings(max_examples=60, deadline=None)
@given(party_data)
def test_summed_party_histograms_give_union_auc(
    params: tuple[int, int, int, float, float, float],
) -> None:
    # Arrange
    parties = simulate_parties(*params)
    y_all = np.concatenate([y for y, _ in parties])
    p_all = np.concatenate([p for _, p in parties])

    # Act
    pooled = np.sum([metrics.score_histograms(y, p) for y, p in parties], axis=0)
    auc_error = abs(metrics.auc_from_histograms(pooled) - metrics.auc(y_all, p_all))
    ks_error = abs(metrics.ks_from_histograms(pooled) - metrics.ks(y_all, p_all))

    # Assert: summing is exact; binning only loses the order of pairs that share a bin.
    np.testing.assert_array_equal(pooled, metrics.score_histograms(y_all, p_all))
    neg, pos = pooled
    same_bin_pairs = float(np.dot(pos, neg)) / (pos.sum() * neg.sum())
    assert auc_error <= 0.5 * same_bin_pairs + 1e-12
    assert ks_error <= float(np.max(pos / pos.sum() + neg / neg.sum())) + 1e-12
    if y_all.size >= 1000:
        assert auc_error < 0.002


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1]), st.integers(0, 1999)), min_size=2))
def test_histogram_auc_is_exact_for_scores_at_bin_centres(pairs: list[tuple[int, int]]) -> None:
    y = np.array([a for a, _ in pairs])
    assume(0 < y.sum() < y.size)
    centres = -12.0 + (np.array([b for _, b in pairs]) + 0.5) * (24.0 / 2000)
    p = 1.0 / (1.0 + np.exp(-centres))
    h = metrics.score_histograms(y, p)
    assert metrics.auc_from_histograms(h) == pytest.approx(metrics.auc(y, p), abs=1e-12)
    assert metrics.ks_from_histograms(h) == pytest.approx(metrics.ks(y, p), abs=1e-12)


def test_realistic_three_bank_histograms_match_exact_auc() -> None:
    # Arrange: three lenders of different size and bad rate, a decent but imperfect model.
    rng = np.random.default_rng(7)
    parties = []
    for n, rate in ((20_000, 0.05), (8_000, 0.12), (3_000, 0.25)):
        y = (rng.random(n) < rate).astype(int)
        z = rng.normal(-3.0 + 1.4 * y, 1.1) + rng.standard_t(4, n) * 0.3
        parties.append((y, 1.0 / (1.0 + np.exp(-z))))
    y_all = np.concatenate([y for y, _ in parties])
    p_all = np.concatenate([p for _, p in parties])

    # Act
    pooled = np.sum([metrics.score_histograms(y, p) for y, p in parties], axis=0)
    # CKKS gives counts back with ~1e-8 noise.
    noisy = pooled + rng.normal(0, 1e-8, pooled.shape)

    # Assert
    assert abs(metrics.auc_from_histograms(noisy) - metrics.auc(y_all, p_all)) < 0.002
    assert abs(metrics.ks_from_histograms(noisy) - metrics.ks(y_all, p_all)) < 0.005


def test_histogram_metrics_reject_bad_histograms() -> None:
    with pytest.raises(SchemaError, match="shape"):
        metrics.auc_from_histograms(np.zeros((3, 10)))
    with pytest.raises(SchemaError, match="both classes"):
        metrics.auc_from_histograms(np.vstack([np.ones(10), np.zeros(10)]))
    with pytest.raises(SchemaError, match="non-negative"):
        metrics.ks_from_histograms(np.vstack([np.ones(10), -np.ones(10)]))
    with pytest.raises(SchemaError, match="finite"):
        metrics.ks_from_histograms(np.full((2, 4), np.nan))
