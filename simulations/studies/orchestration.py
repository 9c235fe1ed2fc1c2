"""Running a whole study: plan its cells, skip those already done, save after every cell.

The results file is rewritten after every cell, so a study can be stopped and resumed: cells
already present with the same settings are skipped; failed cells are retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from fedrisk.errors import FedRiskError
from fedrisk.ml.kinds import ModelKind
from server.coordinator.runs import RunFailedError
from simulations.runner import EventHandler
from simulations.scenarios import Scenario, get_scenario
from simulations.studies.cells import run_cell
from simulations.studies.config import PartitionKind, StudyConfig, cell_key, partition_text
from simulations.studies.results import CellResult, StudyResults, load_results, save_results

ProgressHandler = Callable[[str], None]
PlannedCell = tuple[Scenario, PartitionKind, ModelKind, int]


def planned_cells(config: StudyConfig) -> list[PlannedCell]:
    """Every cell of ``config``, in run order (task, partition, model, seed)."""
    return [
        (get_scenario(task), kind, model, seed)
        for task in config.tasks
        for kind in config.partitions
        for model in config.models
        for seed in config.seeds
    ]


def _up_to_date(cell: CellResult, scenario: Scenario, config: StudyConfig, seed: int) -> bool:
    spec = scenario.spec(
        seed=seed,
        model=cell.model,
        partition=cell.partition,
        rounds=config.rounds,
        trees=config.trees,
    )
    wants_plaintext = config.wants_plaintext(cell.model, seed)
    return (
        cell.rounds == spec.rounds
        and cell.parties == spec.parties
        and cell.local_epochs == spec.local_epochs
        and cell.learning_rate == spec.learning_rate
        and cell.optimizer == spec.optimizer
        and cell.proximal_mu == spec.proximal_mu
        and cell.server_optimizer == spec.server_optimizer
        and cell.server_learning_rate == spec.server_learning_rate
        and (cell.plaintext is not None or not wants_plaintext)
    )


def _due_cells(
    plan: list[PlannedCell], results: StudyResults, config: StudyConfig
) -> list[tuple[PlannedCell, str]]:
    """The planned cells not in ``results`` with the same settings, with their keys."""
    due = []
    for cell in plan:
        scenario, kind, model, seed = cell
        text = partition_text(scenario, kind, alpha=config.dirichlet_alpha)
        key = cell_key(scenario.name, text, model, seed)
        done = results.cells.get(key)
        if done is None or not _up_to_date(done, scenario, config, seed):
            due.append((cell, key))
    return due


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _open_results(path: Path, config: StudyConfig) -> StudyResults:
    """The results to resume (under the new ``config``), or a fresh document."""
    if path.exists():
        return load_results(path).model_copy(update={"config": config})
    return StudyResults(created_at=_now(), updated_at=_now(), config=config)


def _cell_line(cell: CellResult) -> str:
    return (
        f"{cell.key}: encrypted AUC {cell.encrypted.auc:.4f}, "
        f"centralized {cell.centralized.auc:.4f}, gap "
        f"{cell.encrypted.auc - cell.centralized.auc:+.4f}"
    )


def run_study(
    config: StudyConfig,
    *,
    results_path: Path,
    data_dir: Path | None = None,
    registry: Path | None = None,
    on_progress: ProgressHandler | None = None,
    on_event: EventHandler | None = None,
    max_cells: int | None = None,
) -> StudyResults:
    """Run every cell of ``config`` not yet in ``results_path``; save after each cell.

    Parameters
    ----------
    config
        The cells to run (see :data:`simulations.studies.config.PRESETS`).
    results_path
        The ``results.json`` to resume from and write to.
    data_dir
        Folder of the real data files.
    registry
        Keep every released encrypted-run artifact here (default: discard them).
    on_progress
        Called with one line of text per cell (what ran, AUCs, time, ETA).
    on_event
        Flower run events (rounds, releases), as in :func:`simulations.runner.run_federation`.
    max_cells
        Stop after running this many cells (the rest stay to be resumed).

    Returns
    -------
    StudyResults
        Every cell run so far, including earlier runs; failures are recorded, not raised.
    """
    say = on_progress or (lambda _message: None)
    results = _open_results(results_path, config)
    plan = planned_cells(config)
    todo = _due_cells(plan, results, config)
    say(f"{len(plan) - len(todo)} of {len(plan)} cells already done; {len(todo)} to run")
    if max_cells is not None:
        todo = todo[:max_cells]
    spent: list[float] = []
    for index, ((scenario, kind, model, seed), key) in enumerate(todo, start=1):
        started = time.monotonic()
        try:
            cell = run_cell(
                scenario,
                kind,
                model,
                seed,
                config=config,
                data_dir=data_dir,
                registry=registry,
                on_event=on_event,
            )
        except (FedRiskError, RunFailedError, OSError) as e:
            results.failures[key] = f"{type(e).__name__}: {e}"
            results.updated_at = _now()
            save_results(results, results_path)
            say(f"[{index}/{len(todo)}] {key} FAILED: {e}")
            continue
        results.cells[key] = cell
        results.failures.pop(key, None)
        results.updated_at = _now()
        save_results(results, results_path)
        spent.append(time.monotonic() - started)
        eta = float(np.mean(spent)) * (len(todo) - index)
        timing = f"{_duration(spent[-1])}, ETA {_duration(eta)}"
        say(f"[{index}/{len(todo)}] {_cell_line(cell)}; {timing}")
    if not results_path.exists():
        save_results(results, results_path)
    return results
