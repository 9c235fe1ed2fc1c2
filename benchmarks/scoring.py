"""Scoring-service benchmark: HTTP throughput and latency of /healthz vs the full A-card path (with
and without an API key), and batch rows/s, against a real uvicorn server on 127.0.0.1 driven from
a second process.

Run from the repository root::

    .venv/bin/python benchmarks/scoring.py                 # 10 s per endpoint, 16 connections
    .venv/bin/python benchmarks/scoring.py --duration 20 --batch-rows 2000000

The load comes from ``wrk`` (installed with ``apt-get install -y wrk`` when missing and possible)
or else from an httpx async generator in a separate process. The full decision path is: request
validation, fraud rules, relationship graph, model, reason codes, decision policy, and the decision
plus its hash-chained audit record committed to SQLite before the response. After the run the
decision rows in the database are counted against the successful responses (none may be lost).

The decision path runs twice on the same server in the same run: once with a ``scoring`` API key
(``Authorization: Bearer``; verified with argon2 on first use, then from the in-process cache)
and once without any key. The server runs with ``--insecure-dev`` so the keyless run is allowed;
its per-request warning is not written (``--log-level error``), so that run costs what the
service cost before it had keys. The ratio of the two is the price of access control.

Targets on 2 cores: decisions >= 1,500/s with p99 <= 15 ms; batch >= 200,000 rows/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from server.scoring.apikeys import Role  # noqa: E402
from tests.support.artifacts import build_registry, features_of, trained_model  # noqa: E402
from tests.support.processes import free_port, start_process, stop_pid  # noqa: E402
from tests.support.scoring import bearer, create_keys  # noqa: E402

DECISION_PATH = "/v1/applications/decision"
MAX_LOAD_SECONDS = 120.0
"""Hard bound of one load run (the generator stops by itself well before)."""

KEYED = f"POST {DECISION_PATH} (key)"
KEYLESS = f"POST {DECISION_PATH} (no key)"

TARGET_DECISIONS_PER_S = 1500.0
TARGET_P99_MS = 15.0
TARGET_BATCH_ROWS_PER_S = 200_000.0


# ------------------------------------------------------------------------------ load generators
def ensure_wrk() -> str | None:
    """Path of wrk, installing Debian's package when missing and we are root with apt."""
    found = shutil.which("wrk")
    if found or os.environ.get("FEDRISK_BENCH_NO_WRK"):
        return None if os.environ.get("FEDRISK_BENCH_NO_WRK") else found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(cmd, capture_output=True, env=env, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
            subprocess.run(cmd, capture_output=True, env=env, check=False)
    return shutil.which("wrk")


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def wrk_script(feature_bodies: list[str], headers: dict[str, str]) -> str:
    """Lua for wrk: unique application ids per request, rotating feature rows and identifiers."""
    rows = ",\n".join(_lua_string(b) for b in feature_bodies)
    extra = "".join(f", [ {_lua_string(k)} ] = {_lua_string(v)}" for k, v in headers.items())
    return f"""
local bodies = {{
{rows}
}}
local counter = 0
local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
request = function()
  counter = counter + 1
  local f = bodies[(counter % #bodies) + 1]
  local body = string.format(
    '{{"application_id":"w%d-%d","applicant_id":"c%d-%d","features":%s,' ..
    '"signals":{{"device_id":"dev-%d","phone":"+4479%08d","ip":"10.%d.%d.%d","age":%d}}}}',
    tid, counter, tid, counter, f, counter % 20000, counter * 2 + tid,
    tid, math.floor(counter / 250) % 250, counter % 250, 20 + counter % 50)
  return wrk.format("POST", nil, {{["Content-Type"] = "application/json"{extra}}}, body)
end
done = function(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non2xx":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"timeout":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout))
end
"""


def wrk_get_script() -> str:
    """Lua for wrk GET runs: only the JSON summary."""
    return """
done = function(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non2xx":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout))
end
"""


def run_wrk(
    wrk: str, url: str, script: str, *, duration: float, connections: int, workdir: Path
) -> dict[str, Any]:
    """One bounded wrk run; returns req/s, p50/p99 (ms) and counts."""
    path = workdir / f"wrk-{time.monotonic_ns()}.lua"
    path.write_text(script)
    cmd = [
        wrk,
        "-t",
        "2",
        "-c",
        str(connections),
        "-d",
        f"{duration:.0f}s",
        "--timeout",
        "5s",
        "-s",
        str(path),
        url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(line.removeprefix("WRKJSON "))
    seconds = data["duration_us"] / 1e6
    ok = data["requests"] - data["non2xx"]
    return {
        "tool": "wrk",
        "requests": data["requests"],
        "ok": ok,
        "errors": data["non2xx"] + data["connect"] + data["read"] + data["write"] + data["timeout"],
        "rps": ok / seconds,
        "p50_ms": data["p50_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
    }


async def _httpx_load(
    url: str,
    method: str,
    bodies: list[str],
    duration: float,
    connections: int,
    headers: dict[str, str],
) -> dict[str, Any]:
    latencies: list[float] = []
    counts = {"ok": 0, "bad": 0}
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=5.0) as client:

        async def worker(wid: int) -> None:
            n = 0
            while time.perf_counter() < deadline:
                n += 1
                t0 = time.perf_counter()
                if method == "GET":
                    r = await client.get(url)
                else:
                    feats = bodies[n % len(bodies)]
                    body = (
                        f'{{"application_id":"h{wid}-{n}","applicant_id":"c{wid}-{n}",'
                        f'"features":{feats},"signals":{{"device_id":"dev-{n % 20000}",'
                        f'"phone":"+4479{n * 16 + wid:08d}","age":35}}}}'
                    )
                    r = await client.post(
                        url, content=body, headers={"content-type": "application/json", **headers}
                    )
                latencies.append(time.perf_counter() - t0)
                counts["ok" if r.status_code < 300 else "bad"] += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(connections)))
        elapsed = time.perf_counter() - start
    lat = sorted(latencies)
    return {
        "tool": "httpx",
        "requests": len(lat),
        "ok": counts["ok"],
        "errors": counts["bad"],
        "rps": counts["ok"] / elapsed,
        "p50_ms": statistics.median(lat) * 1000 if lat else float("nan"),
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000 if lat else float("nan"),
    }


def run_httpx(
    url: str,
    method: str,
    bodies: list[str],
    *,
    duration: float,
    connections: int,
    workdir: Path,
    headers: dict[str, str],
) -> dict[str, Any]:
    """Run the httpx generator in a second process (so it does not share the server's GIL)."""
    spec = workdir / f"load-{time.monotonic_ns()}.json"
    spec.write_text(
        json.dumps(
            {
                "url": url,
                "method": method,
                "bodies": bodies,
                "duration": duration,
                "connections": connections,
                "headers": headers,
            }
        )
    )
    out = subprocess.run(
        [sys.executable, __file__, "--load-worker", str(spec)],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One endpoint's runs as one: counts summed; req/s, p50 and CPU per request averaged; the
    worst p99."""
    return {
        "tool": runs[0]["tool"],
        "requests": sum(r["requests"] for r in runs),
        "ok": sum(r["ok"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "rps": statistics.fmean(r["rps"] for r in runs),
        "p50_ms": statistics.fmean(r["p50_ms"] for r in runs),
        "p99_ms": max(r["p99_ms"] for r in runs),
        "cpu_us": statistics.fmean(r["cpu_us"] for r in runs),
    }


# ------------------------------------------------------------------------------ server
def start_server(registry: Path, db_url: str, port: int, log: Path) -> int:
    """Start the service (1 uvicorn worker, uvloop + httptools) and wait until it answers.

    ``--insecure-dev`` lets the keyless comparison run in; ``--log-level error`` keeps its
    per-request warning out of the measurement.
    """
    proc = start_process(
        [
            sys.executable, "-m", "server.scoring", "serve", "--development", "--insecure-dev",
            "--registry", str(registry), "--db", db_url,
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "error",
        ],
        log_path=log,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return proc.pid
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_pid(proc.pid)
    raise RuntimeError(f"server did not answer within 60 s:\n{log.read_text()[-3000:]}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_decisions(db_path: Path) -> int:
    """Decision rows in the service's SQLite database."""
    with sqlite3.connect(db_path) as conn:
        return int(conn.execute("SELECT count(*) FROM decisions").fetchone()[0])


# ------------------------------------------------------------------------------ batch
def make_batch_file(path: Path, rows: int, fmt: str) -> None:
    """Tile held-out synthetic rows into a ``rows``-row CSV or Parquet upload."""
    trained = trained_model()
    sample = trained.sample[trained.schema.feature_names]
    reps = -(-rows // len(sample))
    frame = pd.concat([sample] * reps, ignore_index=True).iloc[:rows]
    frame.insert(0, trained.schema.id_column, np.arange(1, rows + 1))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)


def run_batch(
    base: str, path: Path, fmt: str, rows: int, headers: dict[str, str]
) -> dict[str, Any]:
    """Upload a file and read the streamed CSV; rows/s end to end (upload + score + download)."""
    content_type = "text/csv" if fmt == "csv" else "application/vnd.apache.parquet"

    def chunks() -> Any:
        with path.open("rb") as handle:
            yield from iter(lambda: handle.read(1 << 20), b"")

    lines = 0
    start = time.perf_counter()
    with (
        httpx.Client(timeout=600.0) as client,
        client.stream(
            "POST",
            f"{base}/v1/batch/application",
            content=chunks(),
            headers={"content-type": content_type, **headers},
        ) as response,
    ):
        response.raise_for_status()
        for block in response.iter_bytes():
            lines += block.count(b"\n")
    elapsed = time.perf_counter() - start
    return {
        "format": fmt,
        "rows": rows,
        "out_rows": lines - 1,
        "seconds": elapsed,
        "rows_per_s": rows / elapsed,
        "bytes": path.stat().st_size,
    }


# ------------------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per load run (max 60)"
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--batch-rows", type=int, default=1_000_000)
    parser.add_argument("--load-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load_worker:
        spec = json.loads(args.load_worker.read_text())
        result = asyncio.run(
            _httpx_load(
                spec["url"],
                spec["method"],
                spec["bodies"],
                spec["duration"],
                spec["connections"],
                spec["headers"],
            )
        )
        print(json.dumps(result))
        return 0
    duration = min(max(args.duration, 1.0), 60.0)
    work = Path(tempfile.mkdtemp(prefix="fedrisk-bench-"))
    registry = work / "registry"
    db_path = work / "scoring.db"
    print(f"building a signed test model and registry in {work} ...", flush=True)
    build_registry(registry, {"acard-bench": "application"})
    trained = trained_model()
    bodies = [
        json.dumps(features_of(trained.sample.iloc[i], trained.schema), separators=(",", ":"))
        for i in range(64)
    ]
    db_url = f"sqlite:///{db_path}"
    key = create_keys(db_url, (Role.SCORING,))[Role.SCORING]
    keyed = bearer(key)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    pid = start_server(registry, db_url, port, work / "server.log")
    wrk = ensure_wrk()
    results: dict[str, dict[str, Any]] = {}
    try:
        # warm-up: caches, first-request paths; counted against the DB too
        warm_ok = 0
        with httpx.Client(base_url=base, timeout=10.0, headers=keyed) as client:
            for i in range(300):
                body = {
                    "application_id": f"warm-{i}",
                    "applicant_id": f"warm-{i}",
                    "features": json.loads(bodies[i % len(bodies)]),
                    "signals": {"device_id": f"warm-{i % 7}", "age": 30},
                }
                warm_ok += client.post(DECISION_PATH, json=body).status_code == 200
        # decisions in the order key, no key, no key, key, half the time each: a machine
        # getting busier or quieter during the run weighs on both alike
        half = max(duration / 2, 1.0)
        runs: list[dict[str, Any]] = []
        for name, path, method, headers, seconds in (
            ("GET /healthz", "/healthz", "GET", {}, duration),
            (KEYED, DECISION_PATH, "POST", keyed, half),
            (KEYLESS, DECISION_PATH, "POST", {}, half),
            (KEYLESS, DECISION_PATH, "POST", {}, half),
            (KEYED, DECISION_PATH, "POST", keyed, half),
        ):
            print(
                f"load: {name} for {seconds:.0f} s with {args.connections} connections ...",
                flush=True,
            )
            cpu_before = cpu_seconds(pid)
            if wrk:
                script = wrk_get_script() if method == "GET" else wrk_script(bodies, headers)
                run = run_wrk(
                    wrk,
                    base + path,
                    script,
                    duration=seconds,
                    connections=args.connections,
                    workdir=work,
                )
            else:
                run = run_httpx(
                    base + path,
                    method,
                    bodies,
                    duration=seconds,
                    connections=args.connections,
                    workdir=work,
                    headers=headers,
                )
            # server CPU per request: comparable across runs even when the machine is shared
            run["cpu_us"] = (cpu_seconds(pid) - cpu_before) / max(run["requests"], 1) * 1e6
            runs.append({"name": name, **run})
        for name in ("GET /healthz", KEYED, KEYLESS):
            results[name] = combine([r for r in runs if r["name"] == name])
        time.sleep(0.5)
        stored = count_decisions(db_path)
        decision, keyless = results[KEYED], results[KEYLESS]
        expected = decision["ok"] + keyless["ok"] + warm_ok
        batch_results = []
        for fmt in ("csv", "parquet"):
            path = work / f"batch.{fmt}"
            print(f"batch: writing {args.batch_rows:,} rows as {fmt} ...", flush=True)
            make_batch_file(path, args.batch_rows, fmt)
            print(f"batch: scoring {path.stat().st_size / 1e6:.0f} MB ...", flush=True)
            cpu_before = cpu_seconds(pid)
            result = run_batch(base, path, fmt, args.batch_rows, keyed)
            result["cpu_rows_per_s"] = args.batch_rows / max(cpu_seconds(pid) - cpu_before, 1e-9)
            batch_results.append(result)
            path.unlink()
    finally:
        stop_pid(pid)
    health = results["GET /healthz"]
    print()
    tool = results[next(iter(results))]["tool"]
    print(
        f"scoring service benchmark ({tool}, {args.connections} connections, {duration:.0f} s "
        f"per endpoint (decisions as key, no key, no key, key), 1 uvicorn worker, "
        f"{os.cpu_count()} cores)"
    )
    print(f"{'endpoint':<42}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}{'CPU us/req':>11}")
    for name, r in results.items():
        print(
            f"{name:<42}{r['rps']:>9.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>7}"
            f"{r['cpu_us']:>11.0f}"
        )
    rps_ratio = decision["rps"] / health["rps"]
    p99_ratio = decision["p99_ms"] / max(health["p99_ms"], 1e-9)
    print(f"ratio full decision / healthz: req/s {rps_ratio:.2f}, p99 {p99_ratio:.2f}")
    print(
        f"ratio decision with API key / without: req/s {decision['rps'] / keyless['rps']:.2f}, "
        f"server CPU per request {decision['cpu_us'] / max(keyless['cpu_us'], 1e-9):.2f}"
    )
    load = os.getloadavg()[0]
    print(f"machine load average during the run: {load:.1f} on {os.cpu_count()} cores")
    lost = expected - stored
    verdict = "none lost" if lost <= 0 else f"{lost} LOST"
    print(
        f"decisions persisted: {stored} rows for {expected} successful responses ({verdict}; "
        "extra rows were in flight when the load stopped)"
    )
    for b in batch_results:
        print(
            f"batch {b['format']:<8} {b['rows']:,} rows ({b['bytes'] / 1e6:.0f} MB) in "
            f"{b['seconds']:.2f} s: {b['rows_per_s']:,.0f} rows/s end to end; "
            f"{b['out_rows']:,} rows returned; "
            f"{b['cpu_rows_per_s']:,.0f} rows per server CPU-second"
        )
    ok_decisions = decision["rps"] >= TARGET_DECISIONS_PER_S and decision["p99_ms"] <= TARGET_P99_MS
    ok_batch = all(
        b["rows_per_s"] >= TARGET_BATCH_ROWS_PER_S and b["out_rows"] == b["rows"]
        for b in batch_results
    )
    print(
        f"targets: decisions >= {TARGET_DECISIONS_PER_S:.0f}/s with p99 <= {TARGET_P99_MS:.0f} ms: "
        f"{'MET' if ok_decisions else 'MISSED'}; batch >= {TARGET_BATCH_ROWS_PER_S:,.0f} rows/s: "
        f"{'MET' if ok_batch else 'MISSED'}; no lost decision: {'YES' if lost <= 0 else 'NO'}"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0 if lost <= 0 else 1


if __name__ == "__main__":
    sys.exit(main())
