"""A vertical decision against a horizontal one, on the real route, in one run: the lender's
``POST /v1/applications/decision`` served by two real scoring services (uvicorn, one worker
each), one whose A-card champion is a vertical model (its signed guest part plus two live host
feature services, ``fedrisk party serve``, over mutual TLS on 127.0.0.1) and one whose
champion is a whole LR model.

    .venv/bin/python benchmarks/vertical_hosts.py --decisions 1600 --connections 16 --json out.json

The load comes from a second process (aiohttp, ``--connections`` decisions in flight, exactly
``--decisions`` of each kind, run as horizontal, vertical, vertical, horizontal halves so a
machine getting busier or quieter weighs on both alike). Printed: p50 / p99 of each, their
ratio, CPU per decision of the lender and of each host, the machine's load average; the same
at one connection (200 decisions each); and a last phase in which one host is stopped
mid-load (every decision must still be 200, with the host's part missing, and every
successful decision stored).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
from scoring import DECISION_PATH, cpu_seconds, start_server  # noqa: E402

from tests.support.artifacts import build_registry, features_of, trained_model  # noqa: E402
from tests.support.feature_hosts import (  # noqa: E402
    CUSTOMERS,
    guest_part,
    install_guest_part,
    lender_environment,
    running_host_services,
)
from tests.support.processes import free_port, stop_pid  # noqa: E402

TARGET_P99_MS = 30.0
DEADLINE_S = 0.25
"""The lender's per-host deadline (the settings' default)."""


# ------------------------------------------------------------------------------ load generator
async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    bodies: list[str] = spec["bodies"]
    applicants: list[str] = spec["applicants"]
    total, connections = int(spec["decisions"]), int(spec["connections"])
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    missing: Counter[str] = Counter()
    counter = iter(range(total))
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=10.0),
        headers={"content-type": "application/json"},
    ) as session:

        async def worker() -> None:
            for n in counter:
                body = (
                    f'{{"application_id":"{spec["tag"]}-{n}",'
                    f'"applicant_id":"{applicants[n % len(applicants)]}",'
                    f'"features":{bodies[n % len(bodies)]}}}'
                )
                started = time.perf_counter()
                async with session.post(spec["url"], data=body) as response:
                    answer = await response.read()
                latencies.append((time.perf_counter() - started) * 1000.0)
                statuses[response.status] += 1
                if response.status == 200:
                    for host, why in json.loads(answer).get("missing_parts", {}).items():
                        missing[f"{host}:{why}"] += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    return {"latencies_ms": latencies, "statuses": dict(statuses), "missing": dict(missing)}


def start_load(spec: dict[str, Any], work: Path) -> subprocess.Popen[str]:
    """The load generator in a second process (it must not share a GIL with a server)."""
    path = work / f"load-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    return subprocess.Popen(
        [sys.executable, __file__, "--load-worker", str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )


def finish_load(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Wait (bounded) for a load process and read its result."""
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed with {proc.returncode}")
    return dict(json.loads(out.strip().splitlines()[-1]))


def run_load(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """One bounded load run to completion."""
    return finish_load(start_load(spec, work))


# ------------------------------------------------------------------------------ servers
@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set (a server started inside inherits them)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def stored_decisions(db: Path) -> int:
    """Decision rows in a service's SQLite database."""
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM decisions").fetchone()[0])


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ms = np.concatenate([np.asarray(r["latencies_ms"]) for r in runs])
    statuses: Counter[str] = Counter()
    missing: Counter[str] = Counter()
    for r in runs:
        statuses.update({str(k): v for k, v in r["statuses"].items()})
        missing.update(r["missing"])
    return {
        "decisions": int(ms.size),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "statuses": dict(statuses),
        "missing_parts": dict(missing),
    }


# ------------------------------------------------------------------------------ main
def measure(decisions: int, connections: int) -> dict[str, Any]:
    """Horizontal against vertical decisions on the real route, one connection, and a host
    stopped mid-load (see the module docstring); the JSON document."""
    work = Path(tempfile.mkdtemp(prefix="fedrisk-vertical-bench-"))
    registries = {"horizontal": work / "registry-horizontal", "vertical": work / "registry-v"}
    build_registry(registries["horizontal"], {"acard-bench": "application"})
    install_guest_part(registries["vertical"])
    trained = trained_model()
    _, guest_frame = guest_part()
    bodies = {
        "horizontal": [
            json.dumps(features_of(trained.sample.iloc[i], trained.schema), separators=(",", ":"))
            for i in range(64)
        ],
        "vertical": [json.dumps({"income": float(v)}) for v in guest_frame["income"]],
    }
    # both hosts know customers 10-19; the others are known to one host (missing: unknown)
    applicants = {"horizontal": [f"c{i}" for i in range(64)], "vertical": CUSTOMERS}
    half = max(decisions // 2, 1)
    servers: dict[str, tuple[int, str]] = {}
    runs: dict[str, list[dict[str, Any]]] = {"horizontal": [], "vertical": []}
    cpu: defaultdict[str, float] = defaultdict(float)
    with running_host_services(work / "hosts") as hosts:
        try:
            for kind, registry in registries.items():
                port = free_port()
                env = lender_environment(hosts, deadline=DEADLINE_S) if kind == "vertical" else {}
                with environment(env):
                    pid = start_server(
                        registry, f"sqlite:///{work / f'{kind}.db'}", port, work / f"{kind}.log"
                    )
                servers[kind] = (pid, f"http://127.0.0.1:{port}{DECISION_PATH}")

            def spec(kind: str, n: int, tag: str, n_connections: int = 0) -> dict[str, Any]:
                return {
                    "url": servers[kind][1],
                    "bodies": bodies[kind],
                    "applicants": applicants[kind],
                    "decisions": n,
                    "connections": n_connections or connections,
                    "tag": tag,
                }

            # warm-up: first-request paths, connection pools
            warm = {kind: run_load(spec(kind, 200, f"warm-{kind}"), work) for kind in servers}
            for i, kind in enumerate(("horizontal", "vertical", "vertical", "horizontal")):
                print(f"load: {half} {kind} decisions, {connections} connections ...")
                pids = {"lender": servers[kind][0]}
                if kind == "vertical":
                    pids |= hosts.pids
                before = {k: cpu_seconds(p) for k, p in pids.items()}
                runs[kind].append(run_load(spec(kind, half, f"{kind}-{i}"), work))
                for k, p in pids.items():
                    cpu[f"{kind}:{k}"] += cpu_seconds(p) - before[k]
            load_average = os.getloadavg()
            # One connection: what the hops to the hosts add to a lone decision.
            singles = {
                kind: run_load(spec(kind, 200, f"single-{kind}", 1), work) for kind in servers
            }
            # A host stopped mid-load: decisions keep coming back 200 with its part missing.
            print("load: vertical decisions, the shop's service stopped mid-way ...")
            stored_before = stored_decisions(work / "vertical.db")
            stopping = start_load(spec("vertical", decisions, "stop"), work)
            half_way = time.monotonic() + 120.0
            while (
                stored_decisions(work / "vertical.db") < stored_before + decisions // 2
                and stopping.poll() is None
                and time.monotonic() < half_way
            ):
                time.sleep(0.02)
            stop_pid(hosts.pids["shop"])
            stopped = finish_load(stopping)
            time.sleep(1.0)  # the group commit of the last decisions
        finally:
            for pid, _ in servers.values():
                stop_pid(pid)
    result: dict[str, Any] = {
        "decisions_each": 2 * half,
        "connections": connections,
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in load_average],
    }
    for kind in ("horizontal", "vertical"):
        result[kind] = _summary(runs[kind])
        n = result[kind]["decisions"]
        result[kind]["cpu_ms_per_decision"] = {
            k.split(":", 1)[1]: round(v / n * 1000.0, 3)
            for k, v in cpu.items()
            if k.startswith(kind)
        }
    result["p99_ratio"] = result["vertical"]["p99_ms"] / result["horizontal"]["p99_ms"]
    result["p50_ratio"] = result["vertical"]["p50_ms"] / result["horizontal"]["p50_ms"]
    result["one_connection"] = {
        kind: {k: _summary([s])[k] for k in ("p50_ms", "p99_ms")} for kind, s in singles.items()
    }
    stop = _summary([stopped])
    before_stop = [warm["vertical"], *runs["vertical"], singles["vertical"]]
    answered = sum(r["statuses"].get("200", 0) for r in before_stop)
    stop["stored"] = stored_decisions(work / "vertical.db") - answered
    stop["lost"] = stop["statuses"].get("200", 0) - stop["stored"]
    result["host_stopped_mid_load"] = stop
    result["target_p99_ms"] = TARGET_P99_MS
    return result


def print_summary(result: dict[str, Any]) -> None:
    """The side-by-side lines of :func:`measure`'s document."""
    load_average = result["load_average"]
    stop = result["host_stopped_mid_load"]
    h, v = result["horizontal"], result["vertical"]
    print(
        f"\nhorizontal decision p50 {h['p50_ms']:.1f} ms p99 {h['p99_ms']:.1f} ms | vertical "
        f"(2 live hosts) p50 {v['p50_ms']:.1f} ms p99 {v['p99_ms']:.1f} ms | ratio p50 "
        f"{result['p50_ratio']:.2f} p99 {result['p99_ratio']:.2f} | load average "
        f"{load_average[0]:.1f} on {os.cpu_count()} cores"
    )
    one = result["one_connection"]
    print(
        f"one connection: horizontal p50 {one['horizontal']['p50_ms']:.1f} ms p99 "
        f"{one['horizontal']['p99_ms']:.1f} ms | vertical p50 {one['vertical']['p50_ms']:.1f} ms "
        f"p99 {one['vertical']['p99_ms']:.1f} ms"
    )
    print(
        f"host stopped mid-load: {stop['decisions']} decisions, statuses {stop['statuses']}, "
        f"missing parts {stop['missing_parts']}, {stop['stored']} stored ({stop['lost']} lost)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1600, help="decisions of each kind")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--load-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_worker:
        print(json.dumps(asyncio.run(_load(json.loads(args.load_worker.read_text())))))
        return 0
    result = measure(args.decisions, args.connections)
    print(json.dumps(result, indent=2))
    print_summary(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
