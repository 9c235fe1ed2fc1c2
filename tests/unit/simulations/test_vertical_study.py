"""The vertical study (``fedrisk study --preset vertical-smoke``: real in-process CKKS runs on a
tiny synthetic set), its summary against the issue's bars, and the report's vertical section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simulations.report import VERTICAL_COLUMNS, vertical_table_cells, write_report
from simulations.report_commands import app
from simulations.studies.vertical import (
    VERTICAL_PRESETS,
    VerticalCell,
    VerticalStudyResults,
    get_vertical_preset,
    load_vertical_results,
    run_vertical_study,
    save_vertical_results,
    summarize_vertical,
    vertical_key,
)
from tests.support.studies import make_cell, make_results

WIDE = {"COLUMNS": "250"}


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``fedrisk study --preset vertical-smoke`` run once for the module: its file and output."""
    out = tmp_path_factory.mktemp("vstudy") / "study-vertical.json"
    run = CliRunner().invoke(
        app, ["study", "--preset", "vertical-smoke", "--out", str(out)], env=WIDE
    )
    assert run.exit_code == 0, run.output
    return out, run.output


def test_the_smoke_study_writes_one_measured_cell_per_dataset_and_seed(
    smoke_study: tuple[Path, str],
) -> None:
    path, output = smoke_study

    results = load_vertical_results(path)

    config = VERTICAL_PRESETS["vertical-smoke"]
    assert set(results.cells) == {vertical_key(d, s) for d in config.datasets for s in config.seeds}
    cell = results.cells[vertical_key("synthetic-vertical", 0)]
    assert cell.engine == "in-process" and cell.epochs <= 2
    assert cell.parties == {"bank": "guest", "ecommerce": "host", "telecom": "host"}
    assert cell.overlap["ecommerce"] == pytest.approx(0.8, abs=0.02)
    assert cell.overlap["telecom"] == pytest.approx(0.65, abs=0.02)
    assert cell.n_train + cell.n_valid + cell.n_test == 600
    # the encrypted run is its plaintext oracle up to CKKS noise
    assert cell.federated_auc == pytest.approx(cell.plaintext_protocol_auc, abs=2e-3)
    assert 0.5 < cell.guest_only_auc < 1.0 and 0.5 < cell.centralized_auc < 1.0
    assert cell.seconds_per_epoch > 0 and set(cell.bytes_per_party_per_epoch) == set(cell.parties)
    assert not results.failures
    assert "Vertical LR under CKKS" in output and f"{cell.federated_auc:.4f}" in output


def test_a_rerun_resumes_without_running_a_done_cell(smoke_study: tuple[Path, str]) -> None:
    path, _ = smoke_study
    before = path.read_bytes()
    lines: list[str] = []

    run_vertical_study(
        get_vertical_preset("vertical-smoke"), results_path=path, on_progress=lines.append
    )

    assert lines == ["1 of 1 vertical cells already done; 0 to run"]
    assert path.read_bytes() == before


def test_a_cell_that_cannot_load_its_data_is_recorded_as_failed(tmp_path: Path) -> None:
    config = VERTICAL_PRESETS["vertical-smoke"].model_copy(update={"datasets": ("fate-hetero",)})
    path = tmp_path / "v.json"

    results = run_vertical_study(config, results_path=path, data_dir=tmp_path / "empty")

    key = vertical_key("fate-hetero", 0)
    assert not results.cells and "FEDRISK_DATA_DIR" in results.failures[key]
    assert load_vertical_results(path).failures == results.failures


def test_the_study_command_refuses_horizontal_filters_on_a_vertical_preset(tmp_path: Path) -> None:
    run = CliRunner().invoke(
        app,
        ["study", "--preset", "vertical", "--out", str(tmp_path / "v.json"), "--tasks", "x"],
    )

    assert run.exit_code == 2 and "horizontal presets" in run.output
    assert not (tmp_path / "v.json").exists()


def _cell(dataset: str, seed: int, fed: float, central: float, guest: float) -> VerticalCell:
    return VerticalCell(
        key=vertical_key(dataset, seed),
        dataset=dataset,
        seed=seed,
        engine="flower-simulation",
        parties={"guest": "guest", "host": "host"},
        overlap={"host": 1.0},
        n_train=100,
        n_valid=10,
        n_test=30,
        federated_auc=fed,
        plaintext_protocol_auc=fed,
        centralized_auc=central,
        guest_only_auc=guest,
        epochs=5,
        best_epoch=3,
        seconds_per_epoch=2.5 + seed,
        bytes_per_party_per_epoch={"guest": 1.0, "host": 2.0},
        seconds=20.0,
        params={"epochs": 60},
    )


def _results(cells: list[VerticalCell]) -> VerticalStudyResults:
    return VerticalStudyResults(
        created_at="2026-12-05T00:00:00+00:00",
        updated_at="2026-12-05T00:00:00+00:00",
        config=VERTICAL_PRESETS["vertical"],
        cells={c.key: c for c in cells},
    )


def test_the_summary_checks_every_seed_against_the_datasets_bars() -> None:
    results = _results(
        [
            _cell("fate-hetero", 0, 0.720, 0.722, 0.660),  # -0.002, +0.060: passes
            _cell("fate-hetero", 1, 0.720, 0.727, 0.660),  # -0.007: misses the central bar
            _cell("synthetic-vertical", 0, 0.780, 0.781, 0.755),  # +0.025: passes
            _cell("taiwan-3way", 0, 0.700, 0.705, 0.670),  # no bar
        ]
    )

    rows = {r.dataset: r for r in summarize_vertical(results)}

    assert list(rows) == ["fate-hetero", "synthetic-vertical", "taiwan-3way"]
    assert rows["fate-hetero"].passes is False
    assert rows["fate-hetero"].central_gaps == pytest.approx([-0.002, -0.007])
    assert rows["fate-hetero"].federated_mean == pytest.approx(0.72)
    assert rows["synthetic-vertical"].passes is True
    assert rows["synthetic-vertical"].federated_sd is None
    assert rows["taiwan-3way"].passes is None
    cells = vertical_table_cells(rows["fate-hetero"])
    assert cells[6] == "-0.0020, -0.0070" and cells[7] == "+0.0600, +0.0600"
    assert cells[8] == "2.5–3.5" and cells[9].endswith("MISSED")


def test_the_report_renders_the_vertical_section(tmp_path: Path) -> None:
    vertical = _results(
        [
            _cell("fate-hetero", 0, 0.7176, 0.7189, 0.6628),
            _cell("synthetic-vertical", 0, 0.7688, 0.7693, 0.7397),
        ]
    )

    files = write_report(make_results([make_cell()]), tmp_path, vertical=vertical)

    page = files.html.read_text(encoding="utf-8")
    assert "Vertical federation" in page and "guest only" in page
    for row in summarize_vertical(vertical):
        for text in vertical_table_cells(row):
            assert text.replace("&", "&amp;") in page or text in page
    document = json.loads(files.results.read_text(encoding="utf-8"))
    assert document["vertical"]["table_columns"] == list(VERTICAL_COLUMNS)
    assert [r["dataset"] for r in document["vertical"]["summary"]] == [
        "fate-hetero",
        "synthetic-vertical",
    ]
    assert "| fate-hetero |" in files.markdown.read_text(encoding="utf-8")


def test_a_report_without_a_vertical_study_has_no_vertical_section(tmp_path: Path) -> None:
    files = write_report(make_results([make_cell()]), tmp_path)

    assert "Vertical federation" not in files.html.read_text(encoding="utf-8")
    assert "vertical" not in json.loads(files.results.read_text(encoding="utf-8"))


def test_the_report_command_adds_a_vertical_study_file(tmp_path: Path) -> None:
    study = tmp_path / "study.json"
    study.write_text(make_results([make_cell()]).model_dump_json(), encoding="utf-8")
    vertical = tmp_path / "study-vertical.json"
    save_vertical_results(_results([_cell("fate-hetero", 0, 0.72, 0.72, 0.66)]), vertical)
    args = ["report", "--results", str(study), "--out", str(tmp_path / "r")]

    run = CliRunner().invoke(app, [*args, "--vertical", str(vertical)], env=WIDE)
    refused = CliRunner().invoke(app, [*args, "--vertical", str(study)], env=WIDE)

    assert run.exit_code == 0, run.output
    document = json.loads((tmp_path / "r" / "results.json").read_text(encoding="utf-8"))
    assert document["vertical"]["summary"][0]["central_gaps"] == [0.0]
    assert refused.exit_code != 0 and "vertical study results file" in refused.output
