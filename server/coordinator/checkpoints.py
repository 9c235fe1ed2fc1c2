"""Ciphertext-only checkpoints of the server's state after each completed round."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import Array, ArrayRecord

from fedrisk.files import staged_directory


@dataclass(frozen=True)
class Checkpoint:
    """The encrypted global model and statistics after ``round``, plus the public history, and
    the rounds still awaiting their metrics (their evaluation is folded into later rounds)."""

    round: int
    enc_stats: ArrayRecord
    enc_global: ArrayRecord
    history: list[dict[str, Any]]
    pending: list[dict[str, Any]] = field(default_factory=list)
    """Public partial records of trained rounds whose metrics are not in yet."""
    enc_pooled_hist: ArrayRecord | None = None
    """The first pending round's pooled score histograms (a ciphertext), awaiting decryption."""
    enc_tree_state: ArrayRecord | None = None
    """Boosted trees: the parties' state after a finished tree, as the release party encrypted
    it (a ciphertext). A tree run's ``round`` is its boosting step and ``enc_global`` that
    step's pooled histograms, which the state has not applied yet."""


class CheckpointStore:
    """Writes one directory per round atomically; ``latest()`` returns the newest complete one.

    Notes
    -----
    Only ciphertexts (CKKS, opaque to the server) and public round metrics are stored, so a
    checkpoint on the coordinator's disk reveals nothing the coordinator could not already see.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def save(self, checkpoint: Checkpoint, *, keep: int | None = None) -> Path:
        """Write ``round-NNNN`` via a temporary directory and a rename: never half-written.

        ``keep`` removes all but the newest ``keep`` checkpoints once this one is complete
        (a tree run checkpoints after every tree, and only its latest is ever resumed).
        """
        final = self.directory / f"round-{checkpoint.round:04d}"
        with staged_directory(final, replace=True) as tmp:
            records = {
                "enc_stats": _write_record(checkpoint.enc_stats, tmp / "enc_stats"),
                "enc_global": _write_record(checkpoint.enc_global, tmp / "enc_global"),
            }
            if checkpoint.enc_pooled_hist is not None:
                records["enc_pooled_hist"] = _write_record(
                    checkpoint.enc_pooled_hist, tmp / "enc_pooled_hist"
                )
            if checkpoint.enc_tree_state is not None:
                records["enc_tree_state"] = _write_record(
                    checkpoint.enc_tree_state, tmp / "enc_tree_state"
                )
            manifest = {
                "round": checkpoint.round,
                "history": checkpoint.history,
                "pending": checkpoint.pending,
                "records": records,
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        if keep is not None:
            for old in self._complete()[:-keep]:
                shutil.rmtree(old)
        return final

    def _complete(self) -> list[Path]:
        """Complete checkpoint folders, oldest first (by round number: it may pass 9999)."""
        found = [p for p in self.directory.glob("round-*") if (p / "manifest.json").exists()]
        return sorted(found, key=lambda p: int(p.name.removeprefix("round-")))

    def latest(self) -> Checkpoint | None:
        """The newest complete checkpoint, or None."""
        rounds = self._complete()
        if not rounds:
            return None
        path = rounds[-1]
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        records = manifest["records"]
        pooled = records.get("enc_pooled_hist")
        tree_state = records.get("enc_tree_state")
        return Checkpoint(
            round=int(manifest["round"]),
            history=list(manifest["history"]),
            enc_stats=_read_record(path / "enc_stats", records["enc_stats"]),
            enc_global=_read_record(path / "enc_global", records["enc_global"]),
            # Checkpoints written before evaluation was folded into the next round have none.
            pending=list(manifest.get("pending", [])),
            enc_pooled_hist=(
                None if pooled is None else _read_record(path / "enc_pooled_hist", pooled)
            ),
            enc_tree_state=(
                None if tree_state is None else _read_record(path / "enc_tree_state", tree_state)
            ),
        )


def _write_record(record: ArrayRecord, directory: Path) -> list[dict[str, Any]]:
    directory.mkdir()
    entries = []
    for index, (key, array) in enumerate(record.items()):
        (directory / f"{index}.bin").write_bytes(array.data)
        entries.append(
            {"key": key, "dtype": array.dtype, "shape": list(array.shape), "stype": array.stype}
        )
    return entries


def _read_record(directory: Path, entries: list[dict[str, Any]]) -> ArrayRecord:
    record = ArrayRecord()
    for index, entry in enumerate(entries):
        record[entry["key"]] = Array(
            dtype=entry["dtype"],
            shape=tuple(entry["shape"]),
            stype=entry["stype"],
            data=(directory / f"{index}.bin").read_bytes(),
        )
    return record
