"""The encrypted federated-averaging strategy: sums CKKS ciphertexts it can never read.

The protocol of one federated run, all driven from here:

1. ``query.stats``: every connected party validates its data, then sends its additive feature
   statistics, encrypted. The server sums them. Parties whose data fails validation refuse with
   the schema error; they are excluded and the error is surfaced in the progress log.
2. For each round: ``train`` names the encrypted statistics sum and the encrypted global model
   (absent in round 1, when every party starts from the same seeded initialisation). Each party
   decrypts, fits the same preprocessor, trains locally, and answers ``n * weights ++ [n]``
   encrypted. The server sums the answers into the next encrypted global model.
3. ``evaluate``: each party scores its local test split with the global model and answers
   per-class score histograms, encrypted. The server sums them; ``query.metrics`` asks one party
   to decrypt the pooled histograms and report global AUC and KS.
4. ``query.release``: the designated party decrypts the final model and writes a signed artifact.

Messages name their sealed records by digest and carry only those the party does not hold yet
(:mod:`secure_agg.record_cache`): the statistics sum travels to a party once per run and each
global model once (with ``evaluate``; the next ``train`` reuses it). A party that lost its cache
is sent the full message again within the same wave.

Notes
-----
The server holds the CKKS public context only. It never sees a plaintext update, aggregate,
statistic or per-party sample count: parties weight their own updates and the count travels as
one more encrypted slot. Dropped or failing parties are tolerated while at least ``min_parties``
answer; below that the run fails with the reason.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from fedrisk.federation import protocol as proto
from fedrisk.federation.run_config import FederationConfig
from secure_agg import record_cache
from secure_agg.aggregation import VectorAggregation
from server.coordinator.checkpoints import Checkpoint, CheckpointStore
from server.coordinator.progress import ProgressLog

log = logging.getLogger(__name__)

# Seconds between pulls for a wave's replies: quick ones during the quick period, then slow.
_QUICK_PULL = 0.02
_QUICK_PERIOD = 2.0
_SLOW_PULL = 0.25


class FederationError(RuntimeError):
    """The run cannot go on: too few parties answered, or the release failed."""


@dataclass
class RoundOutcome:
    """What one round produced, as the server can see it (no plaintext model data)."""

    round: int
    train_parties: list[str]
    eval_parties: list[str]
    dropped: list[str]
    auc: float
    ks: float
    seconds: float
    bytes_up_per_party: float
    bytes_down_per_party: float
    phase_seconds: dict[str, float] = field(default_factory=dict)
    """Where the round's time went: each message wave, and the server's ciphertext sums."""


@dataclass(frozen=True)
class _Wave:
    """One message type sent to many parties: its config and the sealed records it names."""

    message_type: str
    config: ConfigRecord
    records: dict[str, ArrayRecord]
    digests: dict[str, str]


@dataclass
class _State:
    node_party: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    enc_stats: ArrayRecord | None = None
    enc_global: ArrayRecord | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    held: dict[int, dict[str, str]] = field(default_factory=dict)
    """Per node, the digest of each sealed record it confirmed holding."""


class EncryptedFedAvg(Strategy):
    """Federated averaging over CKKS ciphertexts, with encrypted statistics and evaluation.

    Parameters
    ----------
    config
        The validated run configuration.
    summer
        Adds sealed records; built from the public CKKS context (or the insecure plaintext
        comparison mode, which must be asked for explicitly).
    progress
        Where round events go for the coordinator's live display.
    checkpoints
        Where the encrypted state is saved after every round, for ``--resume``.
    """

    def __init__(
        self,
        *,
        config: FederationConfig,
        summer: VectorAggregation,
        progress: ProgressLog,
        checkpoints: CheckpointStore | None = None,
    ) -> None:
        self.config = config
        self.summer = summer
        self.progress = progress
        self.checkpoints = checkpoints
        self._state = _State()
        self._last_bytes_up = 0.0
        self._bytes_down: dict[int, int] = {}
        self._sum_seconds = 0.0

    @property
    def history(self) -> list[dict[str, Any]]:
        """Public per-round outcomes so far (party names, AUC/KS, timings, bytes)."""
        return list(self._state.history)

    # ------------------------------------------------------------------ Strategy API

    def summary(self) -> None:
        """Log the strategy's configuration (never keys or data)."""
        mode = "PLAINTEXT (INSECURE, comparison only)" if self.config.plaintext else "CKKS"
        log.info(
            "EncryptedFedAvg: %s, rounds=%d, model=%s, min-parties=%d, fraction=%.2f",
            mode,
            self.config.rounds,
            self.config.model,
            self.config.min_parties,
            self.config.fraction,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the encrypted global model and statistics to the sampled parties."""
        nodes = self._sample(grid, fraction=self.config.fraction)
        self._train_wave = self._wave(proto.MSG_TRAIN, config, server_round, enc_global=arrays)
        return [self._wave_message(self._train_wave, node) for node in nodes]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Sum the parties' weighted encrypted updates into the next encrypted global model."""
        good = self._accept(replies, phase=f"round {server_round} train")
        self._require_quorum(good, phase=f"round {server_round} train")
        records = [reply.content.array_records[proto.ENC_UPDATE] for reply in good]
        self._last_bytes_up = sum(r.count_bytes() for r in records) / len(records)
        total = self._sum(records)
        return total, MetricRecord({proto.METRIC_PARTIES: len(good)})

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Ask every live party to score its local test split with the global model."""
        nodes = self._sample(grid, fraction=1.0)
        self._evaluate_wave = self._wave(
            proto.MSG_EVALUATE, config, server_round, enc_global=arrays
        )
        return [self._wave_message(self._evaluate_wave, node) for node in nodes]

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Sum the encrypted score histograms; return them for one party to decrypt."""
        good = self._accept(replies, phase=f"round {server_round} evaluate")
        self._require_quorum(good, phase=f"round {server_round} evaluate")
        self._enc_hist = self._sum([reply.content.array_records[proto.ENC_HIST] for reply in good])
        self._eval_parties = [self._state.node_party[r.metadata.src_node_id] for r in good]
        return MetricRecord({proto.METRIC_PARTIES: len(good)})

    # ------------------------------------------------------------------ the run

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord | None = None,
        num_rounds: int | None = None,
        timeout: float | None = None,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Any = None,
    ) -> Result:
        """Run stats, rounds with evaluation and checkpoints, then the release."""
        del initial_arrays, evaluate_fn  # the initial model is seeded at the parties
        rounds = num_rounds or self.config.rounds
        self.summary()
        first_round = 1
        state = self._state
        resumed = self.checkpoints.latest() if (self.checkpoints and self.config.resume) else None
        self._wait_for_parties(grid)
        if resumed is not None:
            state.enc_stats = resumed.enc_stats
            state.enc_global = resumed.enc_global
            state.history = list(resumed.history)
            first_round = resumed.round + 1
            self.progress.emit("resumed", round=resumed.round)
            self._collect_stats(grid, keep_sum=True)
        else:
            self._collect_stats(grid, keep_sum=False)
        result = Result()
        for rnd in range(first_round, rounds + 1):
            outcome = self._run_round(grid, rnd, train_config, evaluate_config)
            state.history.append(_outcome_dict(outcome))
            result.evaluate_metrics_clientapp[rnd] = MetricRecord(
                {proto.METRIC_AUC: outcome.auc, proto.METRIC_KS: outcome.ks}
            )
            if self.checkpoints is not None:
                assert state.enc_stats is not None and state.enc_global is not None
                self.checkpoints.save(
                    Checkpoint(
                        round=rnd,
                        enc_stats=state.enc_stats,
                        enc_global=state.enc_global,
                        history=state.history,
                    )
                )
        if state.enc_global is None:
            raise FederationError("no round completed; nothing to release")
        result.arrays = state.enc_global
        release = self._release(grid, rounds)
        self.progress.emit("released", **release)
        return result

    # ------------------------------------------------------------------ phases

    def _wait_for_parties(self, grid: Grid) -> None:
        deadline = time.monotonic() + self.config.round_timeout
        while True:
            nodes = list(grid.get_node_ids())
            if len(nodes) >= self.config.min_parties:
                return
            if time.monotonic() > deadline:
                raise FederationError(
                    f"only {len(nodes)} parties connected within {self.config.round_timeout:.0f}s; "
                    f"min-parties is {self.config.min_parties}"
                )
            self.progress.emit("waiting", connected=len(nodes), needed=self.config.min_parties)
            time.sleep(1.0)

    def _collect_stats(self, grid: Grid, *, keep_sum: bool) -> None:
        """Phase 1: encrypted feature statistics; also learns which node is which party."""
        nodes = list(grid.get_node_ids())
        content = RecordDict({proto.CONFIG: self._config_record(0)})
        messages = [self._message(content, node, proto.MSG_STATS) for node in nodes]
        replies = self._exchange(grid, messages)
        good = self._accept(replies, phase="statistics")
        self._require_quorum(good, phase="statistics")
        if not keep_sum:
            self._state.enc_stats = self._sum(
                [reply.content.array_records[proto.ENC_STATS] for reply in good]
            )
        self.progress.emit(
            "stats",
            parties=sorted(self._state.node_party.values()),
            refused=sorted(self._state.refused.values()),
        )

    def _run_round(
        self,
        grid: Grid,
        rnd: int,
        train_config: ConfigRecord | None,
        evaluate_config: ConfigRecord | None,
    ) -> RoundOutcome:
        started = time.monotonic()
        state = self._state
        self._bytes_down = {}
        self._sum_seconds = 0.0
        phases: dict[str, float] = {}
        self.progress.emit("round-start", round=rnd, rounds=self.config.rounds)
        enc_global = state.enc_global if state.enc_global is not None else ArrayRecord()
        train_msgs = list(
            self.configure_train(rnd, enc_global, train_config or ConfigRecord(), grid)
        )
        sent_to = [m.metadata.dst_node_id for m in train_msgs]
        mark = time.monotonic()
        replies = self._deliver(grid, train_msgs, self._train_wave)
        phases["train"] = time.monotonic() - mark
        answered = {r.metadata.src_node_id for r in replies if not r.has_error()}
        dropped = [self._party_name(n) for n in sent_to if n not in answered]
        new_global, _ = self.aggregate_train(rnd, replies)
        assert new_global is not None
        state.enc_global = new_global
        train_parties = sorted(self._party_name(n) for n in answered)

        eval_msgs = self.configure_evaluate(
            rnd, new_global, evaluate_config or ConfigRecord(), grid
        )
        mark = time.monotonic()
        eval_replies = self._deliver(grid, list(eval_msgs), self._evaluate_wave)
        phases["evaluate"] = time.monotonic() - mark
        self.aggregate_evaluate(rnd, eval_replies)
        mark = time.monotonic()
        auc, ks = self._decrypt_metrics(grid)
        phases["metrics"] = time.monotonic() - mark
        phases["server_sums"] = self._sum_seconds
        outcome = RoundOutcome(
            round=rnd,
            train_parties=train_parties,
            eval_parties=sorted(self._eval_parties),
            dropped=sorted(dropped),
            auc=auc,
            ks=ks,
            seconds=time.monotonic() - started,
            bytes_up_per_party=self._last_bytes_up,
            bytes_down_per_party=(
                sum(self._bytes_down.values()) / len(self._bytes_down) if self._bytes_down else 0.0
            ),
            phase_seconds=phases,
        )
        if dropped:
            log.warning("round %d: parties dropped or failed: %s", rnd, ", ".join(dropped))
        self.progress.emit("round", **_outcome_dict(outcome))
        return outcome

    def _decrypt_metrics(self, grid: Grid) -> tuple[float, float]:
        """Ask one party to decrypt the pooled histograms; only AUC and KS come back."""
        node = self._pick_party_node(grid)
        content = RecordDict({proto.ENC_HIST: self._enc_hist, proto.CONFIG: self._config_record(0)})
        replies = self._exchange(grid, [self._message(content, node, proto.MSG_METRICS)])
        good = self._accept(replies, phase="metrics")
        if not good:
            raise FederationError("no party answered the metrics query")
        metrics = good[0].content.metric_records[proto.METRICS]
        return float(metrics[proto.METRIC_AUC]), float(metrics[proto.METRIC_KS])  # type: ignore[arg-type]

    def _release(self, grid: Grid, rounds: int) -> dict[str, Any]:
        """The designated party decrypts the final model and writes the signed artifact."""
        state = self._state
        target = self.config.release_party
        live = set(grid.get_node_ids())
        nodes = [n for n, p in state.node_party.items() if p == target and n in live]
        if not nodes:
            raise FederationError(
                f"release-party {target!r} is not connected; connected parties: "
                f"{sorted(state.node_party.values())}"
            )
        assert state.enc_global is not None
        cfg = ConfigRecord(
            {
                proto.CFG_HISTORY: json.dumps(state.history),
                proto.CFG_PARTIES: json.dumps(sorted(set(state.node_party.values()))),
            }
        )
        wave = self._wave(proto.MSG_RELEASE, cfg, rounds, enc_global=state.enc_global)
        replies = self._deliver(grid, [self._wave_message(wave, nodes[0])], wave)
        good = self._accept(replies, phase="release")
        if not good:
            raise FederationError(f"release at {target!r} failed: {self._last_errors}")
        answer = good[0].content.config_records[proto.CONFIG]
        return {"party": target, "model_id": str(answer[proto.CFG_MODEL_ID])}

    # ------------------------------------------------------------------ helpers

    def _sum(self, records: list[ArrayRecord]) -> ArrayRecord:
        mark = time.monotonic()
        total = self.summer.sum_records(records, min_parties=self.config.min_parties)
        self._sum_seconds += time.monotonic() - mark
        return total

    def _config_record(self, rnd: int) -> ConfigRecord:
        return ConfigRecord({proto.CFG_ROUND: rnd, proto.CFG_RUN_ID: self.config.run_id})

    def _wave(
        self, message_type: str, config: ConfigRecord, rnd: int, *, enc_global: ArrayRecord
    ) -> _Wave:
        assert self._state.enc_stats is not None
        cfg = self._config_record(rnd)
        for key, value in config.items():
            cfg[key] = value
        records = {proto.ENC_STATS: self._state.enc_stats}
        if len(enc_global) > 0:
            records[proto.ENC_GLOBAL] = enc_global
        return _Wave(message_type, cfg, records, record_cache.digests_of(records))

    def _wave_message(self, wave: _Wave, node: int, *, full: bool = False) -> Message:
        """The wave's message to ``node``, without the records it already holds unless ``full``."""
        held = {} if full else self._state.held.get(node, {})
        content = record_cache.attach(wave.config, wave.records, wave.digests, held=held)
        self._bytes_down[node] = self._bytes_down.get(node, 0) + sum(
            r.count_bytes() for r in content.array_records.values()
        )
        return self._message(content, node, wave.message_type)

    def _deliver(self, grid: Grid, messages: list[Message], wave: _Wave) -> list[Message]:
        """Send a wave; resend in full to parties that lost their cache; note who holds what."""
        replies = self._exchange(grid, messages)
        resend = [
            r.metadata.src_node_id
            for r in replies
            if r.has_error() and record_cache.RESEND_MARK in (r.error.reason or "")
        ]
        if resend:
            names = sorted(self._party_name(n) for n in resend)
            log.info("%s: resending full records to %s", wave.message_type, ", ".join(names))
            # A restarted SuperNode keeps its node id but not its cache.
            self.progress.emit("resent", phase=wave.message_type, parties=names)
            for node in resend:
                self._state.held.pop(node, None)
            replies = [r for r in replies if r.metadata.src_node_id not in resend]
            retry = [self._wave_message(wave, node, full=True) for node in resend]
            replies += self._exchange(grid, retry)
        for reply in replies:
            if not reply.has_error():
                self._state.held.setdefault(reply.metadata.src_node_id, {}).update(wave.digests)
        return replies

    def _exchange(self, grid: Grid, messages: list[Message]) -> list[Message]:
        """Push a wave and pull its replies until all are in or ``round_timeout`` passes.

        Flower's ``send_and_receive`` sleeps a fixed interval between pulls (0.1 s in the
        simulation runtime, 3 s in deployment), so every wave lasted a whole number of
        intervals. Pulling every 20 ms for the first two seconds returns soon after the last
        reply of a quick wave; after that, a slow one (a cold ClientApp process) is pulled four
        times a second.
        """
        waiting = {mid for mid in grid.push_messages(messages) if mid is not None}
        started = time.monotonic()
        deadline = started + self.config.round_timeout
        replies: list[Message] = []
        while waiting:
            got = list(grid.pull_messages(list(waiting)))
            replies += got
            waiting -= {reply.metadata.reply_to_message_id for reply in got}
            now = time.monotonic()
            if not waiting or now >= deadline:
                break
            interval = _QUICK_PULL if now - started < _QUICK_PERIOD else _SLOW_PULL
            time.sleep(min(interval, deadline - now))
        return replies

    @staticmethod
    def _message(content: RecordDict, node: int, message_type: str) -> Message:
        return Message(content=content, message_type=message_type, dst_node_id=node)

    def _sample(self, grid: Grid, *, fraction: float) -> list[int]:
        """Live parties minus the ones that refused; a fraction is taken deterministically."""
        nodes = sorted(n for n in grid.get_node_ids() if n not in self._state.refused)
        if fraction >= 1.0:
            return nodes
        count = max(self.config.min_parties, round(len(nodes) * fraction))
        # Rotate through parties by round so every party trains over time, without server RNG.
        offset = len(self._state.history) * count
        return [nodes[(offset + i) % len(nodes)] for i in range(min(count, len(nodes)))]

    def _accept(self, replies: Iterable[Message], *, phase: str) -> list[Message]:
        """Keep good replies; record refusals (bad data) and failures with their reasons."""
        good: list[Message] = []
        errors: list[str] = []
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                raw = reply.error.reason or ""
                reason = _short_reason(raw)
                errors.append(reason)
                if proto.REFUSAL_MARK in raw:
                    self._state.refused[node] = reason
                    self.progress.emit("refused", phase=phase, reason=reason)
                else:
                    self.progress.emit("party-error", phase=phase, reason=reason)
                log.warning("%s: a party failed: %s", phase, reason)
                continue
            party = reply.content.config_records.get(proto.CONFIG, ConfigRecord()).get(
                proto.CFG_PARTY
            )
            if isinstance(party, str):
                self._state.node_party[node] = party
            good.append(reply)
        self._last_errors = errors
        return good

    def _require_quorum(self, good: Sequence[Message], *, phase: str) -> None:
        if len(good) < self.config.min_parties:
            raise FederationError(
                f"{phase}: only {len(good)} parties answered; min-parties is "
                f"{self.config.min_parties}. Failures: {self._last_errors or 'none (timeouts)'}"
            )

    def _party_name(self, node: int) -> str:
        return self._state.node_party.get(node, f"node-{node}")

    def _pick_party_node(self, grid: Grid) -> int:
        live = set(grid.get_node_ids())
        preferred = [
            n
            for n, p in self._state.node_party.items()
            if p == self.config.release_party and n in live
        ]
        others = sorted(n for n in self._state.node_party if n in live)
        if not preferred and not others:
            raise FederationError("no party is connected to decrypt the round's metrics")
        return (preferred or others)[0]

    _enc_hist: ArrayRecord
    _eval_parties: list[str]
    _last_errors: list[str]
    _train_wave: _Wave
    _evaluate_wave: _Wave


def _short_reason(reason: str) -> str:
    """The party's own message, without the runtime's traceback decoration."""
    marker = proto.REFUSAL_MARK
    if marker in reason:
        tail = reason[reason.index(marker) :]
        return tail.split("\n\n")[0].strip().strip("'>\"")
    lines = [line for line in reason.strip().splitlines() if line.strip()]
    return lines[-1].strip().strip("'>\"") if lines else "unknown error"


def _outcome_dict(outcome: RoundOutcome) -> dict[str, Any]:
    return {
        "round": outcome.round,
        "train_parties": outcome.train_parties,
        "eval_parties": outcome.eval_parties,
        "dropped": outcome.dropped,
        "auc": outcome.auc,
        "ks": outcome.ks,
        "seconds": outcome.seconds,
        "bytes_up_per_party": outcome.bytes_up_per_party,
        "bytes_down_per_party": outcome.bytes_down_per_party,
        "phase_seconds": outcome.phase_seconds,
    }
