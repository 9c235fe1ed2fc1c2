"""Boosted-trees benchmark: federated vs central training time, served GBDT vs served LR.

Run from the repository root::

    .venv/bin/python benchmarks/trees.py --json out.json
    .venv/bin/python benchmarks/trees.py --dataset synthetic --parties 3 --duration 5

Two measurements, each side by side in one run (the machine is shared: compare the ratios):

- **Training**: the encrypted federated GBDT in Flower's simulation engine (the real ServerApp
  and ClientApps, CKKS, from submitting the run to the released artifact) over the same trees
  trained centrally on the pooled rows (:func:`simulations.tree_baselines.fit_central_trees`).
- **Serving**: two scoring services on 127.0.0.1, one serving a GBDT A-card, one an LR A-card
  (both trained on the same synthetic rows), loaded alternately with the same decision requests
  (fraud rules, graph, model, reason codes — TreeSHAP for the trees —, policy, audit record);
  then the same batch file uploaded to each, with and without reason codes.
  Target: served GBDT decisions/s >= 0.5 x served LR decisions/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import httpx  # noqa: E402
from scoring import (  # noqa: E402
    DECISION_PATH,
    ensure_wrk,
    make_batch_file,
    run_httpx,
    run_wrk,
    start_server,
    wrk_script,
)

from tests.support.artifacts import (  # noqa: E402
    build_forest_registry,
    build_registry,
    features_of,
    trained_model,
)
from tests.support.processes import free_port, stop_pid  # noqa: E402

TARGET_SERVED_RATIO = 0.5
MODEL_ID = "acard-bench"


def training_ratio(dataset: str, parties: int, partition: str, seed: int) -> dict[str, Any]:
    """Wall seconds of the encrypted federated GBDT and of the central fit on the same rows."""
    from fedrisk.ml.trees import TreeParams
    from simulations.runner import prepare_data, run_federation
    from simulations.spec import SimulationSpec
    from simulations.tree_baselines import fit_central_trees

    spec = SimulationSpec(
        dataset=dataset, parties=parties, partition=partition, model="gbdt", rounds=1, seed=seed
    )
    data = prepare_data(spec)
    with tempfile.TemporaryDirectory(prefix="fedrisk-trees-bench-") as scratch:
        print(
            f"training: federated GBDT, {dataset}, {parties} parties, {partition} ...", flush=True
        )
        start = time.perf_counter()
        outcome = run_federation(spec, data, release_dir=Path(scratch))
        federated = time.perf_counter() - start
    print("training: the same trees centrally ...", flush=True)
    start = time.perf_counter()
    central = fit_central_trees(
        data.pooled_train, data.dataset.schema, params=TreeParams(seed=seed)
    )
    central_seconds = time.perf_counter() - start
    return {
        "dataset": dataset,
        "parties": parties,
        "partition": partition,
        "federated_seconds": federated,
        "federated_trees": len(outcome.history),
        "central_seconds": central_seconds,
        "central_trees": len(central.forest.trees),
        "ratio": federated / central_seconds,
        # Early stopping sees each party's own validation rows in the federation and one pooled
        # split centrally, so the two may stop at different tree counts: also per tree.
        "ratio_per_tree": (federated / max(len(outcome.history), 1))
        / (central_seconds / max(len(central.forest.trees), 1)),
    }


def _batch(base: str, path: Path, rows: int, *, reasons: bool) -> float:
    """Rows/s of one CSV upload, streamed back (upload + score + download)."""
    start = time.perf_counter()
    lines = 0
    with (
        httpx.Client(timeout=600.0) as client,
        client.stream(
            "POST",
            f"{base}/v1/batch/application",
            params={"reasons": "true"} if reasons else None,
            content=path.read_bytes(),
            headers={"content-type": "text/csv"},
        ) as response,
    ):
        response.raise_for_status()
        for block in response.iter_bytes():
            lines += block.count(b"\n")
    if lines - 1 != rows:
        raise RuntimeError(f"batch answered {lines - 1} rows for {rows}")
    return rows / (time.perf_counter() - start)


def serving_ratio(
    *, duration: float, connections: int, repeats: int, batch_rows: int, work: Path
) -> dict[str, Any]:
    """Decisions/s and batch rows/s of a served GBDT and a served LR, alternating."""
    registries = {"lr": work / "registry-lr", "gbdt": work / "registry-gbdt"}
    build_registry(registries["lr"], {MODEL_ID: "application"})
    build_forest_registry(registries["gbdt"], {MODEL_ID: "application"})
    trained = trained_model()
    bodies = [
        json.dumps(features_of(trained.sample.iloc[i], trained.schema), separators=(",", ":"))
        for i in range(64)
    ]
    wrk = ensure_wrk()
    servers: dict[str, tuple[int, str]] = {}
    results: dict[str, Any] = {"lr": {"decisions": []}, "gbdt": {"decisions": []}}
    try:
        for kind, registry in registries.items():
            port = free_port()
            pid = start_server(
                registry, f"sqlite:///{work / f'{kind}.db'}", port, work / f"{kind}.log"
            )
            servers[kind] = (pid, f"http://127.0.0.1:{port}")
            with httpx.Client(base_url=servers[kind][1], timeout=10.0) as client:
                for i in range(200):  # warm-up: first-request paths, caches
                    body = {
                        "application_id": f"warm-{i}",
                        "applicant_id": f"warm-{i}",
                        "features": json.loads(bodies[i % len(bodies)]),
                        "signals": {},
                    }
                    client.post(DECISION_PATH, json=body).raise_for_status()
        for r in range(repeats):
            for kind in ("lr", "gbdt"):
                base = servers[kind][1]
                print(
                    f"load {r + 1}/{repeats}: {kind} decisions for {duration:.0f} s ...", flush=True
                )
                if wrk:
                    run = run_wrk(
                        wrk, base + DECISION_PATH, wrk_script(bodies), duration=duration,
                        connections=connections, workdir=work,
                    )  # fmt: skip
                else:
                    run = run_httpx(
                        base + DECISION_PATH, "POST", bodies, duration=duration,
                        connections=connections, workdir=work,
                    )  # fmt: skip
                results[kind]["decisions"].append(run)
        path = work / "batch.csv"
        make_batch_file(path, batch_rows, "csv")
        for reasons in (False, True):
            for kind in ("lr", "gbdt"):
                label = "batch_reasons_rows_per_s" if reasons else "batch_rows_per_s"
                print(f"batch: {kind}, {batch_rows:,} rows, reasons={reasons} ...", flush=True)
                results[kind][label] = _batch(servers[kind][1], path, batch_rows, reasons=reasons)
    finally:
        for pid, _ in servers.values():
            stop_pid(pid)
    for kind in ("lr", "gbdt"):
        runs = results[kind]["decisions"]
        results[kind]["decisions_per_s"] = sum(r["rps"] for r in runs) / len(runs)
        results[kind]["p99_ms"] = max(r["p99_ms"] for r in runs)
    lr, gbdt = results["lr"], results["gbdt"]
    return {
        **results,
        "decisions_ratio": gbdt["decisions_per_s"] / lr["decisions_per_s"],
        "batch_ratio": gbdt["batch_rows_per_s"] / lr["batch_rows_per_s"],
        "batch_reasons_ratio": gbdt["batch_reasons_rows_per_s"] / lr["batch_reasons_rows_per_s"],
        "target_decisions_ratio": TARGET_SERVED_RATIO,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="taiwan")
    parser.add_argument("--parties", type=int, default=5)
    parser.add_argument("--partition", default="quantity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-training", action="store_true", help="serving only")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="alternating load runs per kind")
    parser.add_argument("--batch-rows", type=int, default=200_000)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    duration = min(max(args.duration, 1.0), 60.0)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="fedrisk-trees-bench-") as scratch:
        out["serving"] = serving_ratio(
            duration=duration,
            connections=args.connections,
            repeats=max(args.repeats, 1),
            batch_rows=args.batch_rows,
            work=Path(scratch),
        )
    if not args.skip_training:
        out["training"] = training_ratio(args.dataset, args.parties, args.partition, args.seed)
    s = out["serving"]
    print()
    print("served decisions/s (fraud rules, graph, model, reasons, policy, audit record):")
    for kind in ("lr", "gbdt"):
        k = s[kind]
        print(
            f"  {kind:5s} {k['decisions_per_s']:8.0f}/s  p99 {k['p99_ms']:.1f} ms   batch "
            f"{k['batch_rows_per_s']:9.0f} rows/s, "
            f"with reasons {k['batch_reasons_rows_per_s']:9.0f}"
        )
    print(
        f"  GBDT / LR: decisions {s['decisions_ratio']:.2f} (target >= {TARGET_SERVED_RATIO}), "
        f"batch {s['batch_ratio']:.2f}, batch with reasons {s['batch_reasons_ratio']:.2f}"
    )
    if "training" in out:
        t = out["training"]
        print(
            f"training: federated {t['federated_seconds']:.0f} s ({t['federated_trees']} trees) / "
            f"central {t['central_seconds']:.1f} s ({t['central_trees']} trees) = "
            f"{t['ratio']:.1f}x ({t['ratio_per_tree']:.1f}x per tree)"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
