"""Vertical LR benchmark: seconds per epoch encrypted against plaintext, bytes per party per
epoch, all measured in one run.

Run from the repository root::

    .venv/bin/python benchmarks/vertical.py --json out.json
    .venv/bin/python benchmarks/vertical.py --dataset synthetic-vertical --epochs 3

Three trainings of the same aligned rows, the same batches and the same epochs (early stopping
off, so every one runs ``--epochs``):

- **engine**: the encrypted protocol in Flower's simulation engine (the real ServerApp and
  ClientApps; each party's own CKKS key, masked products, flooded sums);
- **in-process**: the same coordinator and party code with direct calls instead of Flower
  messages (what the cryptography itself costs);
- **plaintext**: the protocol's arithmetic without encryption (numpy), the oracle.

Printed: seconds per epoch of each, the ratios encrypted / plaintext, and the bytes each party
sends and receives per epoch (ciphertexts and masked sums, as the coordinator relays them).

Then, in the same run, serving: the lender's real ``/v1/applications/decision`` with a vertical
champion (two live ``fedrisk party serve`` hosts over mutual TLS) against a horizontal one, p50
and p99 at ``--connections`` connections and their ratio, and a host stopped mid-load
(``benchmarks/vertical_hosts.py``'s measurement, ``--decisions`` of each kind; ``--decisions 0``
skips it). The machine is shared: compare the ratios.
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


def measure(dataset: str, *, epochs: int, seed: int) -> dict[str, Any]:
    """Seconds per epoch (engine, in-process, plaintext) and bytes per party per epoch."""
    import numpy as np

    from fedrisk.data.vertical import align_by_join, load_vertical
    from fedrisk.ml.vertical import VerticalParams, train_plain_vertical
    from simulations.vertical import (
        party_matrices,
        prepare_vertical_workspace,
        run_in_engine,
        run_in_process,
    )

    params = VerticalParams(epochs=epochs, patience=epochs + 1, seed=seed)
    rng = np.random.default_rng(seed)
    views = align_by_join(load_vertical(dataset, rng=rng), rng=rng)
    out: dict[str, Any] = {
        "dataset": dataset,
        "epochs": epochs,
        "train_rows": len(views[0].rows("train")),
        "parties": {v.name: v.role for v in views},
        "params": params.model_dump(),
    }
    with tempfile.TemporaryDirectory(prefix="fedrisk-bench-vertical-") as tmp:
        ws = prepare_vertical_workspace(Path(tmp) / "engine", views)
        engine = run_in_engine(ws, params, model_id="bench-engine")
        ws2 = prepare_vertical_workspace(Path(tmp) / "inproc", views)
        inproc = run_in_process(ws2, params, model_id="bench-inproc")
    matrices = party_matrices(views)
    y = views[0].labels
    assert y is not None
    started = time.perf_counter()
    train_plain_vertical(
        matrices, y, train_rows=views[0].rows("train"), valid_rows=views[0].rows("valid"),
        params=params,
    )  # fmt: skip
    plain = (time.perf_counter() - started) / epochs
    engine_s = float(np.mean([e.seconds for e in engine.history]))
    inproc_s = float(np.mean([e.seconds for e in inproc.history]))
    out.update(
        seconds_per_epoch={"engine": engine_s, "in_process": inproc_s, "plaintext": plain},
        ratio_engine_to_plaintext=engine_s / plain,
        ratio_in_process_to_plaintext=inproc_s / plain,
        ratio_engine_to_in_process=engine_s / inproc_s,
        bytes_per_party_per_epoch={
            name: float(np.mean([e.bytes_per_party.get(name, 0) for e in engine.history]))
            for name in engine.parties
        },
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="fate-hetero")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decisions", type=int, default=800, help="decisions of each kind")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = measure(args.dataset, epochs=args.epochs, seed=args.seed)
    spe = result["seconds_per_epoch"]
    print(f"{result['dataset']}: {result['train_rows']} training rows, {result['epochs']} epochs")
    print(
        f"  seconds per epoch: engine {spe['engine']:.2f}, in-process {spe['in_process']:.2f}, "
        f"plaintext {spe['plaintext']:.4f}"
    )
    print(
        f"  encrypted / plaintext: engine {result['ratio_engine_to_plaintext']:.0f}x, "
        f"in-process {result['ratio_in_process_to_plaintext']:.0f}x; "
        f"engine / in-process {result['ratio_engine_to_in_process']:.2f}"
    )
    for name, size in result["bytes_per_party_per_epoch"].items():
        print(f"  {name}: {size / 1e6:.1f} MB per epoch (sent + received)")
    if args.decisions > 0:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import vertical_hosts

        result["decisions"] = vertical_hosts.measure(args.decisions, args.connections)
        vertical_hosts.print_summary(result["decisions"])
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
