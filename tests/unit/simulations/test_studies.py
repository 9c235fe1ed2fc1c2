"""Tests for simulations.studies: curves, summary and notes, resumable study runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.errors import ConfigError
from fedrisk.ml.metrics import auc, ks
from simulations.scenarios import SMOKE_SCENARIO, get_scenario
from simulations.studies import (
    PRESETS,
    StudyConfig,
    cell_key,
    gap_note,
    get_preset,
    ks_on_grid,
    load_results,
    narrow,
    roc_on_grid,
    run_study,
    save_results,
    score_histogram,
    summarize,
)
from tests.support.studies import make_cell, make_results, scored_sample

# ------------------------------------------------------------------ curves


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.floats(0.0, 3.0))
def test_roc_curve_area_matches_the_exact_auc(seed: int, shift: float) -> None:
    y, p = scored_sample(seed, n=300, shift=shift)

    curve = roc_on_grid(y, p)

    area = float(np.trapezoid(curve.tpr, curve.fpr))
    assert len(curve.fpr) == 101
    assert curve.tpr[0] >= 0.0
    assert curve.tpr[-1] == pytest.approx(1.0)
    assert np.all(np.diff(curve.tpr) >= -1e-12)
    assert area == pytest.approx(auc(y, p), abs=0.02)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.floats(0.0, 3.0))
def test_ks_chart_gap_is_the_ks_statistic(seed: int, shift: float) -> None:
    y, p = scored_sample(seed, n=300, shift=shift)

    chart = ks_on_grid(y, p)

    gaps = np.asarray(chart.cum_bad) - np.asarray(chart.cum_good)
    assert chart.ks == pytest.approx(ks(y, p), abs=1e-6)
    assert gaps.max() == pytest.approx(chart.ks, abs=0.03)
    assert chart.cum_bad[-1] == pytest.approx(1.0)
    assert chart.cum_good[-1] == pytest.approx(1.0)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_grid_curves_do_not_depend_on_the_order_of_tied_scores(seed: int) -> None:
    # Arrange: few distinct scores, so most accounts share their score with others.
    rng = np.random.default_rng(seed)
    y = np.r_[0, 1, (rng.random(200) < 0.3).astype(np.int64)]
    p = rng.integers(1, 6, y.size) / 6.0
    order = rng.permutation(y.size)

    # Act
    roc, shuffled_roc = roc_on_grid(y, p), roc_on_grid(y[order], p[order])
    chart, shuffled_chart = ks_on_grid(y, p), ks_on_grid(y[order], p[order])

    # Assert
    assert roc == shuffled_roc
    assert chart == shuffled_chart
    assert max(np.asarray(chart.cum_bad) - np.asarray(chart.cum_good)) <= chart.ks + 2e-6


def test_score_histogram_counts_every_good_and_bad_once() -> None:
    y, p = scored_sample(3, n=1000)

    hist = score_histogram(y, p)

    assert sum(hist.bads) == int(y.sum())
    assert sum(hist.goods) == int((1 - y).sum())
    assert len(hist.edges) == len(hist.goods) + 1
    # Bads score fewer points (riskier) than goods on average.
    centers = (np.asarray(hist.edges[:-1]) + np.asarray(hist.edges[1:])) / 2
    assert np.average(centers, weights=hist.bads) < np.average(centers, weights=hist.goods)


def test_perfect_scores_give_a_corner_roc_and_ks_of_one() -> None:
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.8, 0.9])

    assert roc_on_grid(y, p).tpr[1] == pytest.approx(1.0)
    assert ks_on_grid(y, p).ks == pytest.approx(1.0)


# ------------------------------------------------------------------ summary and notes


def test_summary_averages_seeds_and_flags_the_gap() -> None:
    cells = [
        make_cell(seed=0, enc_auc=0.780, central_auc=0.800),
        make_cell(seed=1, enc_auc=0.784, central_auc=0.798, plaintext=False),
    ]

    (row,) = summarize(make_results(cells))

    assert row.n_seeds == 2
    assert row.encrypted_auc_mean == pytest.approx(0.782)
    assert row.encrypted_auc_sd == pytest.approx(np.std([0.780, 0.784], ddof=1), abs=1e-6)
    assert row.gap_mean == pytest.approx(-0.017)
    assert row.status == "gap"
    assert row.plaintext_seeds == 1
    assert row.cold_start_gain_mean == pytest.approx(0.06)
    assert row.small_lender
    assert "Encryption is not the cause" in row.note


def test_one_seed_has_no_sd_and_within_target_has_no_note() -> None:
    (row,) = summarize(make_results([make_cell(enc_auc=0.795, central_auc=0.80)]))

    assert row.encrypted_auc_sd is None
    assert row.status == "within"
    assert row.note == ""


def test_gap_notes_name_the_measured_causes() -> None:
    peaked = make_cell(
        partition_kind="label",
        partition="dirichlet:0.3",
        model="mlp",
        enc_auc=0.75,
        central_auc=0.80,
        history=(0.70, 0.79, 0.77, 0.75),
        rounds=4,
    )
    rising = make_cell(enc_auc=0.75, central_auc=0.80, history=(0.60, 0.65, 0.70, 0.75), rounds=4)

    (peak_row,) = summarize(make_results([peaked]))
    (rise_row,) = summarize(make_results([rising]))

    assert "peaked" in peak_row.note
    assert "Label skew" in peak_row.note
    assert "MLP" in peak_row.note
    assert "still rising" in rise_row.note
    assert "peaked" not in rise_row.note
    assert gap_note(peak_row, [peaked]) == peak_row.note


def test_federated_better_than_centralized_is_explained_not_hidden() -> None:
    (row,) = summarize(make_results([make_cell(enc_auc=0.83, central_auc=0.80)]))

    assert row.status == "federated better"
    assert "early on a 10 % validation split" in row.note


# ------------------------------------------------------------------ running and resuming


def test_results_round_trip_through_the_file(tmp_path: Path) -> None:
    results = make_results([make_cell()])

    save_results(results, tmp_path / "results.json")

    assert load_results(tmp_path / "results.json") == results


def test_study_skips_cells_already_done(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    save_results(make_results([make_cell()]), path)
    lines: list[str] = []

    results = run_study(PRESETS["smoke"], results_path=path, on_progress=lines.append)

    assert lines == ["1 of 1 cells already done; 0 to run"]
    assert list(results.cells) == [cell_key(SMOKE_SCENARIO.name, "quantity", "lr", 0)]


def test_study_reruns_a_cell_whose_settings_changed_and_records_failures(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    stale = make_cell(task="behaviour-taiwan", partition_kind="iid", partition="iid", rounds=1)
    save_results(make_results([stale]), path)
    config = StudyConfig(
        preset="test",
        tasks=("behaviour-taiwan",),
        partitions=("iid",),
        models=("lr",),
        seeds=(0,),
    )
    lines: list[str] = []

    # An empty data folder: the cell is due (rounds changed) and fails fast on the missing file.
    results = run_study(
        config, results_path=path, data_dir=tmp_path / "no-data", on_progress=lines.append
    )

    key = cell_key("behaviour-taiwan", "iid", "lr", 0)
    assert lines[0] == "0 of 1 cells already done; 1 to run"
    assert "FAILED" in lines[1]
    assert "DatasetNotFoundError" in results.failures[key]
    assert load_results(path).failures == results.failures


def test_a_label_skew_cell_trained_with_another_optimiser_is_due_again(tmp_path: Path) -> None:
    scenario = get_scenario("behaviour-taiwan")
    plan = scenario.plan("lr", label_skew=True)
    done = make_cell(
        task=scenario.name, partition_kind="label", partition="dirichlet:0.3", rounds=plan.rounds
    ).model_copy(
        update={
            "parties": scenario.parties,
            "local_epochs": plan.local_epochs,
            "learning_rate": plan.learning_rate,
        }
    )
    config = StudyConfig(
        preset="test", tasks=(scenario.name,), partitions=("label",), models=("lr",), seeds=(0,)
    )
    for optimizer, due in (("sgd", 0), ("default", 1)):
        path = tmp_path / f"{optimizer}.json"
        save_results(make_results([done.model_copy(update={"optimizer": optimizer})]), path)
        lines: list[str] = []

        run_study(config, results_path=path, data_dir=tmp_path / "none", on_progress=lines.append)

        assert lines[0] == f"{1 - due} of 1 cells already done; {due} to run"


def test_a_narrowed_study_keeps_the_chosen_cells_in_the_preset_order() -> None:
    full = get_preset("full")

    narrowed = narrow(full, tasks=["collection-taiwan"], models=["gbdt", "scorecard"])

    assert narrowed.tasks == ("collection-taiwan",)
    assert narrowed.models == ("scorecard", "gbdt")
    assert (narrowed.partitions, narrowed.seeds) == (full.partitions, full.seeds)
    assert narrowed.plaintext_seeds == full.plaintext_seeds


@pytest.mark.parametrize("models", [["xgboost"], []])
def test_narrowing_to_a_model_outside_the_preset_is_refused(models: list[str]) -> None:
    with pytest.raises(ConfigError, match="models must be some of lr, mlp, scorecard, gbdt"):
        narrow(get_preset("full"), models=models)
