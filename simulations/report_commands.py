"""Experiment commands ``fedrisk study``, ``fedrisk report`` and ``fedrisk scenario``.

``app`` holds the three (tests invoke it directly); the ``fedrisk`` dispatcher
(:mod:`simulations.cli`) mounts each function on its own. As in :mod:`simulations.commands`, the
study and scenario code (which imports torch) is imported inside a command, after its options
have been checked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer
from rich.table import Table

from fedrisk.ml.kinds import MODEL_KINDS, ModelKind
from simulations.commands import DataDirOption, SeedOption, console, fail, in_existing_directory
from simulations.studies.config import PRESETS
from simulations.studies.vertical import VERTICAL_PRESETS

if TYPE_CHECKING:
    from simulations.studies import StudyResults
    from simulations.studies.vertical import VerticalStudyResults

app = typer.Typer(
    help="Simulation studies of the lifecycle scenarios and their report.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

STUDY_FILE = "study.json"
"""Where ``report`` keeps the raw study results it runs (resumable), inside ``--out``."""

PresetOption = Annotated[
    str,
    typer.Option(
        help="Study preset (see the README)",
        click_type=click.Choice(sorted(PRESETS), case_sensitive=True),
    ),
]

StudyPresetOption = Annotated[
    str,
    typer.Option(
        help="Study preset (see the README); vertical and vertical-smoke run the vertical study",
        click_type=click.Choice(sorted([*PRESETS, *VERTICAL_PRESETS]), case_sensitive=True),
    ),
]


def read_study(path: Path) -> StudyResults:
    """A study's results from its own ``results.json`` or from a report's ``results.json``.

    Raises
    ------
    ConfigError
        If the file is neither.
    """
    from fedrisk.errors import ConfigError
    from simulations.studies import StudyResults, load_results

    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"results file must be readable JSON; {path}: {e}") from e
    if isinstance(document, dict) and document.get("format") == "fedrisk-report":
        return StudyResults.model_validate(document["study"])
    return load_results(path)


def _study(
    preset: str,
    results_path: Path,
    *,
    data_dir: Path | None,
    max_cells: int | None,
    only: Mapping[str, str | None] | None = None,
) -> StudyResults:
    from simulations.studies import get_preset, narrow, run_study

    chosen = {k: None if v is None else v.split(",") for k, v in (only or {}).items()}
    config = narrow(get_preset(preset), **chosen)
    console.print(
        f"[bold]study {preset}[/]: {len(config.tasks)} task(s) × {len(config.partitions)} "
        f"partition(s) × {len(config.models)} model(s) × {len(config.seeds)} seed(s); "
        f"results in {results_path}"
    )
    return run_study(
        config,
        results_path=results_path,
        data_dir=data_dir,
        on_progress=lambda line: console.print(line, highlight=False),
        max_cells=max_cells,
    )


def _print_summary(results: StudyResults) -> None:
    from simulations.report import summary_table
    from simulations.studies import summarize

    rows = summarize(results)
    console.print(summary_table(rows, title=f"Study {results.config.preset}: mean ± sd over seeds"))
    for row in rows:
        if row.note:
            console.print(f"[yellow]note[/] {row.task} | {row.partition} | {row.model}: {row.note}")


def _vertical_study(
    preset: str, results_path: Path, *, data_dir: Path | None, max_cells: int | None
) -> None:
    from fedrisk.errors import FedRiskError
    from server.coordinator.runs import RunFailedError
    from simulations.report import vertical_summary_table
    from simulations.studies.vertical import (
        get_vertical_preset,
        run_vertical_study,
        summarize_vertical,
    )

    config = get_vertical_preset(preset)
    console.print(
        f"[bold]study {preset}[/]: {len(config.datasets)} vertical dataset(s) × "
        f"{len(config.seeds)} seed(s); results in {results_path}"
    )
    try:
        results = run_vertical_study(
            config,
            results_path=results_path,
            data_dir=data_dir,
            on_progress=lambda line: console.print(line, highlight=False),
            max_cells=max_cells,
        )
    except (FedRiskError, RunFailedError) as e:
        raise fail(str(e)) from e
    if results.cells:
        console.print(vertical_summary_table(summarize_vertical(results)))
    if results.failures:
        console.print(f"[red]{len(results.failures)} cell(s) failed[/]; rerun to retry them")


def read_vertical_study(path: Path) -> VerticalStudyResults:
    """A vertical study's results file (``fedrisk study --preset vertical``)."""
    from simulations.studies.vertical import load_vertical_results

    return load_vertical_results(path)


@app.command("study")
def study(
    out: Annotated[
        Path,
        typer.Option(
            dir_okay=False,
            callback=in_existing_directory,
            help="results.json to write (and resume from)",
        ),
    ],
    preset: StudyPresetOption = "smoke",
    max_cells: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many new cells (resume later)")
    ] = None,
    tasks: Annotated[
        str | None, typer.Option(help="Run only these of the preset's tasks (comma-separated)")
    ] = None,
    partitions: Annotated[
        str | None,
        typer.Option(help="Run only these of the preset's partition kinds (comma-separated)"),
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="Run only these of the preset's models (comma-separated)")
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Run a simulation study (resumable: cells already in --out are skipped)."""
    from fedrisk.errors import FedRiskError
    from fedrisk.ml.training import configure_torch
    from server.coordinator.runs import RunFailedError

    configure_torch(threads=1)  # see configure_torch: 2 threads spin-wait on a busy machine
    if preset in VERTICAL_PRESETS:
        if tasks or partitions or models:
            raise fail("--tasks, --partitions and --models apply to horizontal presets", code=2)
        _vertical_study(preset, out, data_dir=data_dir, max_cells=max_cells)
        return
    try:
        only = {"tasks": tasks, "partitions": partitions, "models": models}
        results = _study(preset, out, data_dir=data_dir, max_cells=max_cells, only=only)
    except (FedRiskError, RunFailedError) as e:
        raise fail(str(e)) from e
    if results.cells:
        _print_summary(results)
    if results.failures:
        console.print(f"[red]{len(results.failures)} cell(s) failed[/]; rerun to retry them")


@app.command("report")
def report(
    out: Annotated[
        Path,
        typer.Option(file_okay=False, help="Folder for index.html, plots/ and results.json"),
    ],
    results: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="A study's results.json; without it the --preset study runs first",
        ),
    ] = None,
    preset: PresetOption = "smoke",
    vertical: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="A vertical study's results file (fedrisk study --preset vertical): adds the "
            "vertical section",
        ),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Write the HTML report (PNG plots, results.json) of a simulation study."""
    from fedrisk.errors import FedRiskError
    from fedrisk.ml.training import configure_torch
    from server.coordinator.runs import RunFailedError
    from simulations.report import write_report

    configure_torch(threads=1)  # see configure_torch: 2 threads spin-wait on a busy machine
    try:
        if results is None:
            out.mkdir(parents=True, exist_ok=True)
            study = _study(preset, out / STUDY_FILE, data_dir=data_dir, max_cells=None)
        else:
            study = read_study(results)
        vertical_study = read_vertical_study(vertical) if vertical is not None else None
        files = write_report(study, out, vertical=vertical_study)
    except (FedRiskError, RunFailedError) as e:
        raise fail(str(e)) from e
    _print_summary(study)
    console.print(f"report: {files.html}")
    console.print(f"numbers: {files.results}")
    console.print(f"plots: {len(files.plots)} PNG files in {files.html.parent / 'plots'}")


@app.command("scenario")
def scenario(
    name: Annotated[str | None, typer.Argument(help="Scenario to train; omit to list them")] = None,
    registry: Annotated[
        Path,
        typer.Option(file_okay=False, help="Registry folder receiving the signed artifact"),
    ] = Path("registry"),
    model: Annotated[
        ModelKind | None,
        typer.Option(
            click_type=click.Choice(MODEL_KINDS), help="Model kind (default: the scenario's)"
        ),
    ] = None,
    seed: SeedOption = 0,
    data_dir: DataDirOption = None,
) -> None:
    """Train a lifecycle scenario encrypted and release its signed, stage-tagged artifact."""
    from fedrisk.errors import FedRiskError
    from simulations.scenarios import SCENARIOS, SMOKE_SCENARIO, get_scenario

    if name is None:
        table = Table(title="Lifecycle scenarios")
        for column in ("name", "stage", "dataset", "parties", "partition", "target"):
            table.add_column(column)
        for s in [*SCENARIOS.values(), SMOKE_SCENARIO]:
            table.add_row(s.name, s.stage, s.dataset, str(s.parties), s.partition, s.target)
        console.print(table)
        return
    try:
        chosen = get_scenario(name)
    except FedRiskError as e:
        raise fail(str(e), code=2) from e

    from fedrisk.ml.training import configure_torch
    from server.coordinator.runs import RunFailedError
    from simulations.scenarios import run_scenario

    configure_torch(threads=1)  # see configure_torch: 2 threads spin-wait on a busy machine
    try:
        run = run_scenario(chosen, registry=registry, seed=seed, model=model, data_dir=data_dir)
    except (FedRiskError, RunFailedError) as e:
        raise fail(str(e)) from e
    fed, cen = run.comparison.federated, run.comparison.centralized
    console.print(
        f"{chosen.name} ({chosen.stage}): federated encrypted AUC {fed['auc']:.4f}, "
        f"KS {fed['ks']:.4f}; centralized AUC {cen['auc']:.4f}"
    )
    console.print(f"signed artifact: {run.outcome.artifact_dir} (stage {chosen.stage})")
    console.print(f"results: {run.results_path}")
