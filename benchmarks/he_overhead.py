"""What CKKS costs: encrypted vs plaintext federations side by side, in one run.

For LR and for an MLP of about 10k parameters, runs the same federation (same data, parties,
seed and rounds) twice in Flower's simulation engine, once CKKS-encrypted and once in the
insecure plaintext comparison mode, and prints seconds per round (mean of rounds 2..R), bytes
per party per round up and down, and the encrypted / plaintext ratios; the modes alternate,
and the ratio range shows the spread over the repeats.

    .venv/bin/python benchmarks/he_overhead.py [--parties 3] [--rounds 5] [--dataset synthetic]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fedrisk.ml.training import configure_torch
from simulations.runner import FederationOutcome, SimulationSpec, prepare_data, run_federation


def _steady_rounds(outcome: FederationOutcome) -> list[dict[str, Any]]:
    """Rounds 2..R (round 1 alone if there is no other).

    Round 1 also starts the simulation's worker processes and imports torch, seconds that vary
    from run to run and are the same work in both modes. Callers take means rather than medians:
    Flower's simulation runtime polls every 0.1 s, so a median of round times moves in whole steps.
    """
    return outcome.history[1:] or outcome.history


def _steady_round_seconds(outcome: FederationOutcome) -> float:
    """Mean wall time of the steady rounds (train, evaluate and metrics waves)."""
    return float(statistics.fmean(h["seconds"] for h in _steady_rounds(outcome)))


PHASES = ("train", "evaluate", "metrics", "server_sums")


def _steady_phase_seconds(outcomes: list[FederationOutcome]) -> dict[str, float]:
    """Mean seconds of each phase of rounds 2..R over runs (the waves include the parties' work)."""
    return {
        phase: float(
            statistics.fmean(h["phase_seconds"][phase] for o in outcomes for h in _steady_rounds(o))
        )
        for phase in PHASES
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--parties", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--partition", default="iid")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per mode")
    parser.add_argument("--models", nargs="+", choices=("lr", "mlp"), default=["lr", "mlp"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    configure_torch(threads=1)
    console = Console(width=200)
    rows = []
    for model, hidden in (("lr", (64, 32)), ("mlp", (96, 64))):
        if model not in args.models:
            continue
        spec = SimulationSpec(
            dataset=args.dataset,
            parties=args.parties,
            partition=args.partition,
            model=model,
            rounds=args.rounds,
            hidden=hidden,
            seed=0,
        )
        data = prepare_data(spec)
        results: dict[bool, list[FederationOutcome]] = {False: [], True: []}
        # Interleave the modes so machine noise hits both alike; compare medians of round times.
        for _ in range(args.repeats):
            for plaintext in (False, True):
                with tempfile.TemporaryDirectory() as registry:
                    outcome = run_federation(
                        spec, data, release_dir=Path(registry), plaintext=plaintext
                    )
                results[plaintext].append(outcome)
        enc_runs = [_steady_round_seconds(o) for o in results[False]]
        plain_runs = [_steady_round_seconds(o) for o in results[True]]
        enc_t, plain_t = statistics.fmean(enc_runs), statistics.fmean(plain_runs)
        # Each repeat ran both modes back to back: its ratio shows the machine's noise.
        pair_ratios = [e / p for e, p in zip(enc_runs, plain_runs, strict=True)]
        enc, plain = results[False][-1], results[True][-1]
        rows.append(
            {
                "model": model,
                "parameters": len(enc.artifact.weights),
                "enc_seconds_per_round": enc_t,
                "plain_seconds_per_round": plain_t,
                "time_ratio": enc_t / plain_t,
                "time_ratio_min": min(pair_ratios),
                "time_ratio_max": max(pair_ratios),
                "enc_bytes_up_per_party_round": enc.bytes_up_per_party_round,
                "plain_bytes_up_per_party_round": plain.bytes_up_per_party_round,
                "bytes_ratio": enc.bytes_up_per_party_round / plain.bytes_up_per_party_round,
                "enc_bytes_down_per_party_round": enc.bytes_down_per_party_round,
                "plain_bytes_down_per_party_round": plain.bytes_down_per_party_round,
                "enc_phase_seconds": _steady_phase_seconds(results[False]),
                "plain_phase_seconds": _steady_phase_seconds(results[True]),
                "enc_final_auc": enc.history[-1]["auc"],
                "plain_final_auc": plain.history[-1]["auc"],
            }
        )
    table = Table(
        title=f"CKKS overhead: {args.dataset}, {args.parties} parties, {args.rounds} rounds"
    )
    for col in (
        "model",
        "params",
        "s/round enc",
        "s/round plain",
        "time ratio",
        "ratio range",
        "KB up/party/round enc",
        "KB plain",
        "bytes ratio",
        "KB down/party/round enc",
        "KB down plain",
        "AUC enc",
        "AUC plain",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["model"],
            str(r["parameters"]),
            f"{r['enc_seconds_per_round']:.2f}",
            f"{r['plain_seconds_per_round']:.2f}",
            f"{r['time_ratio']:.2f}",
            f"{r['time_ratio_min']:.2f}-{r['time_ratio_max']:.2f}",
            f"{r['enc_bytes_up_per_party_round'] / 1024:.0f}",
            f"{r['plain_bytes_up_per_party_round'] / 1024:.1f}",
            f"{r['bytes_ratio']:.1f}",
            f"{r['enc_bytes_down_per_party_round'] / 1024:.0f}",
            f"{r['plain_bytes_down_per_party_round'] / 1024:.1f}",
            f"{r['enc_final_auc']:.4f}",
            f"{r['plain_final_auc']:.4f}",
        )
    console.print(table)
    phases = Table(title="Where a round's time goes (mean s, rounds 2..R): CKKS / plaintext")
    for col in ("model", *PHASES):
        phases.add_column(col)
    for r in rows:
        enc_p, plain_p = r["enc_phase_seconds"], r["plain_phase_seconds"]
        phases.add_row(r["model"], *(f"{enc_p[p]:.3f} / {plain_p[p]:.3f}" for p in PHASES))
    console.print(phases)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
