"""What private entity alignment costs: ECDH-PSI over X25519 against raw X25519, in one run.

Aligns a guest's ``--size`` phone numbers with a host's ``--size`` (the host knows ``--overlap``
of the guest's customers, written in other spellings) through every step of
:mod:`secure_agg.psi`: normalisation and salted hashing, the four blinding steps, the match,
and the sealed result, checked against a plain set intersection. In the same run it measures
raw X25519 scalar multiplications per second on one core, and prints PSI identifiers per
second over that (each identifier pair costs four scalar multiplications, so one core gives
about 0.25 and two about 0.5). If ``openmined-psi`` imports (ECDH on P-256 plus a Bloom filter;
its wheel pins an older protobuf than Flower's, so install it with ``pip install --no-deps
--target DIR openmined-psi==2.0.6`` and put DIR on PYTHONPATH), it runs the same sets side by
side.

    .venv/bin/python benchmarks/psi.py --size 100000 --json out.json [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedrisk.federation.identifiers import IdentifierKey, normalise_identifiers, psi_digests
from secure_agg import psi


def _phone_sets(size: int, overlap: float, seed: int) -> tuple[list[str], list[str]]:
    """Guest and host phone columns: ``overlap`` of the guest's customers are the host's too,
    spelled differently; the rest of the host's are its own."""
    rng = np.random.default_rng(seed)
    numbers = rng.choice(10**8, size=2 * size, replace=False) + 13 * 10**9
    guest = [str(n) for n in numbers[:size]]
    shared = int(size * overlap)
    host_numbers = np.concatenate([numbers[:shared], numbers[size : 2 * size - shared]])
    rng.shuffle(host_numbers)
    host = [f"+86 {str(n)[:3]}-{str(n)[3:7]}-{str(n)[7:]}" for n in host_numbers]
    return guest, host


def raw_x25519_per_second(count: int) -> float:
    """Scalar multiplications per second of ``cryptography``'s X25519 on one core, on fresh
    32-byte inputs (the same call the PSI makes per point)."""
    points = np.random.default_rng(0).integers(0, 256, size=(count, 32), dtype=np.uint8)
    points[:, 31] &= 0x7F
    private = X25519PrivateKey.from_private_bytes(psi.new_private_key())
    flat = points.tobytes()
    start = time.perf_counter()
    for i in range(0, len(flat), 32):
        private.exchange(X25519PublicKey.from_public_bytes(flat[i : i + 32]))
    return count / (time.perf_counter() - start)


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_psi(guest_raw: list[str], host_raw: list[str], *, workers: int) -> dict[str, Any]:
    """Every step of the protocol between the two columns; seconds per phase and the result."""
    phases: dict[str, float] = {}
    mark = time.perf_counter()
    key = IdentifierKey.derive(bytes(range(64)), federation="benchmark")
    salt = key.psi_salt()
    guest_digests = psi.as_points(
        psi_digests(normalise_identifiers(guest_raw, "phone"), kind="phone", salt=salt)
    )
    host_digests = psi.as_points(
        psi_digests(normalise_identifiers(host_raw, "phone"), kind="phone", salt=salt)
    )
    phases["normalise_and_hash"] = time.perf_counter() - mark
    g = psi.GuestSecrets.fresh()
    h = psi.HostSecrets.fresh(len(host_digests), rng=np.random.default_rng())
    mark = time.perf_counter()
    host_points = psi.host_offer(host_digests, h, workers=workers)
    guest_points = psi.guest_offer(guest_digests, g, workers=workers)
    phases["offer"] = time.perf_counter() - mark
    mark = time.perf_counter()
    guest_double = psi.host_reblind(guest_points, h, workers=workers)
    phases["reblind"] = time.perf_counter() - mark
    mark = time.perf_counter()
    match = psi.guest_match(
        g,
        n_rows=len(guest_digests),
        guest_double=guest_double,
        host_points=host_points,
        workers=workers,
    )
    phases["match"] = time.perf_counter() - mark
    mark = time.perf_counter()
    sealed = psi.seal_match(
        match,
        secrets=g,
        host_channel_public=psi.public_key_of(h.channel_key),
        context=b"benchmark",
    )
    view = psi.open_match(
        sealed,
        secrets=h,
        guest_channel_public=psi.public_key_of(g.channel_key),
        context=b"benchmark",
    )
    phases["seal_and_open"] = time.perf_counter() - mark
    return {"phases": phases, "guest_rows": match.guest_rows, "host_rows": view.rows}


def run_openmined(guest_raw: list[str], host_raw: list[str]) -> dict[str, Any] | None:
    """The same intersection with ``openmined-psi``, or None if it does not import."""
    try:
        import private_set_intersection.python as om  # type: ignore[import-not-found]
    except ImportError:
        return None
    guest = normalise_identifiers(guest_raw, "phone")
    host = normalise_identifiers(host_raw, "phone")
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    client = om.client.CreateWithNewKey(True)
    server = om.server.CreateWithNewKey(True)
    setup = server.CreateSetupMessage(0.0, len(guest), host, om.DataStructure.RAW)
    response = server.ProcessRequest(client.CreateRequest(guest))
    found = client.GetIntersection(setup, response)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cpu_seconds": _cpu_seconds() - cpu_start,
        "ids_per_s": len(guest) / seconds,
        "intersection": len(found),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000, help="identifiers per party")
    parser.add_argument("--overlap", type=float, default=0.7, help="share the host knows")
    parser.add_argument("--workers", type=int, default=2, help="processes per blinding step")
    parser.add_argument("--raw-count", type=int, default=20_000, help="raw X25519 ops to time")
    parser.add_argument("--skip-openmined", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    guest, host = _phone_sets(args.size, args.overlap, args.seed)
    raw_before = raw_x25519_per_second(args.raw_count)
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    result = run_psi(guest, host, workers=args.workers)
    seconds = time.perf_counter() - start
    # CPU time of this process and its workers: on a machine shared with other jobs the wall
    # time stretches, the CPU time does not; over the worker count it is the idle-machine time.
    cpu = _cpu_seconds() - cpu_start
    raw_after = raw_x25519_per_second(args.raw_count)
    # Raw speed is measured before and after: the machine is shared, and the mean of the two
    # brackets the PSI's own conditions.
    raw = (raw_before + raw_after) / 2

    expected = list(range(int(args.size * args.overlap)))  # the guest's first rows are shared
    host_canonical = normalise_identifiers(host, "phone")
    guest_canonical = normalise_identifiers(guest, "phone")
    # The host learns which of its rows are shared (ascending by its secret slot order), never
    # where they sit among the guest's rows: compare the customers as sets.
    correct = result["guest_rows"].tolist() == expected and sorted(
        host_canonical[r] for r in result["host_rows"]
    ) == sorted(guest_canonical[i] for i in expected)
    ids_per_s = args.size / seconds
    out: dict[str, Any] = {
        "size": args.size,
        "overlap": args.overlap,
        "workers": args.workers,
        "seconds": seconds,
        "ids_per_s": ids_per_s,
        "cpu_seconds": cpu,
        "raw_x25519_per_s": raw,
        "ratio_to_raw_x25519": ids_per_s / raw,
        "phase_seconds": result["phases"],
        "intersection": len(result["guest_rows"]),
        "correct": correct,
        "openmined": None,
    }
    print(f"X25519 raw (1 core):   {raw:12,.0f} scalar mults/s")
    print(
        f"fedrisk ECDH-PSI:      {args.size:,} x {args.size:,} in {seconds:6.2f} s = "
        f"{ids_per_s:10,.0f} ids/s  (ratio to raw X25519: {ids_per_s / raw:.3f}; "
        f"{args.workers} workers; correct: {correct})"
    )
    print(f"    CPU seconds (this process and its workers): {cpu:.2f}")
    for phase, value in result["phases"].items():
        print(f"    {phase:<20} {value:7.2f} s")
    if not args.skip_openmined:
        om = run_openmined(guest, host)
        if om is None:
            print("openmined-psi:         not installed (see the module docstring)")
        else:
            om["ratio_to_raw_x25519"] = om["ids_per_s"] / raw
            om["fedrisk_speedup"] = om["seconds"] / seconds
            out["openmined"] = om
            print(
                f"openmined-psi (P-256): {args.size:,} x {args.size:,} in {om['seconds']:6.2f} s = "
                f"{om['ids_per_s']:10,.0f} ids/s, {om['cpu_seconds']:.2f} CPU s  "
                f"(fedrisk is {om['fedrisk_speedup']:.1f}x faster)"
            )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
