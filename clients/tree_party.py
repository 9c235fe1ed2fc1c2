"""A party's side of federated boosted trees: one boosting step per message.

The party's :class:`~fedrisk.ml.trees.BoostingState` lives in the run's Flower
``Context.state`` (beside the party, never sent to the SuperLink), advanced only by the pooled
sums every party decrypts alike. Its rows are binned once per process and run (cached), with the
holder's own validation split and subsampling streams seeded by its name.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, RecordDict

from clients.party import PartyConfig, PartyNode, PartyRefusedError, load_local_data
from fedrisk.errors import FedRiskError
from fedrisk.ml.features import FeatureStats, Preprocessor
from fedrisk.ml.trees import (
    TREE_STATS_BINS,
    BoostingState,
    Shard,
    TreeBinning,
    TreeParams,
    base_margin_of,
)
from fedrisk.release.artifact import Lineage, RoundMetrics, artifact_from_forest, write_artifact
from fedrisk.release.identity import load_signing_key
from secure_agg.aggregation import FloatVector

log = logging.getLogger(__name__)

STATE_KEY = "tree-boosting"
_STATE_JSON = "state"


class TreeStepError(FedRiskError, RuntimeError):
    """This party's boosting state does not match the step the server asks for."""


def tree_params(node: PartyNode) -> TreeParams:
    """The run's tree hyper-parameters (the same at every party)."""
    return TreeParams(seed=node.federation.seed, n_trees=node.federation.trees)


def pooled_stats(node: PartyNode, stats: FloatVector) -> FeatureStats:
    """The decrypted statistics sum, at the tree binning's histogram resolution."""
    return FeatureStats.from_vector(stats, node.data.schema, n_bins=TREE_STATS_BINS)


@functools.lru_cache(maxsize=4)
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


def load_state(state: RecordDict) -> BoostingState | None:
    """The party's boosting state from ``Context.state``, or None before step 0."""
    record = state.config_records.get(STATE_KEY)
    if record is None:
        return None
    return BoostingState.from_dict(json.loads(str(record[_STATE_JSON])))


def step(
    node: PartyNode,
    context_state: RecordDict,
    *,
    stats: FloatVector,
    pooled: FloatVector | None,
    number: int,
) -> tuple[Any | None, dict[str, float] | None, bool]:
    """Apply the pooled sum of step ``number - 1`` and answer step ``number``.

    Returns
    -------
    tuple
        The encrypted contribution (None once done), the report of a tree whose validation
        statistics just arrived (public: tree count, validation AUC, KS), and whether done.

    Raises
    ------
    TreeStepError
        If the party's state is not at step ``number - 1`` (it missed a step).
    """
    params = tree_params(node)
    pooled_sum = pooled_stats(node, stats)
    if number == 0:
        binning = TreeBinning.from_stats(pooled_sum, max_bins=params.max_bins)
        state = BoostingState(binning, params, base_margin=base_margin_of(pooled_sum))
        evaluated = 0
    else:
        loaded = load_state(context_state)
        if loaded is None or loaded.step != number - 1 or pooled is None:
            raise TreeStepError(
                f"party {node.config.name} must be at tree step {number - 1} with a pooled sum; "
                f"got state step {None if loaded is None else loaded.step}"
            )
        state = loaded
        evaluated = len(state.losses)
        state.apply(pooled)
    context_state[STATE_KEY] = ConfigRecord({_STATE_JSON: state.to_json()})
    report = None
    if len(state.losses) > evaluated:
        report = {
            "round": float(len(state.losses)),
            "auc": state.valid_aucs[-1],
            "ks": state.valid_kss[-1],
            "valid_loss": state.losses[-1],
        }
    if state.done:
        return None, report, True
    shard = shard_of(node, state.binning, params)
    return node.channel.encode(state.local_vector(shard)), report, False


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
    config = node.config
    if config.release_dir is None or config.signing_key is None:
        raise PartyRefusedError(
            f"party {config.name} is not set up to release: release_dir and signing_key must "
            "be set in party.toml"
        )
    state = load_state(context_state)
    if state is None or not state.done:
        raise PartyRefusedError(f"party {config.name} has no finished boosting to release")
    pooled = pooled_stats(node, stats)
    fingerprint = hashlib.sha256(
        node.data.schema.fingerprint().encode() + np.round(pooled.to_vector(), 3).tobytes()
    ).hexdigest()
    model_id = f"{node.federation.stage}-gbdt-{uuid.uuid4().hex[:12]}"
    artifact = artifact_from_forest(
        state.forest(),
        model_id=model_id,
        stage=node.federation.stage,
        baseline=Preprocessor(node.data.schema).fit_stats(pooled).reference_row(),
        metrics=[
            RoundMetrics(
                round=int(h["round"]),
                auc=float(h["auc"]),
                ks=float(h["ks"]),
                n_parties=len(h["eval_parties"]),
            )
            for h in history
        ],
        he_params=None if node.federation.plaintext else config.he_params.model_dump(),
        lineage=Lineage(
            run_id=node.federation.run_id or model_id,
            parties=parties,
            rounds=rounds,
            dataset_fingerprint=fingerprint,
            created_at=datetime.now(UTC).isoformat(),
        ),
    )
    path = write_artifact(
        artifact, config.release_dir, signing_key=load_signing_key(config.signing_key)
    )
    log.info("released boosted trees %s to %s", model_id, path)
    return model_id, path
