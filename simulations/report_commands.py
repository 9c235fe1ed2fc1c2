"""``fedrisk report``, ``fedrisk study`` and ``fedrisk scenario``: studies, their report, releases.

``app`` is a :class:`typer.Typer` the main CLI (:mod:`simulations.cli`) mounts, so these
commands sit beside ``simulate`` and ``demo``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedrisk.errors import ConfigError, FedRiskError
from fedrisk.ml.training import configure_torch
from server.coordinator.runs import RunFailedError
from simulations.report import summary_table, write_report
from simulations.scenarios import SCENARIOS, SMOKE_SCENARIO, get_scenario
from simulations.studies import (
    PRESETS,
    StudyResults,
    get_preset,
    load_results,
    run_study,
    summarize,
)

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

app = typer.Typer(
    help="Simulation studies of the lifecycle scenarios and their report.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()
err_console = Console(stderr=True)

STUDY_FILE = "study.json"
"""Where ``report`` keeps the raw study results it runs (resumable), inside ``--out``."""


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def read_study(path: Path) -> StudyResults:
    """A study's results from its own ``results.json`` or from a report's ``results.json``.

    Raises
    ------
    ConfigError
        If the file is neither.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"results file must be readable JSON; {path}: {e}") from e
    if isinstance(document, dict) and document.get("format") == "fedrisk-report":
        return StudyResults.model_validate(document["study"])
    return load_results(path)


def _study(
    preset: str, results_path: Path, *, data_dir: Path | None, max_cells: int | None
) -> StudyResults:
    config = get_preset(preset)
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
    rows = summarize(results)
    console.print(summary_table(rows, title=f"Study {results.config.preset}: mean ± sd over seeds"))
    for row in rows:
        if row.note:
            console.print(f"[yellow]note[/] {row.task} | {row.partition} | {row.model}: {row.note}")


@app.command("study")
def study_cmd(
    out: Annotated[Path, typer.Option(help="results.json to write (and resume from)")],
    preset: Annotated[str, typer.Option(help=f"One of: {', '.join(PRESETS)}")] = "smoke",
    max_cells: Annotated[
        int | None, typer.Option(help="Stop after this many new cells (resume later)")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder")] = None,
) -> None:
    """Run a simulation study (resumable: cells already in --out are skipped)."""
    configure_torch(threads=2)
    try:
        results = _study(preset, out, data_dir=data_dir, max_cells=max_cells)
    except (FedRiskError, RunFailedError) as e:
        raise _fail(str(e)) from e
    if results.cells:
        _print_summary(results)
    if results.failures:
        console.print(f"[red]{len(results.failures)} cell(s) failed[/]; rerun to retry them")


@app.command("report")
def report_cmd(
    out: Annotated[Path, typer.Option(help="Folder for index.html, plots/ and results.json")],
    results: Annotated[
        Path | None,
        typer.Option(help="A study's results.json; without it the --preset study runs first"),
    ] = None,
    preset: Annotated[
        str, typer.Option(help=f"Study to run when no --results: {', '.join(PRESETS)}")
    ] = "smoke",
    data_dir: Annotated[Path | None, typer.Option(help="Data folder")] = None,
) -> None:
    """Write the HTML report (PNG plots, results.json) of a simulation study."""
    configure_torch(threads=2)
    try:
        if results is None:
            out.mkdir(parents=True, exist_ok=True)
            study = _study(preset, out / STUDY_FILE, data_dir=data_dir, max_cells=None)
        else:
            study = read_study(results)
        files = write_report(study, out)
    except (FedRiskError, RunFailedError) as e:
        raise _fail(str(e)) from e
    _print_summary(study)
    console.print(f"report: {files.html}")
    console.print(f"numbers: {files.results}")
    console.print(f"plots: {len(files.plots)} PNG files in {files.html.parent / 'plots'}")


@app.command("scenario")
def scenario_cmd(
    name: Annotated[str | None, typer.Argument(help="Scenario to train; omit to list them")] = None,
    registry: Annotated[
        Path, typer.Option(help="Registry folder receiving the signed artifact")
    ] = Path("registry"),
    model: Annotated[str | None, typer.Option(help="lr or mlp (default: the scenario's)")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder")] = None,
) -> None:
    """Train a lifecycle scenario encrypted and release its signed, stage-tagged artifact."""
    if name is None:
        table = Table(title="Lifecycle scenarios")
        for column in ("name", "stage", "dataset", "parties", "partition", "target"):
            table.add_column(column)
        for s in [*SCENARIOS.values(), SMOKE_SCENARIO]:
            table.add_row(s.name, s.stage, s.dataset, str(s.parties), s.partition, s.target)
        console.print(table)
        return
    configure_torch(threads=2)
    from simulations.scenarios import run_scenario

    if model not in (None, "lr", "mlp"):
        raise _fail(f"--model must be lr or mlp; got {model!r}")
    try:
        scenario = get_scenario(name)
        run = run_scenario(
            scenario,
            registry=registry,
            seed=seed,
            model=model,  # type: ignore[arg-type]
            data_dir=data_dir,
        )
    except (FedRiskError, RunFailedError) as e:
        raise _fail(str(e)) from e
    fed, cen = run.comparison.federated, run.comparison.centralized
    console.print(
        f"{scenario.name} ({scenario.stage}): federated encrypted AUC {fed['auc']:.4f}, "
        f"KS {fed['ks']:.4f}; centralized AUC {cen['auc']:.4f}"
    )
    console.print(f"signed artifact: {run.outcome.artifact_dir} (stage {scenario.stage})")
    console.print(f"results: {run.results_path}")
