"""The aggregation server's Flower ServerApp: loads the public context and runs the strategy."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from flwr.app import Context, Message
from flwr.serverapp import Grid, ServerApp

from fedrisk.federation import protocol as proto
from fedrisk.federation.run_config import FederationConfig, parse_run_config
from fedrisk.files import write_atomic
from secure_agg.aggregation import CkksAggregation, InsecurePlainAggregation, VectorAggregation
from secure_agg.codec import record_to_chunks
from secure_agg.keys import load_public_context
from secure_agg.masking import run_binding
from server.coordinator.checkpoints import CheckpointStore
from server.coordinator.progress import ProgressLog
from server.coordinator.strategy import EncryptedFedAvg
from server.coordinator.tree_rounds import TreeBoosting

log = logging.getLogger(__name__)

app = ServerApp()


def build_summer(config: FederationConfig) -> VectorAggregation:
    """The public-context summer; refuses a secret context and warns loudly on plaintext.

    Notes
    -----
    ``load_public_context`` raises when the file holds a secret key: the server must never be
    able to decrypt. Plaintext mode exists only to measure what encryption costs.
    """
    if config.plaintext:
        log.warning(
            "PLAINTEXT MODE: updates, statistics and histograms travel UNENCRYPTED. "
            "This mode is insecure and exists only for comparison benchmarks."
        )
        return InsecurePlainAggregation()
    if not config.public_context:
        raise ValueError(
            "public-context must name the CKKS public context file; got an empty value"
        )
    return CkksAggregation(load_public_context(Path(config.public_context)))


CURIOUS_KEEP_ENV = "FEDRISK_CURIOUS_COORDINATOR_DIR"
"""Attack demonstration only (``benchmarks/collusion.py``): the folder where the ServerApp keeps
round 1's individual ciphertexts, as a curious coordinator could."""


def keep_ciphertexts(folder: Path, run: str, replies: Mapping[str, Message]) -> None:
    """Write each party's round-1 update ciphertext chunks and its sealed shares (never opened
    here) under ``folder/<party>/``, and the run binding of the masks in ``folder/run.txt``:
    what a curious coordinator holds."""
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "run.txt", run)
    for party, reply in replies.items():
        chunks, length = record_to_chunks(reply.content.array_records[proto.ENC_UPDATE])
        shares = reply.content.config_records.get(proto.MASK_SHARES)
        sealed = {k: bytes(v).hex() for k, v in shares.items()} if shares else {}  # type: ignore[arg-type]
        (folder / party).mkdir(exist_ok=True)
        write_atomic(
            folder / party / "update.json",
            json.dumps({"length": length, "chunks": [c.hex() for c in chunks], "sealed": sealed}),
        )


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Parse the run config once, then run stats, rounds, evaluation and release."""
    config = parse_run_config(dict(context.run_config))
    server_dir = config.server_path
    progress = ProgressLog(server_dir / "progress.jsonl" if server_dir else None)
    if config.layout == "vertical":
        from server.coordinator.vertical_app import run_vertical

        run_vertical(grid, config, progress)
        return
    try:
        summer = build_summer(config)
        checkpoints = CheckpointStore(server_dir / "checkpoints") if server_dir else None
        kind = TreeBoosting if config.model == "gbdt" else EncryptedFedAvg
        strategy = kind(config=config, summer=summer, progress=progress, checkpoints=checkpoints)
        keep = os.environ.get(CURIOUS_KEEP_ENV)
        if keep:
            run = run_binding(config.run_id, context.run_id)
            strategy.keep_round_one = functools.partial(keep_ciphertexts, Path(keep), run)
        result = strategy.start(grid, num_rounds=config.rounds, timeout=config.round_timeout)
    except Exception as e:
        progress.emit("failed", reason=f"{type(e).__name__}: {e}")
        raise
    if server_dir is not None:
        history = list(result.history)
        summary = {
            "run_id": config.run_id,
            "rounds": config.rounds,
            "he": not config.plaintext,
            "masking": config.masked,
            "history": history,
            "final": {"auc": history[-1]["auc"], "ks": history[-1]["ks"]} if history else None,
            "evaluate_metrics": {str(k): dict(v) for k, v in result.metrics.items()},
        }
        write_atomic(server_dir / "results.json", json.dumps(summary, indent=2))
    progress.emit("finished")
