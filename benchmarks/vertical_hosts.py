"""What the hosts add to a vertical decision: the lender's part of a decision (guest part plus
two live host feature services on 127.0.0.1 over mutual TLS, called concurrently) against the
guest's part alone, in one run, at ``--connections`` concurrent decisions.

Starts the two services of ``tests.support.feature_hosts`` (``fedrisk party serve``), sends
``--decisions`` decisions through ``server.scoring.vertical_hosts.vertical_score`` with
``--connections`` in flight, and prints p50 / p99 latency of each, and the ratio.

    .venv/bin/python benchmarks/vertical_hosts.py --decisions 1600 --connections 16 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from server.scoring.vertical_hosts import HostClient, vertical_score
from tests.support.feature_hosts import CUSTOMERS, guest_part, running_host_services


async def _measure(
    client: HostClient | None, key: Any, *, decisions: int, connections: int
) -> list[float]:
    guest, _ = guest_part()
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(decisions):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            started = time.perf_counter()
            if client is None:
                guest.partial_scores(pd.DataFrame([{"income": 5000.0}]))
            else:
                await vertical_score(
                    guest,
                    {"income": 5000.0},
                    customer=CUSTOMERS[i % len(CUSTOMERS)],
                    id_kind="opaque",
                    key=key,
                    hosts=client,
                    request_id=uuid.uuid4().hex,
                )
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(connections)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1600)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_host_services(Path(tmp)) as services:

        async def run() -> dict[str, list[float]]:
            client = HostClient(services.urls, tls=services.tls(), deadline=1.0)
            try:
                await _measure(client, services.key, decisions=64, connections=args.connections)
                both = await _measure(
                    client, services.key, decisions=args.decisions, connections=args.connections
                )
            finally:
                await client.aclose()
            alone = await _measure(
                None, services.key, decisions=args.decisions, connections=args.connections
            )
            return {"with_hosts": both, "guest_only": alone}

        measured = asyncio.run(run())
    doc: dict[str, Any] = {"decisions": args.decisions, "connections": args.connections}
    for name, values in measured.items():
        ms = np.asarray(values) * 1000.0
        doc[name] = {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}
    doc["p99_ratio"] = doc["with_hosts"]["p99_ms"] / doc["guest_only"]["p99_ms"]
    print(json.dumps(doc, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
