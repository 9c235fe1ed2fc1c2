"""The coordinator's side of federated boosted trees: sums encrypted histograms level by level.

After the statistics phase of :class:`~server.coordinator.strategy.EncryptedFedAvg` (whose
summed statistics give every party the same bin edges), the run is a chain of steps. Step ``k``
names the statistics sum and the pooled histogram sum of step ``k - 1`` (absent at step 0);
every party decrypts the pooled sum, grows its copy of the tree by one level
(:class:`fedrisk.ml.trees.BoostingState`, the same deterministic split at every party), and
answers the encrypted histograms of the next level's nodes, plus, after a finished tree, its
encrypted validation statistics. The server adds the answers blind and starts the next step.
When every party answers that boosting is done (tree budget spent or early stopping, decided
identically from the pooled validation loss), the designated party releases the model.

After every finished tree the release party's answer also carries the parties' boosting state,
encrypted (:mod:`clients.tree_party`); the server checkpoints it with the step's pooled sum, and
a resumed run (``resume``) sends both to every party, which continues from there: the resumed
run grows the uninterrupted run's trees.

Notes
-----
The server sees ciphertexts, the step count, and the public per-tree validation AUC / KS the
parties report (as every federated run publishes its rounds' AUC / KS). It never sees a
histogram, a split or a leaf value; the checkpointed state is one more ciphertext. A party
that misses a step falls behind and is refused from then on (its state no longer matches the
pooled sums); the others go on while at least ``min_parties`` answer.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid

from fedrisk.federation import protocol as proto
from server.coordinator.checkpoints import Checkpoint
from server.coordinator.strategy import (
    Answers,
    EncryptedFedAvg,
    FederationError,
    FederationResult,
    RunState,
)
from server.coordinator.waves import Wave

log = logging.getLogger(__name__)


class TreeBoosting(EncryptedFedAvg):
    """Federated histogram GBDT over CKKS ciphertexts (the ``gbdt`` model kind)."""

    def start(
        self,
        grid: Grid,
        *,
        num_rounds: int | None = None,
        timeout: float = 3600.0,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
    ) -> FederationResult:
        """Statistics, then boosting steps until every party reports done, then the release.

        ``num_rounds`` is not used: the tree budget and early stopping end the run.

        Raises
        ------
        FederationError
            Too few parties answered a step, the parties disagree on being done, or the
            release failed.
        """
        del num_rounds, train_config, evaluate_config
        self.summary()
        resumed = self.checkpoints.latest() if (self.checkpoints and self.config.resume) else None
        self._wait_for_parties(grid, timeout=timeout)
        if resumed is not None:
            self.progress.emit("resumed", round=resumed.round)
        state = self.collect_statistics(grid, timeout=timeout, resumed=resumed)
        # A resumed run continues after its checkpoint's step, whose pooled sum every party
        # applies to the checkpointed state it is sent with the first step.
        pooled: ArrayRecord | None = None if resumed is None else resumed.enc_global
        restore = None if resumed is None else resumed.enc_tree_state
        history: list[dict[str, Any]] = [] if resumed is None else list(resumed.history)
        metrics: dict[int, MetricRecord] = {}
        step = 0 if resumed is None else resumed.round + 1
        tree_seconds = 0.0
        tree_bytes: list[float] = []
        tree_bytes_down: list[float] = []
        phases = {"tree": 0.0, "server_sums": 0.0}
        while True:
            started = self.clock.monotonic()
            self.progress.emit("round-start", round=step, rounds=0)
            nodes = self._sample(grid, state, fraction=1.0)
            masks = self._masks(f"tree:{step}", {proto.PURPOSE_TREE: self._names(state, nodes)})
            wave = self._wave(
                proto.MSG_TREE, state, step, ConfigRecord(), enc_global=pooled, masks=masks
            )
            if restore is not None:
                sealed = {**wave.records, proto.ENC_TREE_STATE: restore}
                wave = Wave.of(wave.message_type, wave.config, sealed)
                restore = None
            # One exchange per step. No round metrics await decryption here (the parties report
            # each tree's validation AUC / KS themselves), so the exchange carries no pooled
            # evaluation histograms.
            exchanged = self._exchange(
                grid,
                state,
                [(wave, nodes)],
                phase=f"tree step {step}",
                timeout=timeout,
                masks=masks,
            )
            answers = exchanged.answers
            self._require_quorum(answers, phase=f"tree step {step}")
            state = replace(state, roster=answers.roster, held=exchanged.held)
            phases["tree"] += exchanged.seconds
            sent = exchanged.bytes_down
            if sent:
                tree_bytes_down.append(sum(sent.values()) / len(sent))
            configs = [r.content.config_records[proto.CONFIG] for r in answers.good]
            done = {bool(c.get(proto.CFG_TREE_DONE, False)) for c in configs}
            if len(done) != 1:
                raise FederationError(f"tree step {step}: parties disagree on being done")
            report = configs[0].get(proto.CFG_TREE_REPORT)
            if isinstance(report, str) and report:
                entry = json.loads(report)
                tree_seconds += self.clock.monotonic() - started
                record = {
                    **entry,
                    "step": step,
                    "seconds": tree_seconds,
                    "bytes_up_per_party": _mean(tree_bytes),
                    "bytes_down_per_party": _mean(tree_bytes_down),
                    "phase_seconds": dict(phases),
                    "eval_parties": sorted(state.roster.name(n) for n in answers.nodes),
                    "train_parties": sorted(state.roster.name(n) for n in answers.nodes),
                    "dropped": [],
                }
                history.append(record)
                metrics[int(entry["round"])] = MetricRecord(
                    {proto.METRIC_AUC: float(entry["auc"]), proto.METRIC_KS: float(entry["ks"])}
                )
                self.progress.emit("round", **record)
                tree_seconds, tree_bytes, tree_bytes_down = 0.0, [], []
                phases = {"tree": 0.0, "server_sums": 0.0}
            if done == {True}:
                break
            records = answers.records(proto.ENC_TREE)
            tree_bytes.append(sum(r.count_bytes() for r in records) / len(records))
            pooled, sum_seconds = self._masked_sum(
                grid, answers, masks, proto.ENC_TREE, proto.PURPOSE_TREE, timeout=timeout
            )
            phases["server_sums"] += sum_seconds
            tree_seconds += self.clock.monotonic() - started
            self._save_tree_checkpoint(state, step, pooled, answers, history)
            step += 1
        if pooled is None:
            raise FederationError("boosting ended before any histogram was summed")
        state = replace(state, round=len(history), enc_global=pooled, history=tuple(history))
        release = self.release(grid, state, timeout=timeout)
        self.progress.emit("released", party=release.party, model_id=release.model_id)
        return FederationResult(
            enc_global=pooled, history=state.history, metrics=metrics, release=release
        )

    def _save_tree_checkpoint(
        self,
        state: RunState,
        step: int,
        pooled: ArrayRecord,
        answers: Answers,
        history: list[dict[str, Any]],
    ) -> None:
        """After a finished tree (the release party's answer carries the state): checkpoint the
        state with the step's pooled sum; older checkpoints are removed."""
        if self.checkpoints is None:
            return
        snapshots = [
            r.content.array_records[proto.ENC_TREE_STATE]
            for r in answers.good
            if proto.ENC_TREE_STATE in r.content.array_records
        ]
        if not snapshots:
            return
        self.checkpoints.save(
            Checkpoint(
                round=step,
                enc_stats=state.enc_stats,
                enc_global=pooled,
                history=list(history),
                enc_tree_state=snapshots[0],
            ),
            keep=1,
        )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
