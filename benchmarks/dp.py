"""Differential privacy benchmark: AUC against ε, and what a membership-inference attack learns.

Run from the repository root::

    .venv/bin/python benchmarks/dp.py --json out.json
    .venv/bin/python benchmarks/dp.py --models lr --epsilons 3,inf --seeds 0 --rounds 3

For every model kind, ε (``inf`` = no DP), DP mode and seed it trains one federation of
``--parties`` parties on ``--dataset`` split by ``--partition`` (default: UCI Taiwan, 5 parties,
quantity skew) and scores the released model on the pooled test rows.

The federation runs in this process, round by round, through the parties' own code
(:class:`clients.party.PartyNode`: its statistics, its DP-SGD or clipped-and-noised client
update, its evaluation histograms and its signed release), summing their vectors with the
insecure plaintext aggregation. Encryption changes the sum by ~1e-8 and costs time, not accuracy
(``fedrisk simulate`` runs the same party code under Flower with CKKS); leaving it out lets the
whole grid run on a shared 2-core machine. The DP noise comes from the parties' secret entropy,
so a seed fixes the split and the initial model, not the noise: the table shows mean and
standard deviation over seeds.

Membership inference (Yeom et al. 2018, loss threshold): the attacker scores each row by minus
the released model's log loss on it; its AUC at telling training rows (members) from as many
held-out test rows (non-members) is what the model leaks about membership (0.5 = nothing).
A model trained on 24k rows for a few epochs hardly overfits, so the attack finds little with or
without DP; ``--train-fraction 0.05 --local-epochs 20 --hidden 128,64`` trains a small, overfitting
MLP on which it does, and shows what a budget takes away from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from clients.party import PARTY_CONFIG_FILE, PartyNode, load_party_config  # noqa: E402
from fedrisk.federation.run_config import FederationConfig, parse_run_config  # noqa: E402
from fedrisk.ml.metrics import auc  # noqa: E402
from fedrisk.ml.training import configure_torch  # noqa: E402
from fedrisk.release.artifact import (  # noqa: E402
    ModelArtifact,
    load_trusted_keys,
    pipeline_from_artifact,
    read_artifact,
)
from secure_agg.aggregation import InsecurePlainAggregation  # noqa: E402
from simulations.runner import PreparedData, prepare_data  # noqa: E402
from simulations.spec import SimulationSpec  # noqa: E402
from simulations.workspace import SimWorkspace, prepare_workspace  # noqa: E402

SUM = InsecurePlainAggregation()


def run_federation_in_process(
    ws: SimWorkspace, n_parties: int, federation: FederationConfig
) -> tuple[ModelArtifact, float]:
    """One federation through the parties' code; the signed artifact and the wall seconds."""
    started = time.perf_counter()
    nodes = [
        PartyNode(
            load_party_config(ws.root / "parties" / f"party_{i}" / PARTY_CONFIG_FILE), federation
        )
        for i in range(n_parties)
    ]
    names = [node.config.name for node in nodes]
    stats = SUM.decode(SUM.sum_records([node.local_stats() for node in nodes]))
    global_sum = None
    history: list[dict[str, Any]] = []
    for rnd in range(1, federation.rounds + 1):
        updates = [node.train(stats, global_sum, rnd) for node in nodes]
        global_sum = SUM.decode(SUM.sum_records(updates))
        hist = SUM.sum_records([node.evaluate(stats, global_sum) for node in nodes])
        pooled_auc, pooled_ks = nodes[0].metrics(hist)
        history.append(
            {
                "round": rnd,
                "train_parties": names,
                "eval_parties": names,
                "auc": pooled_auc,
                "ks": pooled_ks,
            }
        )
    assert global_sum is not None
    _model_id, path = nodes[0].release(
        stats, global_sum, rounds=federation.rounds, history=history, parties=names
    )
    artifact = read_artifact(path, trusted_keys=load_trusted_keys(ws.trusted_keys_dir))
    return artifact, time.perf_counter() - started


def membership_auc(
    artifact: ModelArtifact, data: PreparedData, *, rng: np.random.Generator
) -> float:
    """Loss-threshold attack: AUC of ``-log loss`` at telling training rows from test rows."""
    target = data.dataset.schema.target_column
    assert target is not None
    pipeline = pipeline_from_artifact(artifact)
    n = min(len(data.pooled_train), len(data.pooled_test))
    members = data.pooled_train.iloc[rng.choice(len(data.pooled_train), n, replace=False)]
    others = data.pooled_test.iloc[rng.choice(len(data.pooled_test), n, replace=False)]
    scores = []
    for frame in (members, others):
        p = np.clip(pipeline.predict_proba(frame), 1e-12, 1 - 1e-12)
        y = frame[target].to_numpy()
        scores.append(y * np.log(p) + (1 - y) * np.log(1 - p))  # minus the log loss
    labels = np.concatenate([np.ones(n), np.zeros(n)])
    return float(auc(labels, np.concatenate(scores)))


def one_cell(
    ws: SimWorkspace,
    data: PreparedData,
    *,
    model: str,
    epsilon: float,
    mode: str,
    seed: int,
    rounds: int,
    delta: float,
    clip_norm: float,
    local_epochs: int = 1,
    hidden: str = "64,32",
) -> dict[str, Any]:
    """Train one federation and measure it."""
    dp = (
        {}
        if math.isinf(epsilon)
        else {
            "dp_mode": mode,
            "dp_epsilon": epsilon,
            "dp_delta": delta,
            "dp_clip_norm": clip_norm,
        }
    )
    federation = parse_run_config(
        {
            "run_id": f"dp-bench-{model}-{seed}",
            "rounds": rounds,
            "model": model,
            "hidden": hidden,
            "local_epochs": local_epochs,
            "seed": seed,
            "plaintext": True,
            "sim_workspace": str(ws.root),
            **dp,
        }
    ).with_calibrated_noise()
    artifact, seconds = run_federation_in_process(ws, len(data.parties), federation)
    target = data.dataset.schema.target_column
    assert target is not None
    p = pipeline_from_artifact(artifact).predict_proba(data.pooled_test)
    privacy = artifact.privacy
    return {
        "model": model,
        "mode": "none" if privacy is None else privacy.mode,
        "epsilon_budget": None if math.isinf(epsilon) else epsilon,
        "epsilon": None if privacy is None else privacy.epsilon,
        "noise_multiplier": None if privacy is None else privacy.noise_multiplier,
        "seed": seed,
        "auc": float(auc(data.pooled_test[target].to_numpy(), p)),
        "mia_auc": membership_auc(artifact, data, rng=np.random.default_rng(seed)),
        "seconds": seconds,
    }


def subsample(data: PreparedData, fraction: float, *, seed: int) -> PreparedData:
    """Keep ``fraction`` of every party's training rows (the test rows stay whole)."""
    if fraction >= 1.0:
        return data
    rng = np.random.default_rng(seed)
    parties = [
        dataclasses.replace(
            party,
            train=party.train.sample(frac=fraction, random_state=rng).reset_index(drop=True),
        )
        for party in data.parties
    ]
    return dataclasses.replace(
        data,
        parties=parties,
        pooled_train=pd.concat([p.train for p in parties], ignore_index=True),
    )


def summarise(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of every (model, mode, ε)."""
    groups: dict[tuple[str, str, float | None], list[dict[str, Any]]] = {}
    for cell in cells:
        key = (cell["model"], cell["mode"], cell["epsilon_budget"])
        groups.setdefault(key, []).append(cell)
    rows = []
    for (model, mode, budget), members in groups.items():
        aucs = [c["auc"] for c in members]
        mias = [c["mia_auc"] for c in members]
        eps = [c["epsilon"] for c in members if c["epsilon"] is not None]
        rows.append(
            {
                "model": model,
                "mode": mode,
                "epsilon_budget": budget,
                "epsilon_spent_max": max(eps) if eps else None,
                "noise_multiplier": members[0]["noise_multiplier"],
                "seeds": len(members),
                "auc_mean": statistics.fmean(aucs),
                "auc_sd": statistics.stdev(aucs) if len(aucs) > 1 else 0.0,
                "mia_auc_mean": statistics.fmean(mias),
                "mia_auc_sd": statistics.stdev(mias) if len(mias) > 1 else 0.0,
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """The table as text, one line per (model, mode, ε)."""
    header = (
        f"{'model':5} {'mode':7} {'eps':>5} {'spent':>6} {'sigma':>7} {'AUC':>15} {'MIA AUC':>15}"
    )
    print(header)
    for r in rows:
        budget = "inf" if r["epsilon_budget"] is None else f"{r['epsilon_budget']:g}"
        spent = "-" if r["epsilon_spent_max"] is None else f"{r['epsilon_spent_max']:.3f}"
        sigma = "-" if r["noise_multiplier"] is None else f"{r['noise_multiplier']:.3f}"
        print(
            f"{r['model']:5} {r['mode']:7} {budget:>5} {spent:>6} {sigma:>7} "
            f"{r['auc_mean']:.4f}±{r['auc_sd']:.4f} {r['mia_auc_mean']:.4f}±{r['mia_auc_sd']:.4f}"
        )


def main() -> None:
    """Parse the options, run the grid, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="taiwan")
    parser.add_argument("--parties", type=int, default=5)
    parser.add_argument("--partition", default="quantity")
    parser.add_argument("--models", default="lr,mlp")
    parser.add_argument("--epsilons", default="1,3,8,inf")
    parser.add_argument("--modes", default="sample", help="sample and/or client, comma-separated")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--clip-norm", type=float, default=1.0)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--hidden", default="64,32", help="MLP hidden widths")
    parser.add_argument(
        "--train-fraction", type=float, default=1.0, help="Keep this share of each party's rows"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    configure_torch(threads=1)
    models = args.models.split(",")
    if not set(models) <= {"lr", "mlp"}:
        parser.error(f"--models must be among lr, mlp; got {args.models}")
    epsilons = [float(e) for e in args.epsilons.split(",")]
    modes = args.modes.split(",")
    cells: list[dict[str, Any]] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        spec = SimulationSpec(
            dataset=args.dataset,
            parties=args.parties,
            partition=args.partition,
            model="lr",
            rounds=args.rounds,
            seed=seed,
        )
        data = subsample(prepare_data(spec), args.train_fraction, seed=seed)
        root = Path(tempfile.mkdtemp(prefix="fedrisk-dp-bench-"))
        try:
            ws = prepare_workspace(
                root / "federation",
                schema=data.dataset.schema,
                parties=data.parties,
                release_dir=root / "registry",
            )
            for model in models:
                for epsilon in epsilons:
                    for mode in ["none"] if math.isinf(epsilon) else modes:
                        cell = one_cell(
                            ws,
                            data,
                            model=model,
                            epsilon=epsilon,
                            mode=mode,
                            seed=seed,
                            rounds=args.rounds,
                            delta=args.delta,
                            clip_norm=args.clip_norm,
                            local_epochs=args.local_epochs,
                            hidden=args.hidden,
                        )
                        cells.append(cell)
                        print(json.dumps(cell), flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    rows = summarise(cells)
    print_table(rows)
    if args.json is not None:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        args.json.write_text(
            json.dumps({"settings": settings, "table": rows, "cells": cells}, indent=2),
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
