"""What a real deployment costs per round: 3 and 10 SuperNodes on localhost, CKKS vs plaintext.

For each party count, provisions a local federation (keys made by each party, private CA, TLS
SuperLink with SuperNode authentication, key ceremony, one ``flower-supernode`` per party), runs
the same federation (same data, seed and rounds) CKKS-encrypted and then in the insecure
plaintext comparison mode, and prints seconds per round and the encrypted / plaintext ratio.
It then runs the same CKKS job (same parties' data, seed and rounds) in Flower's simulation
engine and prints deployment seconds per round / simulation seconds per round.

A round is one exchange per party (``train`` also evaluates the previous round's model and
carries the metrics party's decryption), so seconds per round is one message's round trip:
the ServerApp's push, the SuperNode's pull (paced: ``clients.flower_runtime``), the party's
warm executor, the reply's way back, and the server's ciphertext sums.

It also records where the time goes:

- From the SuperNode logs, followed live and timestamped here (Flower writes no timestamps):
  per message type, how long after the round started the SuperNodes received the message
  (dispatch: the ServerApp's and the SuperNodes' polling), and the time from receiving a
  message to sending its reply: the party's warm executor (``clients.executor``) acquiring the
  task, running the ClientApp in-process, and the SuperNode noticing the reply (paced to
  20 ms instead of Flower's 0.5 s).
- In process, on one party's data: what a cold process would pay (a fresh interpreter importing
  the ClientApp, and torch for ``train``; the executor pays it once, at start-up), local
  training, and CKKS encryption and decryption of the update.

Everything binds 127.0.0.1 and every process is stopped by PID on exit. Bounded: ``--rounds``
(default 2) rounds per run, three runs per party count (CKKS and plaintext deployed, CKKS
simulated); a few minutes on a loaded 2-core machine.

    .venv/bin/python benchmarks/deployment.py [--parties 3 10] [--rounds 2] [--json out.json]

With ``--masking`` it compares CKKS with pairwise and self masks, with pairwise masks only, and
without masks instead (interleaved ``--repeats`` times on one federation per party count) and
prints seconds per round over the unmasked ones: what masking costs a deployed round.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from fedrisk.data.datasets import load_dataset
from fedrisk.data.partitions import PartyData, parse_partition, partition_frame
from fedrisk.data.schema import DatasetSchema
from simulations.deployment import LocalDeployment, running_federation
from simulations.runner import PreparedData, run_federation
from simulations.spec import SimulationSpec

ROUND_TIMEOUT = 900.0
"""Generous: ten ClientApp processes start at once on two cores."""

RUN_TIMEOUT = 3600.0
ROWS_PER_PARTY = 1500
_LINE = re.compile(r"(Receiving|Sending): (\S+) message")


# --------------------------------------------------------------------------------------------------
# SuperNode logs, timestamped as they grow
# --------------------------------------------------------------------------------------------------


@dataclass
class MessageSpan:
    """One message at one SuperNode: when it arrived and when the reply left (epoch seconds)."""

    party: str
    kind: str
    received: float
    sent: float | None = None


class LogClock:
    """Follows SuperNode logs in a thread and stamps each Receiving/Sending line on arrival.

    The stamps are accurate to the poll interval (50 ms) plus the log's write latency
    (the SuperNodes run with ``PYTHONUNBUFFERED=1``).
    """

    def __init__(self, logs: dict[str, Path], *, poll: float = 0.05) -> None:
        self.logs = logs
        self.poll = poll
        self.spans: list[MessageSpan] = []
        self._offsets = {party: _size(path) for party, path in logs.items()}
        self._open: dict[tuple[str, str], MessageSpan] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="log-clock", daemon=True)

    def __enter__(self) -> LogClock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._read_all()

    def _follow(self) -> None:
        while not self._stop.wait(self.poll):
            self._read_all()

    def _read_all(self) -> None:
        now = time.time()
        for party, path in self.logs.items():
            try:
                with path.open("rb") as handle:
                    handle.seek(self._offsets[party])
                    chunk = handle.read()
            except OSError:
                continue
            # Only whole lines; a partial last line is read again next time.
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._offsets[party] += len(complete)
            for line in complete.decode("utf-8", errors="replace").splitlines():
                match = _LINE.search(line)
                if match is None:
                    continue
                verb, kind = match.groups()
                if verb == "Receiving":
                    span = MessageSpan(party=party, kind=kind, received=now)
                    self._open[(party, kind)] = span
                    self.spans.append(span)
                elif (party, kind) in self._open:
                    self._open.pop((party, kind)).sent = now


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --------------------------------------------------------------------------------------------------
# One deployed run
# --------------------------------------------------------------------------------------------------


@dataclass
class RunMeasurement:
    """Timings of one deployed run (one mode, one party count)."""

    parties: int
    encrypted: bool
    rounds: int
    seconds_per_round: float
    round_seconds: list[float]
    start_to_first_round: float
    release_seconds: float
    bytes_up_per_party: float
    final_auc: float
    dispatch: dict[str, float] = field(default_factory=dict)
    clientapp: dict[str, float] = field(default_factory=dict)
    simulation_seconds_per_round: float = float("nan")
    """The same CKKS job in Flower's simulation engine (encrypted runs only)."""
    deployment_over_simulation: float = float("nan")
    masked: bool = False
    """Pairwise masks on (``--masking`` compares runs with and without)."""


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def measure_run(
    fed: LocalDeployment, *, encrypted: bool, rounds: int, seed: int, masking: bool = True
) -> RunMeasurement:
    """Run once in the given mode and read the timings off progress events and SuperNode logs."""
    fed.plaintext = not encrypted
    fed.masking = masking
    logs = {party: node.log_path for party, node in fed.supernodes.items()}
    events: list[dict[str, Any]] = []
    submitted = time.time()
    with LogClock(logs) as clock:
        fed.run(
            rounds=rounds,
            seed=seed,
            round_timeout=ROUND_TIMEOUT,
            on_event=events.append,
            timeout=RUN_TIMEOUT,
        )
    round_events = [e for e in events if e["event"] == "round"]
    starts = {e["round"]: e["time"] for e in events if e["event"] == "round-start"}
    released = next(e for e in events if e["event"] == "released")
    # Dispatch latency: from a round's start to the moment each SuperNode received its message.
    dispatch: dict[str, list[float]] = defaultdict(list)
    lifetimes: dict[str, list[float]] = defaultdict(list)
    round_of = _assign_rounds(clock.spans, starts)
    for span, rnd in zip(clock.spans, round_of, strict=True):
        if span.sent is not None:
            lifetimes[span.kind].append(span.sent - span.received)
        if rnd is not None and span.kind == "train":
            dispatch["train"].append(span.received - starts[rnd])
    return RunMeasurement(
        parties=len(fed.supernodes),
        encrypted=encrypted,
        masked=encrypted and masking,
        rounds=rounds,
        seconds_per_round=_mean([e["seconds"] for e in round_events]),
        round_seconds=[e["seconds"] for e in round_events],
        start_to_first_round=starts[1] - submitted,
        # After the last round's exchange: the final evaluation, then the release (which
        # also brings the last round's metrics, so the last "round" event comes with it).
        release_seconds=released["time"] - starts[rounds] - round_events[-1]["seconds"],
        bytes_up_per_party=_mean([e["bytes_up_per_party"] for e in round_events]),
        final_auc=round_events[-1]["auc"],
        dispatch={k: _mean(v) for k, v in dispatch.items()},
        clientapp={k: _mean(v) for k, v in lifetimes.items()},
    )


def _assign_rounds(spans: list[MessageSpan], starts: dict[int, float]) -> list[int | None]:
    """The round each message belongs to (the last round started before it arrived)."""
    ordered = sorted(starts.items())
    result: list[int | None] = []
    for span in spans:
        rnd = None
        for number, started in ordered:
            if started <= span.received:
                rnd = number
        result.append(rnd)
    return result


# --------------------------------------------------------------------------------------------------
# Where a party's time goes, in process
# --------------------------------------------------------------------------------------------------


PROBE = """
import json, sys, time
from pathlib import Path
clock = time.perf_counter
t = {}
s = clock(); import flwr.clientapp, clients.clientapp; t["import_clientapp"] = clock() - s
s = clock(); import torch, fedrisk.ml.models, fedrisk.ml.training; t["import_torch"] = clock() - s
from clients.party import PartyNode, load_party_config
from fedrisk.federation.run_config import FederationConfig
federation = FederationConfig(run_id="bench", seed=0, plaintext=sys.argv[2] == "1")
s = clock(); node = PartyNode(load_party_config(Path(sys.argv[1])), federation)
t["party_init"] = clock() - s
s = clock(); stats = node.decrypt(node.local_stats()); t["stats"] = clock() - s
s = clock(); update = node.train(stats, None, 1); t["train_cold"] = clock() - s
s = clock(); update = node.train(stats, None, 1); t["train_warm"] = clock() - s
vector = node.decrypt(update)
s = clock(); node.evaluate(stats, vector); t["evaluate"] = clock() - s
s = clock(); node.channel.encode(vector); t["encrypt_update"] = clock() - s
s = clock(); node.decrypt(update); t["decrypt_update"] = clock() - s
t["update_values"] = float(vector.size)
print(json.dumps(t))
"""
"""What one party's ClientApp process does for a message, timed step by step in a fresh
interpreter, as Flower runs it: its own statistics stand in for the sum and its own update for
the global model (same sizes, same work)."""

PROBE_STEPS = (
    "interpreter",
    "import_clientapp",
    "import_torch",
    "party_init",
    "stats",
    "train_cold",
    "train_warm",
    "evaluate",
    "encrypt_update",
    "decrypt_update",
)


def probe_party(party_toml: Path, *, plaintext: bool) -> dict[str, float]:
    """Run ``PROBE`` in a fresh interpreter; ``interpreter`` is the wall time it did not time."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(party_toml), "1" if plaintext else "0"],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - started
    steps: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    timed = sum(v for k, v in steps.items() if k != "update_values")
    steps["interpreter"] = wall - timed
    return steps


def party_breakdown(fed: LocalDeployment, *, repeat: int = 2) -> dict[str, dict[str, float]]:
    """Median probe timings of the lead party, CKKS and plaintext."""
    party_toml = fed.bundle(fed.lead).layout.state_dir / "party.toml"
    result: dict[str, dict[str, float]] = {}
    for mode, plaintext in (("CKKS", False), ("plaintext", True)):
        probes = [probe_party(party_toml, plaintext=plaintext) for _ in range(repeat)]
        result[mode] = {k: statistics.median(p[k] for p in probes) for k in probes[0]}
    return result


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def parties_for(n: int, *, seed: int) -> tuple[DatasetSchema, list[PartyData], PreparedData]:
    """Seeded synthetic parties, IID, ``ROWS_PER_PARTY`` rows each; also as the simulation
    runner takes them."""
    rng = np.random.default_rng(seed)
    dataset = load_dataset("synthetic", rng=rng, n_rows=ROWS_PER_PARTY * n)
    parties = list(
        partition_frame(dataset.frame, dataset.schema, parse_partition("iid"), n_parties=n, rng=rng)
    )
    prepared = PreparedData(
        dataset=dataset,
        parties=parties,
        pooled_train=pd.concat([p.train for p in parties], ignore_index=True),
        pooled_test=pd.concat([p.test for p in parties], ignore_index=True),
    )
    return dataset.schema, parties, prepared


def simulate(
    prepared: PreparedData, *, lead: str, rounds: int, seed: int, workdir: Path
) -> tuple[float, float]:
    """The same CKKS job in the simulation engine: its seconds per round and final AUC."""
    spec = SimulationSpec(
        dataset="synthetic",
        parties=len(prepared.parties),
        partition="iid",
        model="lr",
        rounds=rounds,
        seed=seed,
        release_party=lead,
        round_timeout=ROUND_TIMEOUT,
    )
    outcome = run_federation(
        spec, prepared, release_dir=workdir / "releases", workdir=workdir / "sim"
    )
    return outcome.seconds_per_round, float(outcome.history[-1]["auc"])


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # NaN shows as "-"


MASK_MODES: dict[str, tuple[bool, bool]] = {
    "pairwise+self": (True, True),
    "pairwise": (True, False),
    "none": (False, False),
}
"""``--masking`` modes: name → (masking, mask-self)."""


def compare_masking(
    party_counts: Sequence[int], *, rounds: int, seed: int, repeats: int, json_path: Path | None
) -> None:
    """CKKS runs with pairwise and self masks, pairwise masks only, and no masks, interleaved,
    on one deployed federation per party count."""
    console = Console() if sys.stdout.isatty() else Console(width=160)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fedrisk-bench-masks-") as tmp:
        for n in party_counts:
            schema, parties, _ = parties_for(n, seed=seed)
            console.log(f"{n} parties: provisioning, key ceremony, starting SuperLink + SuperNodes")
            seconds: dict[str, list[float]] = {mode: [] for mode in MASK_MODES}
            aucs: dict[str, float] = {}
            spans: dict[str, dict[str, float]] = {}
            with running_federation(
                Path(tmp) / f"fed-{n}", schema=schema, parties=parties, allow_plaintext=True
            ) as fed:
                for repeat in range(repeats):
                    for mode, (masking, mask_self) in MASK_MODES.items():
                        console.log(f"{n} parties, masks: {mode}, #{repeat}")
                        fed.mask_self = mask_self
                        run = measure_run(
                            fed, encrypted=True, rounds=rounds, seed=seed, masking=masking
                        )
                        seconds[mode].extend(run.round_seconds)
                        aucs[mode] = run.final_auc
                        spans[mode] = {**run.clientapp, "dispatch_train": run.dispatch["train"]}
            base = _mean(seconds["none"])
            rows.append(
                {
                    "parties": n,
                    "rounds": rounds,
                    "repeats": repeats,
                    "round_seconds": seconds,
                    "over_unmasked_round_time": {m: _mean(v) / base for m, v in seconds.items()},
                    "final_auc": aucs,
                    "clientapp_seconds_last_run": spans,
                }
            )
    table = Table(title=f"Deployed CKKS round by masks ({rounds} rounds x {repeats} runs each)")
    for col in ("SuperNodes", "masks", "s/round", "over no masks", "AUC"):
        table.add_column(col, justify="right")
    for row in rows:
        for mode in MASK_MODES:
            table.add_row(
                str(row["parties"]),
                mode,
                _fmt(_mean(row["round_seconds"][mode]), 2),
                _fmt(row["over_unmasked_round_time"][mode], 3),
                f"{row['final_auc'][mode]:.4f}",
            )
    console.print(table)
    if json_path:
        json_path.write_text(json.dumps({"masking": rows}, indent=2), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parties", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--masking",
        action="store_true",
        help="compare CKKS with and without masks instead of CKKS and plaintext",
    )
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs (--masking)")
    args = parser.parse_args()
    if args.masking:
        compare_masking(
            args.parties,
            rounds=args.rounds,
            seed=args.seed,
            repeats=args.repeats,
            json_path=args.json,
        )
        return
    # Wide enough for the table when the output is a file or a pipe (rich assumes 80 there).
    console = Console() if sys.stdout.isatty() else Console(width=160)
    runs: list[RunMeasurement] = []
    breakdown: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="fedrisk-bench-deploy-") as tmp:
        for n in args.parties:
            schema, parties, prepared = parties_for(n, seed=args.seed)
            console.log(f"{n} parties: provisioning, key ceremony, starting SuperLink + SuperNodes")
            with running_federation(
                Path(tmp) / f"fed-{n}", schema=schema, parties=parties, allow_plaintext=True
            ) as fed:
                for encrypted in (True, False):
                    mode = "CKKS" if encrypted else "plaintext"
                    console.log(f"{n} parties, {mode}: {args.rounds} rounds")
                    runs.append(
                        measure_run(fed, encrypted=encrypted, rounds=args.rounds, seed=args.seed)
                    )
                if not breakdown:
                    console.log("party compute breakdown (in process)")
                    breakdown = party_breakdown(fed)
                lead = fed.lead
            console.log(f"{n} parties, CKKS, simulation engine: {args.rounds} rounds")
            sim_seconds, sim_auc = simulate(
                prepared,
                lead=lead,
                rounds=args.rounds,
                seed=args.seed,
                workdir=Path(tmp) / f"sim-{n}",
            )
            deployed = next(r for r in runs if r.parties == n and r.encrypted)
            deployed.simulation_seconds_per_round = sim_seconds
            deployed.deployment_over_simulation = deployed.seconds_per_round / sim_seconds
            console.log(f"simulation: {sim_seconds:.2f} s/round, final AUC {sim_auc:.4f}")

    table = Table(
        title=f"Deployed federation on localhost (TLS, node auth): {args.rounds} rounds per run"
    )
    for col in (
        "SuperNodes",
        "mode",
        "s/round",
        "enc/plain",
        "sim s/round",
        "deploy/sim",
        "start→round 1 s",
        "final eval + release s",
        "train dispatch s",
        "ClientApp train s",
        "ClientApp evaluate s",
        "ClientApp release s",
        "KB up/party",
        "AUC",
    ):
        table.add_column(col, justify="right")
    by_key = {(r.parties, r.encrypted): r for r in runs}
    for r in runs:
        plain = by_key.get((r.parties, False))
        ratio = r.seconds_per_round / plain.seconds_per_round if plain else float("nan")
        table.add_row(
            str(r.parties),
            "CKKS" if r.encrypted else "plain",
            _fmt(r.seconds_per_round),
            _fmt(ratio, 2) if r.encrypted else "",
            _fmt(r.simulation_seconds_per_round, 2) if r.encrypted else "",
            _fmt(r.deployment_over_simulation, 2) if r.encrypted else "",
            _fmt(r.start_to_first_round),
            _fmt(r.release_seconds),
            _fmt(r.dispatch.get("train", float("nan"))),
            _fmt(r.clientapp.get("train", float("nan"))),
            _fmt(r.clientapp.get("evaluate", float("nan"))),
            _fmt(r.clientapp.get("query.release", float("nan"))),
            f"{r.bytes_up_per_party / 1024:.0f}",
            f"{r.final_auc:.4f}",
        )
    console.print(table)

    parts = Table(title="One party's ClientApp process, step by step (fresh interpreter, seconds)")
    parts.add_column("step")
    parts.add_column("CKKS", justify="right")
    parts.add_column("plaintext", justify="right")
    labels = {
        "interpreter": "interpreter start-up",
        "import_clientapp": "import flwr + fedrisk ClientApp",
        "import_torch": "import torch (train only)",
        "party_init": "load + validate data, load CKKS context",
        "stats": "statistics, encrypted and decrypted",
        "train_cold": "train, first in process (fit, encrypt)",
        "train_warm": "train, again (warm)",
        "evaluate": "evaluate (score, encrypt histograms)",
        "encrypt_update": "  within train: encrypt update",
        "decrypt_update": "  within train: decrypt global model",
    }
    enc_steps, plain_steps = breakdown["CKKS"], breakdown["plaintext"]
    for step in PROBE_STEPS:
        parts.add_row(labels[step], _fmt(enc_steps[step], 3), _fmt(plain_steps[step], 3))
    per_message = sum(enc_steps[k] for k in PROBE_STEPS[:4]) + enc_steps["train_cold"]
    parts.add_row("= one train message, cold (sum)", _fmt(per_message, 3), "")
    console.print(parts)
    train_spans = [r.clientapp.get("train", float("nan")) for r in runs if r.encrypted]
    console.print(
        f"update: {enc_steps['update_values']:.0f} values. ClientApp columns above: SuperNode log "
        "'Receiving' to 'Sending' of one message, run by the party's warm executor (no process "
        "start), concurrent with the other parties' on the same cores; a train message also "
        "evaluates the previous round's model. The SuperNode's loop is paced "
        "(clients.flower_runtime): it notices a reply within 20 ms and, when idle, pulls again "
        "after a quarter of its idle time (50 ms to 1 s) instead of Flower's fixed 3 s. "
        f"ClientApp train span ({', '.join(_fmt(t) for t in train_spans)} s) against the cold "
        f"start a fresh process would add ({per_message:.1f} s)."
    )
    # The machine is shared: a load far above its cores slows every number above alike.
    load = os.getloadavg()
    console.print(
        f"load average at the end (1, 5, 15 min): {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}"
    )
    if args.json:
        # A figure that was not measured (NaN in the table) is null: NaN is not JSON.
        payload = {
            "runs": [
                {k: None if isinstance(v, float) and v != v else v for k, v in r.__dict__.items()}
                for r in runs
            ],
            "party_breakdown": breakdown,
            "load_average": list(load),
        }
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
