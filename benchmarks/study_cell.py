"""Where one study cell's time goes: data, federation, centralized and local baselines, reference.

Run from the repository root::

    FEDRISK_DATA_DIR=../shared/data .venv/bin/python benchmarks/study_cell.py \
        --task behaviour-taiwan --partition quantity --model gbdt --json out.json

Runs one cell of ``fedrisk study`` (:func:`simulations.studies.cells.run_cell`, seed 0 unless
``--seed``) and prints the seconds spent in each phase, with the cell's federated, centralized
and reference AUC, so a change meant to make cells cheaper can show both its time and that the
results did not move. The machine is shared: compare phases of runs made close together.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import simulations.studies.cells as cells  # noqa: E402
from fedrisk.ml.training import configure_torch  # noqa: E402
from simulations.scenarios import get_scenario  # noqa: E402
from simulations.studies.config import PARTITION_KINDS, StudyConfig  # noqa: E402

PHASES = {
    "prepare_data": "data",
    "run_federation": "federation",
    "reference_scores": "reference",
    "_central_model": "centralized",
    "_party_result": "local-only",
}
"""Functions of :mod:`simulations.studies.cells` timed, and the phase each one is."""


def _timed(seconds: dict[str, float], phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[phase] = seconds.get(phase, 0.0) + time.monotonic() - started

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="behaviour-taiwan")
    parser.add_argument("--partition", default="quantity", choices=PARTITION_KINDS)
    parser.add_argument("--model", default="gbdt", choices=("lr", "mlp", "scorecard", "gbdt"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="Write the measurements here too")
    args = parser.parse_args()

    configure_torch(threads=1)  # as `fedrisk study` does
    seconds: dict[str, float] = {}
    for name, phase in PHASES.items():
        setattr(cells, name, _timed(seconds, phase, getattr(cells, name)))
    config = StudyConfig(
        preset="benchmark",
        tasks=(args.task,),
        partitions=(args.partition,),
        models=(args.model,),
        seeds=(args.seed,),
    )
    started = time.monotonic()
    cell = cells.run_cell(
        get_scenario(args.task), args.partition, args.model, args.seed, config=config
    )
    total = time.monotonic() - started
    history = cell.encrypted.history
    result = {
        "cell": cell.key,
        "seconds": {"total": total, **seconds},
        "rounds": len(history),
        "federated_auc": cell.encrypted.auc,
        "centralized_auc": cell.centralized.auc,
        "reference_auc": None if cell.reference is None else cell.reference.auc,
    }
    for phase, value in result["seconds"].items():
        print(f"{phase:>12}: {value:8.1f} s")
    print(
        f"{cell.key}: {len(history)} rounds; AUC federated {cell.encrypted.auc:.6f}, "
        f"centralized {cell.centralized.auc:.6f}, reference {result['reference_auc']}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
