"""Scale: many encrypted parties in Flower's simulation engine on this 2-core machine.

Runs one CKKS-encrypted federation of ``--parties`` synthetic parties for ``--rounds`` rounds and
records wall time, seconds per round, bytes uploaded per party per round, and the peak resident
memory of the whole process tree (SuperLink, ServerApp, Ray workers), sampled every 0.5 s.

    .venv/bin/python benchmarks/scale.py --parties 100 --rounds 10 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from fedrisk.federation.processes import descendants
from fedrisk.ml.training import configure_torch
from simulations.runner import SimulationSpec, prepare_data, run_federation


def _tree_rss_bytes(root: int) -> int:
    """Resident memory of ``root`` and every descendant, from /proc."""
    total = 0
    for pid in [root, *descendants(root)]:
        try:
            with Path(f"/proc/{pid}/statm").open() as handle:
                total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    return total


class PeakMemory(threading.Thread):
    """Samples the RSS of this process's tree until stopped; keeps the peak."""

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _tree_rss_bytes(os.getpid()))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parties", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    configure_torch(threads=1)
    spec = SimulationSpec(
        dataset="synthetic",
        parties=args.parties,
        partition="iid",
        model="lr",
        rounds=args.rounds,
        round_timeout=1800.0,
    )
    data = prepare_data(spec)
    sampler = PeakMemory()
    sampler.start()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as registry:
        outcome = run_federation(spec, data, release_dir=Path(registry))
    wall = time.monotonic() - started
    sampler.stop()
    result = {
        "parties": args.parties,
        "rounds": args.rounds,
        "wall_seconds": wall,
        "seconds_per_round": outcome.seconds_per_round,
        "bytes_up_per_party_round": outcome.bytes_up_per_party_round,
        "server_bytes_in_per_round": outcome.bytes_up_per_party_round * args.parties,
        "peak_rss_bytes": sampler.peak,
        "final_auc": outcome.history[-1]["auc"],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
