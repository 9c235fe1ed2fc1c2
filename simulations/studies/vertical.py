"""The vertical study: encrypted vertical LR on each vertical dataset and seed, against the
centralized LR on the joined features and the guest's own LR.

One *vertical cell* is one (dataset, seed): :func:`simulations.vertical.simulate_vertical` aligns
the parties by private set intersection and trains the encrypted vertical LR (in Flower's
simulation engine, or in-process for the smoke preset), then scores it and both baselines on
the guest's test customers. The results file (format ``fedrisk-vertical-study`` version 1) is
``{"format", "version", "created_at", "updated_at", "config": VerticalStudyConfig,
"cells": {key: VerticalCell}, "failures": {key: message}}`` with ``key`` =
``"<dataset>|vertical|lr|seed<seed>"``; it is rewritten after every cell, so a study resumes
(cells already present with the same settings are skipped; failed ones are retried).

Presets: ``vertical`` (FATE's hetero split, the synthetic bank + telecom + e-commerce set and the
Taiwan three-way split, seeds 0-2, the default recipe, in the engine) and ``vertical-smoke``
(600 synthetic customers, 2 epochs, in-process: seconds, for tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fedrisk.data.catalog import VERTICAL_DATASET_NAMES
from fedrisk.errors import FedRiskError
from fedrisk.files import write_atomic
from fedrisk.ml.vertical import VerticalParams
from simulations.studies.config import preset_named
from simulations.studies.results import StrictRecord, read_document, rounded
from simulations.studies.summary import mean_sd

VerticalRunner = Callable[..., dict[str, Any]]
"""What runs one cell: :func:`simulations.vertical.simulate_vertical`'s signature."""
ProgressHandler = Callable[[str], None]

GUEST_GAIN_BAR = {"fate-hetero": 0.05, "synthetic-vertical": 0.02}
"""The issue's bars on federated minus guest-only AUC, per dataset."""
CENTRAL_GAP_BAR = {"fate-hetero": -0.005}
"""The issue's bar on federated minus centralized AUC, per dataset."""


class VerticalStudyConfig(BaseModel):
    """Which vertical cells a study runs, and with what recipe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str
    datasets: tuple[str, ...] = Field(min_length=1)
    seeds: tuple[int, ...] = Field(min_length=1)
    engine: bool = True
    """Flower's simulation engine (True) or the same code in-process (tests)."""
    epochs: int | None = Field(default=None, ge=1)
    """Override the recipe's epochs (tests); None keeps :class:`VerticalParams`' default."""
    n_customers: int = Field(default=20_000, ge=100)
    """Customers of the synthetic set (the real sets use their files)."""

    def params(self, seed: int) -> VerticalParams:
        """The recipe of one seed's cell."""
        update: dict[str, int] = {} if self.epochs is None else {"epochs": self.epochs}
        return VerticalParams(seed=seed, **update)


VERTICAL_PRESETS: dict[str, VerticalStudyConfig] = {
    "vertical": VerticalStudyConfig(
        preset="vertical", datasets=tuple(VERTICAL_DATASET_NAMES), seeds=(0, 1, 2)
    ),
    "vertical-smoke": VerticalStudyConfig(
        preset="vertical-smoke",
        datasets=("synthetic-vertical",),
        seeds=(0,),
        engine=False,
        epochs=2,
        n_customers=600,
    ),
}


def get_vertical_preset(name: str) -> VerticalStudyConfig:
    """The vertical study preset ``name``.

    Raises
    ------
    ConfigError
        If there is no such preset.
    """
    return preset_named(VERTICAL_PRESETS, name, what="vertical preset")


class VerticalCell(StrictRecord):
    """One (dataset, seed): the three models on the guest's test customers, and the costs."""

    key: str
    dataset: str
    seed: int
    engine: str
    parties: dict[str, str]
    """Party name -> ``guest`` / ``host``."""
    overlap: dict[str, float]
    """Per host, the share of the guest's customers it knows (from the PSI sizes)."""
    n_train: int
    n_valid: int
    n_test: int
    federated_auc: float
    plaintext_protocol_auc: float
    """The same protocol without encryption, same batches (the oracle)."""
    centralized_auc: float
    guest_only_auc: float
    epochs: int
    best_epoch: int
    seconds_per_epoch: float
    bytes_per_party_per_epoch: dict[str, float]
    seconds: float
    params: dict[str, float | int]

    @property
    def central_gap(self) -> float:
        """Federated minus centralized AUC."""
        return self.federated_auc - self.centralized_auc

    @property
    def guest_gain(self) -> float:
        """Federated minus guest-only AUC."""
        return self.federated_auc - self.guest_only_auc


class VerticalStudyResults(StrictRecord):
    """The results file of a vertical study."""

    format: Literal["fedrisk-vertical-study"] = "fedrisk-vertical-study"
    version: Literal[1] = 1
    created_at: str
    updated_at: str
    config: VerticalStudyConfig
    cells: dict[str, VerticalCell] = Field(default_factory=dict)
    failures: dict[str, str] = Field(default_factory=dict)


def vertical_key(dataset: str, seed: int) -> str:
    """The key of a vertical cell."""
    return f"{dataset}|vertical|lr|seed{seed}"


def load_vertical_results(path: Path) -> VerticalStudyResults:
    """Read and validate a vertical study's results file.

    Raises
    ------
    ConfigError
        If the file is not one.
    """
    return read_document(path, VerticalStudyResults, what="a fedrisk vertical study results file")


def save_vertical_results(results: VerticalStudyResults, path: Path) -> None:
    """Write ``results`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, results.model_dump_json(indent=1))


def cell_from_document(key: str, doc: dict[str, Any], *, seed: int) -> VerticalCell:
    """A cell from :func:`simulations.vertical.simulate_vertical`'s document (no history)."""
    return VerticalCell(
        key=key,
        dataset=doc["dataset"],
        seed=seed,
        engine=doc["engine"],
        parties=doc["parties"],
        overlap={k: rounded(v) for k, v in doc["overlap"].items()},
        n_train=doc["rows"]["train"],
        n_valid=doc["rows"]["valid"],
        n_test=doc["rows"]["test"],
        federated_auc=rounded(doc["federated"]["auc"]),
        plaintext_protocol_auc=rounded(doc["plaintext_protocol"]["auc"]),
        centralized_auc=rounded(doc["centralized"]["auc"]),
        guest_only_auc=rounded(doc["guest_only"]["auc"]),
        epochs=doc["epochs"],
        best_epoch=doc["federated"]["best_epoch"],
        seconds_per_epoch=rounded(doc["seconds_per_epoch"]),
        bytes_per_party_per_epoch={
            k: rounded(v) for k, v in doc["bytes_per_party_per_epoch"].items()
        },
        seconds=rounded(doc["seconds"]),
        params=doc["params"],
    )


def _up_to_date(cell: VerticalCell, config: VerticalStudyConfig) -> bool:
    engine = "flower-simulation" if config.engine else "in-process"
    return cell.engine == engine and cell.params == config.params(cell.seed).model_dump()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_vertical_study(
    config: VerticalStudyConfig,
    *,
    results_path: Path,
    data_dir: Path | None = None,
    on_progress: ProgressHandler | None = None,
    max_cells: int | None = None,
    runner: VerticalRunner | None = None,
) -> VerticalStudyResults:
    """Run every (dataset, seed) of ``config`` not yet in ``results_path``; save after each.

    ``runner`` defaults to :func:`simulations.vertical.simulate_vertical` (imported here: it
    pulls in Flower and TenSEAL). Failures are recorded, not raised.
    """
    from server.coordinator.runs import RunFailedError

    if runner is None:
        from simulations.vertical import simulate_vertical

        runner = simulate_vertical
    say = on_progress or (lambda _line: None)
    if results_path.exists():
        results = load_vertical_results(results_path).model_copy(update={"config": config})
    else:
        results = VerticalStudyResults(created_at=_now(), updated_at=_now(), config=config)
    plan = [(d, s) for d in config.datasets for s in config.seeds]
    todo = [
        (d, s)
        for d, s in plan
        if (done := results.cells.get(vertical_key(d, s))) is None or not _up_to_date(done, config)
    ]
    say(f"{len(plan) - len(todo)} of {len(plan)} vertical cells already done; {len(todo)} to run")
    for index, (dataset, seed) in enumerate(todo[:max_cells], start=1):
        key = vertical_key(dataset, seed)
        started = time.monotonic()
        try:
            doc = runner(
                dataset,
                seed=seed,
                params=config.params(seed),
                engine=config.engine,
                data_dir=data_dir,
                n_customers=config.n_customers,
            )
        except (FedRiskError, RunFailedError, OSError) as e:
            results.failures[key] = f"{type(e).__name__}: {e}"
            results.updated_at = _now()
            save_vertical_results(results, results_path)
            say(f"[{index}/{len(todo)}] {key} FAILED: {e}")
            continue
        cell = cell_from_document(key, doc, seed=seed)
        results.cells[key] = cell
        results.failures.pop(key, None)
        results.updated_at = _now()
        save_vertical_results(results, results_path)
        say(
            f"[{index}/{len(todo)}] {key}: federated {cell.federated_auc:.4f}, centralized "
            f"{cell.centralized_auc:.4f}, guest only {cell.guest_only_auc:.4f}, "
            f"{cell.seconds_per_epoch:.1f} s/epoch; {time.monotonic() - started:.0f} s"
        )
    if not results_path.exists():
        save_vertical_results(results, results_path)
    return results


class VerticalSummaryRow(StrictRecord):
    """One dataset over its seeds (mean and sample sd; sd None for one seed)."""

    dataset: str
    parties: dict[str, str]
    overlap: dict[str, float]
    seeds: list[int]
    federated: list[float]
    federated_mean: float
    federated_sd: float | None
    centralized_mean: float
    guest_only_mean: float
    central_gaps: list[float]
    guest_gains: list[float]
    seconds_per_epoch: list[float]
    guest_gain_bar: float | None
    central_gap_bar: float | None
    passes: bool | None
    """Whether every seed clears the dataset's bars (None: no bar for this dataset)."""


def summarize_vertical(results: VerticalStudyResults) -> list[VerticalSummaryRow]:
    """One row per dataset, in the config's order."""
    rows = []
    order = list(dict.fromkeys([*results.config.datasets, *VERTICAL_DATASET_NAMES]))
    for dataset in order:
        cells = sorted(
            (c for c in results.cells.values() if c.dataset == dataset), key=lambda c: c.seed
        )
        if not cells:
            continue
        gains = [rounded(c.guest_gain) for c in cells]
        gaps = [rounded(c.central_gap) for c in cells]
        gain_bar = GUEST_GAIN_BAR.get(dataset)
        gap_bar = CENTRAL_GAP_BAR.get(dataset)
        checks = [g >= gain_bar for g in gains] if gain_bar is not None else []
        checks += [g >= gap_bar for g in gaps] if gap_bar is not None else []
        fed_mean, fed_sd = mean_sd([c.federated_auc for c in cells])
        rows.append(
            VerticalSummaryRow(
                dataset=dataset,
                parties=cells[0].parties,
                overlap=cells[0].overlap,
                seeds=[c.seed for c in cells],
                federated=[c.federated_auc for c in cells],
                federated_mean=fed_mean,
                federated_sd=fed_sd,
                centralized_mean=mean_sd([c.centralized_auc for c in cells])[0],
                guest_only_mean=mean_sd([c.guest_only_auc for c in cells])[0],
                central_gaps=gaps,
                guest_gains=gains,
                seconds_per_epoch=[c.seconds_per_epoch for c in cells],
                guest_gain_bar=gain_bar,
                central_gap_bar=gap_bar,
                passes=all(checks) if checks else None,
            )
        )
    return rows


def signed(values: Sequence[float], digits: int = 4) -> str:
    """``+0.0123, -0.0040``: per-seed differences as the tables show them."""
    return ", ".join(f"{v:+.{digits}f}" for v in values)
