"""A party's side of federated boosted trees: one boosting step per message.

The party's :class:`~fedrisk.ml.trees.BoostingState` lives in the run's Flower
``Context.state`` (beside the party, never sent to the SuperLink), advanced only by the pooled
sums every party decrypts alike. Its rows are binned once per process and run (cached), with the
holder's own validation split and subsampling streams seeded by its name.

A resumed run starts with empty run contexts, so after every finished tree the release party
also answers its state, serialized and encrypted (:data:`~fedrisk.federation.protocol.
ENC_TREE_STATE`); the coordinator checkpoints that ciphertext and, on resume, sends it back to
every party, which continues from it.

Notes
-----
The state holds the binning, the trees so far and their pooled validation results: every
party derives all of it from the pooled sums, so it is no one party's data. It travels CKKS-
encrypted and unmasked (masks hide one party's contribution to a sum; this is the same at every
party), so the coordinator, which holds no secret key, cannot read it.
"""

from __future__ import annotations

import functools
import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from clients.party import PartyConfig, PartyNode, PartyRefusedError, load_local_data
from fedrisk.errors import FedRiskError
from fedrisk.federation import protocol as proto
from fedrisk.ml.features import Preprocessor
from fedrisk.ml.trees import (
    BoostingState,
    Shard,
    TreeBinning,
    TreeParams,
    base_margin_of,
    tree_params_of,
)
from fedrisk.release.artifact import artifact_from_forest
from secure_agg.aggregation import FloatVector
from secure_agg.codec import bytes_to_words, words_to_bytes

log = logging.getLogger(__name__)

STATE_KEY = "tree-boosting"
_STATE_JSON = "state"


class TreeStepError(FedRiskError, RuntimeError):
    """This party's boosting state does not match the step the server asks for."""


def tree_params(node: PartyNode) -> TreeParams:
    """The run's tree hyper-parameters (the same at every party)."""
    return tree_params_of(node.federation)


@functools.lru_cache(maxsize=32)
def _shard(config: PartyConfig, run_id: str, binning_json: str, params_json: str) -> Shard:
    del run_id  # part of the cache key: a new run starts with fresh margin caches
    binning = TreeBinning.from_dict(json.loads(binning_json))
    params = TreeParams.model_validate_json(params_json)
    data = load_local_data(config)
    target = data.schema.target_column
    if target is None:
        raise PartyRefusedError(f"party {config.name}: schema has no target column")
    return Shard.split(
        config.name, binning.transform(data.train), data.train[target].to_numpy(), params=params
    )


def shard_of(node: PartyNode, binning: TreeBinning, params: TreeParams) -> Shard:
    """The party's binned training rows (its validation split held out), cached per run."""
    return _shard(
        node.config,
        node.federation.run_id,
        json.dumps(binning.to_dict(), sort_keys=True),
        params.model_dump_json(),
    )


_HISTS_KEY = "tree-boosting.open-hists"
_live: dict[tuple[str, str], tuple[str, BoostingState]] = {}
"""This process's last state per (party, run), with the text it was saved as: a process that
answers many steps of a run (a simulation's) parses its state only when the text differs."""


def load_state(state: RecordDict, *, owner: tuple[str, str] | None = None) -> BoostingState | None:
    """The party's boosting state from ``Context.state``, or None before step 0.

    ``owner`` (party, run) takes this process's live copy when it is the saved one: the caller
    must save what it does with it (:func:`save_state`), or the copy is dropped.
    """
    record = state.config_records.get(STATE_KEY)
    if record is None:
        return None
    text = str(record[_STATE_JSON])
    live = _live.pop(owner, None) if owner is not None else None
    if live is not None and live[0] == text:
        return live[1]
    loaded = BoostingState.from_dict(json.loads(text))
    hists = state.array_records.get(_HISTS_KEY)
    if hists is not None:
        loaded.open_hists = {
            int(k): np.asarray(a.numpy(), dtype=np.float64) for k, a in hists.items()
        }
    return loaded


def save_state(context_state: RecordDict, state: BoostingState, *, owner: tuple[str, str]) -> None:
    """Keep ``state`` in ``Context.state``: JSON, with the open histograms as arrays."""
    text = state.to_json(open_hists=False)
    context_state[STATE_KEY] = ConfigRecord({_STATE_JSON: text})
    context_state[_HISTS_KEY] = ArrayRecord(
        {str(k): Array(np.ascontiguousarray(v)) for k, v in state.open_hists.items()}
    )
    for stale in [k for k in _live if k[1] != owner[1]]:
        del _live[stale]  # one run at a time: earlier runs' states are done with
    _live[owner] = (text, state)


@dataclass(frozen=True)
class StepAnswer:
    """A party's answer to one boosting step."""

    record: Any | None
    """The encrypted contribution (None once done)."""
    report: dict[str, float] | None
    """The report of a tree whose validation statistics just arrived (public: tree count,
    validation AUC, KS, loss)."""
    done: bool
    snapshot: Any | None = None
    """The encrypted state after a tree finished, from the release party only (checkpoints)."""


def encode_snapshot(state: BoostingState) -> FloatVector:
    """The state as exact integers for an encrypted vector (compressed JSON, 4 bytes a value)."""
    return bytes_to_words(zlib.compress(state.to_json().encode(), 6))


def decode_snapshot(vec: FloatVector) -> BoostingState:
    """Invert :func:`encode_snapshot` on the decrypted vector.

    Raises
    ------
    TreeStepError
        If the vector is not a boosting state.
    """
    try:
        text = zlib.decompress(words_to_bytes(vec)).decode()
        return BoostingState.from_dict(json.loads(text))
    except (FedRiskError, zlib.error, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise TreeStepError(f"the tree-state snapshot must be a boosting state; {e}") from e


def _resumed_state(
    context_state: RecordDict,
    snapshot: FloatVector | None,
    number: int,
    *,
    owner: tuple[str, str],
) -> BoostingState | None:
    """The state at step ``number - 1``: this run's own, else the checkpoint's snapshot."""
    loaded = load_state(context_state, owner=owner)
    if loaded is not None and loaded.step == number - 1:
        return loaded
    if snapshot is not None:
        restored = decode_snapshot(snapshot)
        if restored.step == number - 1:
            return restored
    return None


def step(
    node: PartyNode,
    context_state: RecordDict,
    *,
    stats: FloatVector,
    pooled: FloatVector | None,
    number: int,
    snapshot: FloatVector | None = None,
) -> StepAnswer:
    """Apply the pooled sum of step ``number - 1`` and answer step ``number``.

    ``snapshot`` is a checkpoint's decrypted state at step ``number - 1``, sent by a resumed
    coordinator: a party whose run context does not hold that step continues from it.

    Raises
    ------
    TreeStepError
        If the party's state is not at step ``number - 1`` (it missed a step) and no snapshot
        of that step came with the message.
    """
    params = tree_params(node)
    pooled_sum = node.pooled_stats(stats)
    owner = (node.config.name, node.federation.run_id)
    if number == 0:
        binning = TreeBinning.from_stats(pooled_sum, max_bins=params.max_bins)
        state = BoostingState(binning, params, base_margin=base_margin_of(pooled_sum))
        evaluated = 0
        trees = 0
    else:
        resumed = _resumed_state(context_state, snapshot, number, owner=owner)
        if resumed is None or pooled is None:
            loaded = load_state(context_state)
            raise TreeStepError(
                f"party {node.config.name} must be at tree step {number - 1} with a pooled sum; "
                f"got state step {None if loaded is None else loaded.step}"
            )
        state = resumed
        evaluated = len(state.losses)
        trees = len(state.trees)
        state.apply(pooled)
    save_state(context_state, state, owner=owner)
    report = None
    if len(state.losses) > evaluated:
        report = {
            "round": float(len(state.losses)),
            "auc": state.valid_aucs[-1],
            "ks": state.valid_kss[-1],
            "valid_loss": state.losses[-1],
        }
    if state.done:
        return StepAnswer(None, report, True)
    shard = shard_of(node, state.binning, params)
    record = node.encode(state.local_vector(shard), proto.PURPOSE_TREE)
    snap = None
    if len(state.trees) > trees and node.config.name == node.federation.release_party:
        # Unmasked: the state is the same at every party (see the module notes).
        snap = node.channel.encode(encode_snapshot(state))
    return StepAnswer(record, report, False, snap)


def release(
    node: PartyNode,
    context_state: RecordDict,
    *,
    stats: FloatVector,
    rounds: int,
    history: list[dict[str, Any]],
    parties: list[str],
) -> tuple[str, Path]:
    """Write the finished forest as an Ed25519-signed ``gbdt`` artifact.

    Raises
    ------
    PartyRefusedError
        If the party is not set up to release or boosting is not done.
    """
    state = load_state(context_state)
    if state is None or not state.done:
        raise PartyRefusedError(f"party {node.config.name} has no finished boosting to release")
    pooled = node.pooled_stats(stats)
    record = node.release_record(pooled, rounds=rounds, history=history, parties=parties)
    artifact = artifact_from_forest(
        state.forest(),
        model_id=record.model_id,
        stage=node.federation.stage,
        baseline=Preprocessor(node.data.schema).fit_stats(pooled).reference_row(),
        metrics=record.metrics,
        he_params=record.he_params,
        lineage=record.lineage,
    )
    return record.model_id, node.write_release(artifact)
