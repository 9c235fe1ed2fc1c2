"""Client-drift remedies under label skew: FedAvg vs FedProx vs FedAdam / FedYogi, by AUC gap.

Run from the repository root::

    .venv/bin/python benchmarks/client_drift.py --json drift.json
    .venv/bin/python benchmarks/client_drift.py --tasks behaviour-taiwan --seeds 0 \\
        --variants fedavg fedyogi:0.01

For each lifecycle task's MLP under label skew (Dirichlet 0.3, the study's split) and each seed,
every variant trains the federation's own party code (:class:`clients.party.PartyNode`, the code
each ClientApp runs) in one process, summing the parties' vectors in plaintext as the
coordinator sums ciphertexts, for the scenario's rounds; the released model's AUC on the pooled
test data is compared with the tuned centralized MLP's (the study's baseline) on the same rows.
The in-process plaintext federation computes what the Flower run computes, without Flower's
process overhead; encryption changes the sums by ~1e-12 (the study's plaintext column).

A variant is ``fedavg``, ``fedprox:MU``, ``fedadam:ETA`` or ``fedyogi:ETA`` (server step size).
Every variant keeps the scenario's label-skew plan (rounds, client SGD and its rate).
``--model scorecard`` (or ``lr``) and ``--partition`` measure another model kind or split the
same way, e.g. the C-card scorecard's plans::

    .venv/bin/python benchmarks/client_drift.py --model scorecard --tasks collection-taiwan \
        --partition by:AGE --variants fedavg fedyogi:0.1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_TASKS = ("behaviour-taiwan", "collection-taiwan")
DEFAULT_VARIANTS = (
    "fedavg",
    "fedprox:0.1",
    "fedprox:1",
    "fedadam:0.01",
    "fedyogi:0.01",
    "fedyogi:0.003",
)


def variant_settings(variant: str) -> dict[str, Any]:
    """The spec settings of a variant name (see the module docstring)."""
    kind, _, value = variant.partition(":")
    if kind == "fedavg" and not value:
        return {"proximal_mu": 0.0, "server_optimizer": "fedavg"}
    if kind == "fedprox" and value:
        return {"proximal_mu": float(value), "server_optimizer": "fedavg"}
    if kind in ("fedadam", "fedyogi") and value:
        return {"server_optimizer": kind, "server_learning_rate": float(value)}
    raise SystemExit(
        f"variant must be fedavg, fedprox:MU, fedadam:ETA or fedyogi:ETA; got {variant!r}"
    )


def federated_auc(spec: Any, data: Any) -> float:
    """AUC on the pooled test rows of the model the in-process federation releases."""
    from fedrisk.federation.run_config import parse_run_config
    from fedrisk.ml.metrics import auc
    from simulations.runner import _run_config
    from simulations.workspace import prepare_workspace
    from tests.support.party_rounds import PartyRounds

    with tempfile.TemporaryDirectory(prefix="fedrisk-drift-") as tmp:
        # The run config exactly as the Flower run would be given it.
        ws = prepare_workspace(
            Path(tmp) / "config",
            schema=data.dataset.schema,
            parties=data.parties[:1],
            release_dir=Path(tmp) / "unused",
        )
        federation = parse_run_config(_run_config(spec, ws, plaintext=True))
        rounds = PartyRounds(
            Path(tmp), schema=data.dataset.schema, parties=data.parties, federation=federation
        )
        stats = rounds.statistics()
        global_sum = rounds.train(stats, None, range(1, spec.rounds + 1))
        assert global_sum is not None
        pipeline = rounds.nodes[0]._global_pipeline(stats, global_sum)
        target = data.dataset.schema.target_column
        y = data.pooled_test[target].to_numpy()
        return float(auc(y, pipeline.predict_proba(data.pooled_test)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument(
        "--model", choices=("mlp", "lr", "scorecard"), default="mlp", help="model kind"
    )
    parser.add_argument(
        "--partition", default=None, help="another split than dirichlet:ALPHA (iid, by:AGE, ...)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="override the plan's rounds")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    for variant in args.variants:
        variant_settings(variant)  # refuse a bad name before any work

    import numpy as np

    from fedrisk.ml.training import configure_torch
    from simulations.runner import central_baseline, prepare_data
    from simulations.scenarios import get_scenario

    configure_torch(threads=1)
    rows: list[dict[str, Any]] = []
    for task in args.tasks:
        scenario = get_scenario(task)
        for seed in args.seeds:
            base = scenario.spec(
                seed=seed,
                model=args.model,
                partition=args.partition or f"dirichlet:{args.alpha:g}",
                rounds=args.rounds,
            )
            data = prepare_data(base)
            central = central_baseline(base, data, rng=np.random.default_rng(seed + 1)).auc
            for variant in args.variants:
                spec = base.model_copy(update=variant_settings(variant))
                started = time.perf_counter()
                fed = federated_auc(spec, data)
                row = {
                    "task": task,
                    "seed": seed,
                    "variant": variant,
                    "federated_auc": round(fed, 4),
                    "centralized_auc": round(central, 4),
                    "gap": round(fed - central, 4),
                    "seconds": round(time.perf_counter() - started, 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary: list[dict[str, Any]] = []
    print(f"\n{'task':<20} {'variant':<15} {'gap mean':>9} {'sd':>7}  per seed")
    for task in args.tasks:
        for variant in args.variants:
            gaps = [r["gap"] for r in rows if r["task"] == task and r["variant"] == variant]
            sd = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
            summary.append(
                {
                    "task": task,
                    "variant": variant,
                    "gap_mean": round(statistics.mean(gaps), 4),
                    "gap_sd": round(sd, 4),
                    "gaps": gaps,
                }
            )
            print(f"{task:<20} {variant:<15} {statistics.mean(gaps):+9.4f} {sd:7.4f}  {gaps}")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
