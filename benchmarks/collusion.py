"""The coordinator colluding with party 0: does it read the other parties' updates?

Runs a real 5-party CKKS federation in Flower's simulation engine twice, in one invocation, with
masks (pairwise; pairwise and self masks with ``--self-masks``) and without. In the
attacked run (masked, or unmasked with ``--no-masking``) the ServerApp keeps round 1's
individual ciphertexts, as a curious coordinator could. Then, acting as that coordinator with
party 0's secret context (every party holds the same CKKS key), the script decrypts every other
party's stored ciphertext and compares it with the victim's true update, recomputed in the
clear from the victim's own data. It also checks the sums: all five ciphertexts added, and four
of them after "dropping" party 4, with the masks that do not cancel removed through the real
unmasking protocol (each survivor opens the shares sealed to it with its own key).

Reports ``max_abs_corr`` (largest |Pearson r| over victims), ``sum_max_err`` and
``dropout_sum_max_err`` (largest error against the true sums, absolute and as a fraction of the
sum's value range), ``masked_over_unmasked_round_time`` (mean steady round time, rounds 2..R,
masked runs over unmasked runs, interleaved ``--repeats`` times; ``..._median``: the same with
medians), the server's sum phase (with self masks it holds the ``query.unmask`` exchange), one
party's update encryption time with and without masks, and the final AUC of both modes.

    .venv/bin/python benchmarks/collusion.py --json out.json [--no-masking] [--self-masks]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import timeit
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from clients.party import PartyNode, load_party_config, mask_identity
from fedrisk.federation.run_config import parse_run_config
from fedrisk.ml.training import configure_torch
from secure_agg.aggregation import sum_encrypted
from secure_agg.codec import decrypt_vector, encrypt_vector, record_to_plain_vector
from secure_agg.keys import CkksContext, generate_context, load_secret_context, public_context
from secure_agg.masking import (
    MaskedExchange,
    MaskIdentity,
    RevealLedger,
    mask_chunks,
    new_self_seed,
    reveal_shares,
    share_seeds,
    threshold_for,
    unmask_sum,
)
from secure_agg.params import HEParams
from server.coordinator.serverapp import CURIOUS_KEEP_ENV
from simulations.runner import FederationOutcome, prepare_data, run_federation
from simulations.spec import SimulationSpec

PARTIES = 5
DROPPED = "party_4"


def _steady_rounds(outcome: FederationOutcome) -> list[dict[str, Any]]:
    return outcome.history[1:] or outcome.history


def _steady_seconds(outcome: FederationOutcome) -> float:
    return float(statistics.fmean(h["seconds"] for h in _steady_rounds(outcome)))


def _pooled(outcomes: list[FederationOutcome], phase: str | None = None) -> list[float]:
    """Every steady round's seconds (or one phase's) over ``outcomes``."""
    return [
        float(h["seconds"] if phase is None else h["phase_seconds"][phase])
        for o in outcomes
        for h in _steady_rounds(o)
    ]


def _true_updates(parties_dir: Path, spec: SimulationSpec) -> dict[str, np.ndarray]:
    """Each party's round-1 update ``n * w ++ [n]`` computed in the clear from its own data,
    as the party itself computes it (same seeds, same pooled statistics)."""
    federation = parse_run_config(
        {
            "rounds": spec.rounds,
            "model": spec.model,
            "hidden": spec.hidden,
            "seed": spec.seed,
            "plaintext": True,
            "local_epochs": spec.local_epochs,
            "learning_rate": spec.learning_rate,
            "optimizer": spec.optimizer,
            "sim_workspace": str(parties_dir.parent),
        }
    )
    nodes = {
        f"party_{i}": PartyNode(
            load_party_config(parties_dir / f"party_{i}" / "party.toml"), federation
        )
        for i in range(spec.parties)
    }
    stats = sum(record_to_plain_vector(node.local_stats()) for node in nodes.values())
    return {
        name: record_to_plain_vector(node.train(np.asarray(stats), None, 1))
        for name, node in nodes.items()
    }


def _stored(kept: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for folder in sorted(p for p in kept.iterdir() if p.is_dir()):
        raw = json.loads((folder / "update.json").read_text(encoding="utf-8"))
        found[folder.name] = {
            "length": int(raw["length"]),
            "chunks": [bytes.fromhex(c) for c in raw["chunks"]],
            "sealed": {k: bytes.fromhex(v) for k, v in raw["sealed"].items()},
        }
    return found


def _max_err(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    err = float(np.max(np.abs(got - want)))
    return err, err / float(np.ptp(want))


def attack(
    workdir: Path, spec: SimulationSpec, *, masked: bool, self_masks: bool
) -> dict[str, Any]:
    """Party 0's key against the kept round-1 ciphertexts; the sums; the dropout recovery."""
    parties_dir = workdir / "federation" / "parties"
    kept = _stored(workdir / "kept")
    truth = _true_updates(parties_dir, spec)
    ctx = load_secret_context(parties_dir / "party_0" / "ckks.secret.ctx")
    server = public_context(ctx)
    corr = {}
    for victim in sorted(kept):
        if victim == "party_0":
            continue
        read = decrypt_vector(ctx, kept[victim]["chunks"], length=kept[victim]["length"])
        corr[victim] = float(np.corrcoef(read, truth[victim])[0, 1])
    names = sorted(kept)
    length = kept[names[0]]["length"]
    result: dict[str, Any] = {
        "masked": masked,
        "self_masks": masked and self_masks,
        "update_length": length,
        "victims": len(corr),
        "corr_by_victim": corr,
        "max_abs_corr": max(abs(c) for c in corr.values()),
    }
    for dropped, key in (([], "sum_max_err"), ([DROPPED], "dropout_sum_max_err")):
        survivors = [n for n in names if n not in dropped]
        partial = sum_encrypted(server, [kept[n]["chunks"] for n in survivors])
        if masked and (dropped or self_masks):
            partial = _unmasked(
                workdir, kept, partial, dropped=dropped, self_masks=self_masks, context=server
            )
        want = np.sum([truth[n] for n in survivors], axis=0)
        result[key], result[f"{key}_rel_range"] = _max_err(
            decrypt_vector(ctx, partial, length=length), want
        )
    return result


def _unmasked(
    workdir: Path,
    kept: dict[str, dict[str, Any]],
    partial: list[bytes],
    *,
    dropped: list[str],
    self_masks: bool,
    context: CkksContext,
) -> list[bytes]:
    """The survivors' round-1 sum with the masks that do not cancel removed, through the real
    protocol: each survivor opens the shares sealed to it with its own key and reveals."""
    parties_dir = workdir / "federation" / "parties"
    names = sorted(kept)
    survivors = [n for n in names if n not in dropped]
    federation = parse_run_config({"sim_workspace": str(workdir / "federation")})
    threshold = threshold_for(federation.mask_threshold, len(names))
    exchange = MaskedExchange("round:1", tuple(names), threshold, self_masks=self_masks)
    exchange.declare_dropped(dropped)
    reveals = {}
    for name in survivors:
        config = load_party_config(parties_dir / name / "party.toml")
        reveals[name] = reveal_shares(
            mask_identity(config, _run_of(workdir)),
            exchange="round:1",
            participants=names,
            dropped=dropped,
            sealed={s: kept[s]["sealed"][name] for s in survivors},
            threshold=threshold,
            ledger=RevealLedger(),
            self_masks=self_masks,
        )
    return unmask_sum(context, exchange, partial, reveals, purpose="update")


def _encrypt_cost(
    parties: int, length: int, *, self_masks: bool, repeats: int = 5
) -> dict[str, float]:
    """One party's update encryption with and without its masks (the whole masking cost at a
    party: mask streams for its peers plus the sealed shares), timed here on one core."""
    ctx = generate_context(HEParams())
    names = [f"party_{i}" for i in range(parties)]
    keys = {name: X25519PrivateKey.generate() for name in names}
    me = MaskIdentity(
        names[0], "bench", keys[names[0]], {n: k.public_key() for n, k in keys.items()}
    )
    vec = np.random.default_rng(0).normal(size=length)
    threshold = threshold_for(0, parties)

    def masked() -> None:
        seed = new_self_seed() if self_masks else None
        mask_chunks(
            ctx,
            me,
            vec,
            exchange="round:1",
            purpose="update",
            participants=names,
            self_seed=seed,
        )
        share_seeds(me, exchange="round:1", participants=names, threshold=threshold, self_seed=seed)

    plain = min(timeit.repeat(lambda: encrypt_vector(ctx, vec), number=1, repeat=repeats))
    with_masks = min(timeit.repeat(masked, number=1, repeat=repeats))
    return {
        "party_encrypt_seconds_unmasked": plain,
        "party_encrypt_seconds_masked": with_masks,
        "party_encrypt_masked_over_unmasked": with_masks / plain,
    }


def _run_of(workdir: Path) -> str:
    """The run binding of the parties' seeds (``secure_agg.masking.run_binding``), kept by the
    ServerApp beside the ciphertexts."""
    return (workdir / "kept" / "run.txt").read_text(encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--no-masking", action="store_true", help="attack the unmasked run")
    parser.add_argument(
        "--self-masks",
        action="store_true",
        help="masked runs add self masks to the pairwise ones (mask-self = true)",
    )
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per mode")
    parser.add_argument(
        "--model",
        choices=("mlp", "lr"),
        default="mlp",
        help="mlp (96,64): ~9k weights, so chance correlation (~1/sqrt(length)) stays far "
        "below 0.05; an LR update has ~30 weights and chance alone reaches ~0.2",
    )
    args = parser.parse_args()
    configure_torch(threads=1)
    spec = SimulationSpec(
        dataset=args.dataset,
        parties=PARTIES,
        partition="iid",
        model=args.model,
        rounds=args.rounds,
        hidden=(96, 64),
    )
    data = prepare_data(spec)
    runs: dict[bool, list[FederationOutcome]] = {True: [], False: []}
    attacked = not args.no_masking
    with tempfile.TemporaryDirectory(prefix="fedrisk-collusion-") as tmp:
        # Interleaved, so the shared machine's load hits both modes alike.
        for repeat in range(args.repeats):
            for masking in (True, False):
                workdir = Path(tmp) / f"{'masked' if masking else 'unmasked'}-{repeat}"
                keep = masking == attacked and repeat == 0
                if keep:
                    os.environ[CURIOUS_KEEP_ENV] = str(workdir / "kept")
                try:
                    runs[masking].append(
                        run_federation(
                            spec,
                            data,
                            release_dir=Path(tmp) / "registry",
                            masking=masking,
                            mask_self=args.self_masks,
                            workdir=workdir,
                        )
                    )
                finally:
                    os.environ.pop(CURIOUS_KEEP_ENV, None)
                if keep:
                    result = attack(workdir, spec, masked=masking, self_masks=args.self_masks)
    masked = [_steady_seconds(o) for o in runs[True]]
    unmasked = [_steady_seconds(o) for o in runs[False]]
    pairs = [m / u for m, u in zip(masked, unmasked, strict=True)]
    result.update(
        {
            "dataset": args.dataset,
            "parties": PARTIES,
            "rounds": args.rounds,
            "model": args.model,
            "repeats": args.repeats,
            "masked_round_seconds": statistics.fmean(masked),
            "unmasked_round_seconds": statistics.fmean(unmasked),
            "masked_over_unmasked_round_time": statistics.fmean(masked)
            / statistics.fmean(unmasked),
            "round_time_ratio_per_repeat": pairs,
            # Medians of every steady round pooled over the repeats: robust to the load spikes
            # of a shared machine, which the means above are not.
            "masked_over_unmasked_round_time_median": statistics.median(_pooled(runs[True]))
            / statistics.median(_pooled(runs[False])),
            # The server's sums, and with masks the query.unmask exchange behind them.
            "masked_server_sums_seconds_median": statistics.median(
                _pooled(runs[True], "server_sums")
            ),
            "unmasked_server_sums_seconds_median": statistics.median(
                _pooled(runs[False], "server_sums")
            ),
            **_encrypt_cost(spec.parties, result["update_length"], self_masks=args.self_masks),
            "masked_final_auc": runs[True][0].history[-1]["auc"],
            "unmasked_final_auc": runs[False][0].history[-1]["auc"],
            "lineage_secure_aggregation": runs[True][0].artifact.lineage.secure_aggregation,
        }
    )
    args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
