"""Audit-anchor benchmark: decisions/s through the service's group-commit writer with and without
the signed-checkpoint anchor, in one run, on the same SQLite (or PostgreSQL) database.

Run from the repository root::

    .venv/bin/python benchmarks/audit_anchor.py                  # SQLite, 8 rounds of 4,000
    .venv/bin/python benchmarks/audit_anchor.py --db postgresql+psycopg://...  --rounds 4

Each configuration has its own database (so the anchor never has to link records it did not
see). Each round submits ``--wave`` decisions at once (as concurrent requests would) to a fresh
``GroupCommitWriter`` and waits until all are committed; the configurations take turns round by
round, so a busy machine slows them alike. This is the writer alone, without HTTP, so the
anchor's share of the cost is as large as it can look: the full service spends several times
more per decision elsewhere (``benchmarks/scoring.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.scoring.anchor import AuditAnchor  # noqa: E402
from server.scoring.db.engine import make_engine  # noqa: E402
from server.scoring.db.migrate import upgrade_database  # noqa: E402
from server.scoring.writer import DecisionWrite, GroupCommitWriter  # noqa: E402
from tests.support.scoring import decision_write  # noqa: E402

CONFIGS = {
    "no anchor": None,
    "anchor, default (1000 records / 1 s)": {"every_records": 1000, "every_seconds": 1.0},
    "anchor, every commit (1 record / 10 ms)": {"every_records": 1, "every_seconds": 0.01},
}


async def _submit(writer: GroupCommitWriter, items: list[DecisionWrite]) -> None:
    await asyncio.gather(*(writer.submit_decision(d) for d in items))


def run_round(
    engine: object, audit_dir: Path, wave: int, options: dict[str, float] | None
) -> tuple[float, float]:
    """Decisions per second of one wave through a writer, and CPU microseconds of this process
    (all threads: the anchor's signing included) per decision.

    Opening and closing the writer and the anchor stay outside the timing: they happen once per
    service run, not per decision.
    """
    items = [decision_write(i) for i in range(wave)]
    anchor = None
    if options is not None:
        anchor = AuditAnchor.open(
            key_path=audit_dir / "signing.key",
            checkpoint_path=audit_dir / "checkpoints.jsonl",
            engine=engine,  # type: ignore[arg-type]
            every_records=int(options["every_records"]),
            every_seconds=options["every_seconds"],
        )
    writer = GroupCommitWriter(engine, anchor=anchor)  # type: ignore[arg-type]
    gc.collect()
    try:
        start, cpu = time.perf_counter(), time.process_time()
        asyncio.run(_submit(writer, items))
        wall = time.perf_counter() - start
        cpu_us = (time.process_time() - cpu) / wave * 1e6
    finally:
        writer.close()
    return wave / wall, cpu_us


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--db",
        action="append",
        help="SQLAlchemy URL, one per configuration (default: SQLite files)",
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--wave", type=int, default=4000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedrisk-anchor-bench-"))
    urls = args.db or [f"sqlite:///{work / f'scoring-{i}.db'}" for i in range(len(CONFIGS))]
    if len(urls) != len(CONFIGS):
        parser.error(
            f"--db must be given {len(CONFIGS)} times (one database each); got {len(urls)}"
        )
    engines = [make_engine(url) for url in urls]
    for engine in engines:
        upgrade_database(engine)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    names = list(CONFIGS)
    for round_ in range(args.rounds):
        # each configuration goes first, second and last equally often
        for offset in range(len(names)):
            i = (round_ + offset) % len(names)
            name = names[i]
            result = run_round(engines[i], work / f"audit-{i}", args.wave, CONFIGS[name])
            results[name].append(result)
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    lines = [
        len((work / f"audit-{i}" / "checkpoints.jsonl").read_text().splitlines())
        for i in range(1, len(CONFIGS))
    ]
    for engine in engines:
        engine.dispose()
    base = statistics.median(r for r, _ in results["no anchor"])
    base_cpu = statistics.median(c for _, c in results["no anchor"])
    print(
        f"\ndecisions through the group-commit writer ({engines[0].dialect.name}, {args.rounds} "
        f"rounds of {args.wave:,}, medians; CPU is comparable on a shared machine, wall is not)"
    )
    print(f"{'':<44}{'decisions/s':>12}{'ratio':>7}{'CPU us/decision':>17}{'ratio':>7}")
    for name, values in results.items():
        rate = statistics.median(r for r, _ in values)
        cpu = statistics.median(c for _, c in values)
        print(f"{name:<44}{rate:>12,.0f}{rate / base:>7.3f}{cpu:>17.1f}{cpu / base_cpu:>7.3f}")
    print(f"checkpoints signed in the run, per anchored configuration: {lines}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
