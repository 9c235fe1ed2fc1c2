"""The encrypted federated-averaging strategy: sums CKKS ciphertexts it can never read.

The protocol of one federated run, all driven from :meth:`EncryptedFedAvg.start`:

1. ``query.stats`` (the statistics hook, before round 1): every connected party validates its
   data, then sends its additive feature statistics, encrypted. The server sums them. Parties
   whose data fails validation refuse with the schema error; they are excluded and the error is
   surfaced in the progress log. A model kind that needs more (a scorecard's WOE second
   moments, :func:`fedrisk.ml.kinds.statistics_passes`) asks again, naming the encrypted sum so
   far; each answer holds the party's earlier statistics plus the new ones, so the last sum is
   the run's one statistics sum.
2. For each round: ``train`` names the encrypted statistics sum and the encrypted global model
   (absent in round 1, when every party starts from the same seeded initialisation). Each party
   decrypts, fits the same preprocessor, trains locally, and answers ``n * weights ++ [n]``
   encrypted. The server sums the answers into the next encrypted global model.
3. ``evaluate``: each party scores its local test split with the global model and answers
   per-class score histograms, encrypted. The server sums them; ``query.metrics`` asks one party
   to decrypt the pooled histograms and report global AUC and KS.
4. ``query.release`` (the release hook, after the last round): the designated party decrypts the
   final model and writes a signed artifact.

Messages travel in waves (:mod:`server.coordinator.waves`): sealed records are named by digest
and sent to a party only when it does not hold them yet, so the statistics sum reaches a party
once per run and each global model once.

Each phase takes the run's state and returns the next one (:class:`RunState`, :class:`Roster`,
:class:`RoundOutcome`, :class:`Release`); nothing is carried between phases on the strategy.

Notes
-----
The server holds the CKKS public context only. It never sees a plaintext update, aggregate,
statistic or per-party sample count: parties weight their own updates and the count travels as
one more encrypted slot. Dropped or failing parties are tolerated while at least ``min_parties``
answer; below that the run fails with the reason.

Flower's ``Strategy.start`` cannot run this protocol: it always counts rounds from 1 (a resumed
run continues at round k + 1), pulls replies through ``Grid.send_and_receive`` (a fixed 3 s
interval in deployment, and no place to resend a wave to a party that lost its records), gives
``aggregate_evaluate`` no grid for the metrics query, and has no phase before round 1 or after
the last. So :meth:`EncryptedFedAvg.start` is a small loop of its own that keeps Flower's
meaning of ``timeout``: the longest wait for the replies to one message wave.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedrisk.errors import FedRiskError
from fedrisk.federation import protocol as proto
from fedrisk.federation.run_config import FederationConfig
from fedrisk.ml.kinds import statistics_passes
from secure_agg.aggregation import VectorAggregation
from server.coordinator.checkpoints import Checkpoint, CheckpointStore
from server.coordinator.progress import ProgressLog
from server.coordinator.waves import (
    Clock,
    Delivery,
    Holdings,
    SystemClock,
    Wave,
    deliver,
    exchange,
)

log = logging.getLogger(__name__)

WAIT_FOR_PARTIES_POLL = 1.0
"""Seconds between checks for connected parties before the run starts."""


class FederationError(FedRiskError, RuntimeError):
    """The run cannot go on: too few parties answered, or the release failed."""


@dataclass(frozen=True)
class Roster:
    """Who is who: the party name each node answered with, and the nodes that refused."""

    parties: Mapping[int, str] = field(default_factory=dict)
    refused: Mapping[int, str] = field(default_factory=dict)
    """Nodes whose data failed validation, with the reason; excluded for the rest of the run."""

    def name(self, node: int) -> str:
        """The node's party name, or ``node-<id>`` if it never answered."""
        return self.parties.get(node, f"node-{node}")


@dataclass(frozen=True)
class Answers:
    """One wave's replies sorted out: the good ones, every failure's reason, the new roster."""

    good: tuple[Message, ...]
    errors: tuple[str, ...]
    roster: Roster

    @property
    def nodes(self) -> list[int]:
        """The nodes that answered well."""
        return [reply.metadata.src_node_id for reply in self.good]

    def records(self, key: str) -> list[ArrayRecord]:
        """The array record ``key`` of every good reply."""
        return [reply.content.array_records[key] for reply in self.good]


@dataclass(frozen=True)
class RunState:
    """Everything the run carries from one phase to the next; each phase returns a new one."""

    round: int
    """The last completed round: 0 before round 1, the checkpoint's round when resumed."""
    enc_stats: ArrayRecord
    enc_global: ArrayRecord | None
    history: tuple[dict[str, Any], ...]
    roster: Roster
    held: Holdings = field(default_factory=dict)


@dataclass(frozen=True)
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
    phase_seconds: dict[str, float]
    """Where the round's time went: each message wave, and the server's ciphertext sums."""

    def as_dict(self) -> dict[str, Any]:
        """The public record of the round: progress event, history entry, lineage."""
        return asdict(self)


@dataclass(frozen=True)
class Release:
    """Who released the final model, under which id."""

    party: str
    model_id: str


@dataclass(frozen=True)
class FederationResult:
    """A completed run: the final encrypted model, the public history and the release."""

    enc_global: ArrayRecord
    history: tuple[dict[str, Any], ...]
    metrics: Mapping[int, MetricRecord]
    """AUC and KS of each round this attempt ran (a resumed attempt starts after its checkpoint)."""
    release: Release


@dataclass(frozen=True)
class _SummedWave:
    """One wave of a round, its good answers summed, and what it cost."""

    answers: Answers
    total: ArrayRecord
    held: Holdings
    bytes_down: Mapping[int, int]
    wave_seconds: float
    sum_seconds: float


class EncryptedFedAvg:
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
    clock
        What waits on the parties: the system clock, or a virtual one in tests.
    """

    def __init__(
        self,
        *,
        config: FederationConfig,
        summer: VectorAggregation,
        progress: ProgressLog,
        checkpoints: CheckpointStore | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.summer = summer
        self.progress = progress
        self.checkpoints = checkpoints
        self.clock: Clock = clock or SystemClock()

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

    # ------------------------------------------------------------------ the run

    def start(
        self,
        grid: Grid,
        *,
        num_rounds: int | None = None,
        timeout: float = 3600.0,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
    ) -> FederationResult:
        """Run the statistics phase, the rounds (checkpointed), then the release.

        Parameters
        ----------
        grid
            Flower's grid to the parties' nodes.
        num_rounds
            Rounds in the whole run (default: the run config's); a resumed run starts after
            its checkpoint's round.
        timeout
            Seconds to wait for the replies to one message wave, as in Flower's
            ``Strategy.start``; also the longest wait for ``min_parties`` nodes to connect.
        train_config, evaluate_config
            Extra entries for every ``train`` / ``evaluate`` message's config.

        Raises
        ------
        FederationError
            Fewer than ``min_parties`` parties connected or answered a phase, or the release
            failed.
        """
        rounds = num_rounds or self.config.rounds
        self.summary()
        resumed = self.checkpoints.latest() if (self.checkpoints and self.config.resume) else None
        self._wait_for_parties(grid, timeout=timeout)
        if resumed is not None:
            self.progress.emit("resumed", round=resumed.round)
        state = self.collect_statistics(grid, timeout=timeout, resumed=resumed)
        metrics: dict[int, MetricRecord] = {}
        for _ in range(state.round, rounds):
            state, outcome = self.run_round(
                grid,
                state,
                rounds=rounds,
                timeout=timeout,
                train_config=train_config or ConfigRecord(),
                evaluate_config=evaluate_config or ConfigRecord(),
            )
            metrics[outcome.round] = MetricRecord(
                {proto.METRIC_AUC: outcome.auc, proto.METRIC_KS: outcome.ks}
            )
            self._save_checkpoint(state)
        release = self.release(grid, state, timeout=timeout)
        self.progress.emit("released", party=release.party, model_id=release.model_id)
        assert state.enc_global is not None  # release refuses a run without a model
        return FederationResult(
            enc_global=state.enc_global, history=state.history, metrics=metrics, release=release
        )

    # ------------------------------------------------------------------ hooks

    def collect_statistics(
        self, grid: Grid, *, timeout: float, resumed: Checkpoint | None
    ) -> RunState:
        """Before round 1: encrypted feature statistics; also learns which node is which party.

        A resumed run asks again to learn the roster, and keeps the checkpoint's sum: the
        statistics must be the ones its global model was trained with.
        """
        nodes = list(grid.get_node_ids())
        content = RecordDict({proto.CONFIG: self._config_record(0)})
        messages = [_message(content, node, proto.MSG_STATS) for node in nodes]
        replies = exchange(grid, messages, timeout=timeout, clock=self.clock)
        answers = self._accept(replies, Roster(), phase="statistics")
        self._require_quorum(answers, phase="statistics")
        if resumed is None:
            enc_stats, _ = self._sum(answers.records(proto.ENC_STATS))
            state = RunState(
                round=0, enc_stats=enc_stats, enc_global=None, history=(), roster=answers.roster
            )
            for stats_pass in range(2, statistics_passes(self.config.model) + 1):
                state = self._statistics_pass(grid, state, stats_pass, timeout=timeout)
        else:
            state = RunState(
                round=resumed.round,
                enc_stats=resumed.enc_stats,
                enc_global=resumed.enc_global,
                history=tuple(resumed.history),
                roster=answers.roster,
            )
        self.progress.emit(
            "stats",
            parties=sorted(state.roster.parties.values()),
            refused=sorted(state.roster.refused.values()),
        )
        return state

    def _statistics_pass(
        self, grid: Grid, state: RunState, stats_pass: int, *, timeout: float
    ) -> RunState:
        """Ask the parties again, naming the statistics sum so far; the new sum replaces it."""
        phase = f"statistics pass {stats_pass}"
        summed = self._summed_wave(
            grid,
            state,
            self._wave(proto.MSG_STATS, state, 0, ConfigRecord(), enc_global=None),
            self._sample(grid, state, fraction=1.0),
            key=proto.ENC_STATS,
            phase=phase,
            timeout=timeout,
        )
        return replace(
            state, enc_stats=summed.total, roster=summed.answers.roster, held=summed.held
        )

    def run_round(
        self,
        grid: Grid,
        state: RunState,
        *,
        rounds: int,
        timeout: float,
        train_config: ConfigRecord,
        evaluate_config: ConfigRecord,
    ) -> tuple[RunState, RoundOutcome]:
        """Round ``state.round + 1``: train, sum, evaluate, sum, decrypt the metrics at a party."""
        rnd = state.round + 1
        started = self.clock.monotonic()
        self.progress.emit("round-start", round=rnd, rounds=rounds)

        sent_to = self._sample(grid, state, fraction=self.config.fraction)
        train = self._summed_wave(
            grid,
            state,
            self._wave(proto.MSG_TRAIN, state, rnd, train_config, enc_global=state.enc_global),
            sent_to,
            key=proto.ENC_UPDATE,
            phase=f"round {rnd} train",
            timeout=timeout,
        )
        answered = set(train.answers.nodes)
        dropped = sorted(state.roster.name(n) for n in sent_to if n not in answered)
        state = replace(state, enc_global=train.total, roster=train.answers.roster, held=train.held)

        evaluation = self._summed_wave(
            grid,
            state,
            self._wave(proto.MSG_EVALUATE, state, rnd, evaluate_config, enc_global=train.total),
            self._sample(grid, state, fraction=1.0),
            key=proto.ENC_HIST,
            phase=f"round {rnd} evaluate",
            timeout=timeout,
        )
        state = replace(state, roster=evaluation.answers.roster, held=evaluation.held)

        mark = self.clock.monotonic()
        (auc, ks), roster = self._decrypt_metrics(
            grid, state.roster, evaluation.total, timeout=timeout
        )
        metrics_seconds = self.clock.monotonic() - mark
        updates = train.answers.records(proto.ENC_UPDATE)
        bytes_down = {
            n: train.bytes_down.get(n, 0) + evaluation.bytes_down.get(n, 0)
            for n in {*train.bytes_down, *evaluation.bytes_down}
        }
        outcome = RoundOutcome(
            round=rnd,
            train_parties=sorted(state.roster.name(n) for n in answered),
            eval_parties=sorted(state.roster.name(n) for n in evaluation.answers.nodes),
            dropped=dropped,
            auc=auc,
            ks=ks,
            seconds=self.clock.monotonic() - started,
            bytes_up_per_party=sum(r.count_bytes() for r in updates) / len(updates),
            bytes_down_per_party=(
                sum(bytes_down.values()) / len(bytes_down) if bytes_down else 0.0
            ),
            phase_seconds={
                "train": train.wave_seconds,
                "evaluate": evaluation.wave_seconds,
                "metrics": metrics_seconds,
                "server_sums": train.sum_seconds + evaluation.sum_seconds,
            },
        )
        if dropped:
            log.warning("round %d: parties dropped or failed: %s", rnd, ", ".join(dropped))
        self.progress.emit("round", **outcome.as_dict())
        state = replace(
            state, round=rnd, roster=roster, history=(*state.history, outcome.as_dict())
        )
        return state, outcome

    def release(self, grid: Grid, state: RunState, *, timeout: float) -> Release:
        """After the last round: the designated party decrypts the final model and writes the
        signed artifact."""
        if state.enc_global is None:
            raise FederationError("no round completed; nothing to release")
        target = self.config.release_party
        live = set(grid.get_node_ids())
        nodes = [n for n, p in state.roster.parties.items() if p == target and n in live]
        if not nodes:
            raise FederationError(
                f"release-party {target!r} is not connected; connected parties: "
                f"{sorted(state.roster.parties.values())}"
            )
        cfg = ConfigRecord(
            {
                proto.CFG_HISTORY: json.dumps(list(state.history)),
                proto.CFG_PARTIES: json.dumps(sorted(set(state.roster.parties.values()))),
            }
        )
        wave = self._wave(proto.MSG_RELEASE, state, state.round, cfg, enc_global=state.enc_global)
        delivery = self._deliver(grid, wave, nodes[:1], state, timeout=timeout)
        answers = self._accept(delivery.replies, state.roster, phase="release")
        if not answers.good:
            raise FederationError(f"release at {target!r} failed: {list(answers.errors)}")
        answer = answers.good[0].content.config_records[proto.CONFIG]
        return Release(party=target, model_id=str(answer[proto.CFG_MODEL_ID]))

    # ------------------------------------------------------------------ phases

    def _wait_for_parties(self, grid: Grid, *, timeout: float) -> None:
        deadline = self.clock.monotonic() + timeout
        while True:
            nodes = list(grid.get_node_ids())
            if len(nodes) >= self.config.min_parties:
                return
            if self.clock.monotonic() > deadline:
                raise FederationError(
                    f"only {len(nodes)} parties connected within {timeout:.0f}s; "
                    f"min-parties is {self.config.min_parties}"
                )
            self.progress.emit("waiting", connected=len(nodes), needed=self.config.min_parties)
            self.clock.sleep(WAIT_FOR_PARTIES_POLL)

    def _summed_wave(
        self,
        grid: Grid,
        state: RunState,
        wave: Wave,
        nodes: Sequence[int],
        *,
        key: str,
        phase: str,
        timeout: float,
    ) -> _SummedWave:
        """Deliver ``wave``, require a quorum of good answers, and sum their record ``key``."""
        mark = self.clock.monotonic()
        delivery = self._deliver(grid, wave, nodes, state, timeout=timeout)
        wave_seconds = self.clock.monotonic() - mark
        answers = self._accept(delivery.replies, state.roster, phase=phase)
        self._require_quorum(answers, phase=phase)
        total, sum_seconds = self._sum(answers.records(key))
        return _SummedWave(
            answers=answers,
            total=total,
            held=delivery.held,
            bytes_down=delivery.bytes_down,
            wave_seconds=wave_seconds,
            sum_seconds=sum_seconds,
        )

    def _decrypt_metrics(
        self, grid: Grid, roster: Roster, enc_hist: ArrayRecord, *, timeout: float
    ) -> tuple[tuple[float, float], Roster]:
        """Ask one party to decrypt the pooled histograms; only AUC and KS come back."""
        node = self._pick_party_node(grid, roster)
        content = RecordDict({proto.ENC_HIST: enc_hist, proto.CONFIG: self._config_record(0)})
        replies = exchange(
            grid, [_message(content, node, proto.MSG_METRICS)], timeout=timeout, clock=self.clock
        )
        answers = self._accept(replies, roster, phase="metrics")
        if not answers.good:
            raise FederationError("no party answered the metrics query")
        metrics = answers.good[0].content.metric_records[proto.METRICS]
        auc, ks = metrics[proto.METRIC_AUC], metrics[proto.METRIC_KS]
        return (float(auc), float(ks)), answers.roster  # type: ignore[arg-type]

    def _save_checkpoint(self, state: RunState) -> None:
        if self.checkpoints is None:
            return
        assert state.enc_global is not None  # saved after a completed round only
        self.checkpoints.save(
            Checkpoint(
                round=state.round,
                enc_stats=state.enc_stats,
                enc_global=state.enc_global,
                history=list(state.history),
            )
        )

    # ------------------------------------------------------------------ helpers

    def _sum(self, records: list[ArrayRecord]) -> tuple[ArrayRecord, float]:
        """The sum of ``records`` and the seconds it took."""
        mark = self.clock.monotonic()
        total = self.summer.sum_records(records, min_parties=self.config.min_parties)
        return total, self.clock.monotonic() - mark

    def _config_record(self, rnd: int) -> ConfigRecord:
        return ConfigRecord({proto.CFG_ROUND: rnd, proto.CFG_RUN_ID: self.config.run_id})

    def _wave(
        self,
        message_type: str,
        state: RunState,
        rnd: int,
        extra: ConfigRecord,
        *,
        enc_global: ArrayRecord | None,
    ) -> Wave:
        """A wave naming the statistics sum and, from round 2 on, the global model."""
        cfg = self._config_record(rnd)
        for key, value in extra.items():
            cfg[key] = value
        records = {proto.ENC_STATS: state.enc_stats}
        if enc_global is not None and len(enc_global) > 0:
            records[proto.ENC_GLOBAL] = enc_global
        return Wave.of(message_type, cfg, records)

    def _deliver(
        self, grid: Grid, wave: Wave, nodes: Sequence[int], state: RunState, *, timeout: float
    ) -> Delivery:
        """Deliver ``wave`` from ``state``'s holdings; announce full resends in the progress log."""

        def announce(resend: list[int]) -> None:
            names = sorted(state.roster.name(n) for n in resend)
            log.info("%s: resending full records to %s", wave.message_type, ", ".join(names))
            self.progress.emit("resent", phase=wave.message_type, parties=names)

        return deliver(
            grid,
            wave,
            nodes,
            held=state.held,
            timeout=timeout,
            clock=self.clock,
            on_resend=announce,
        )

    def _sample(self, grid: Grid, state: RunState, *, fraction: float) -> list[int]:
        """Live parties minus the ones that refused; a fraction is taken deterministically."""
        nodes = sorted(n for n in grid.get_node_ids() if n not in state.roster.refused)
        if fraction >= 1.0:
            return nodes
        count = max(self.config.min_parties, round(len(nodes) * fraction))
        # Rotate through parties by round so every party trains over time, without server RNG.
        offset = len(state.history) * count
        return [nodes[(offset + i) % len(nodes)] for i in range(min(count, len(nodes)))]

    def _accept(self, replies: Iterable[Message], roster: Roster, *, phase: str) -> Answers:
        """Keep good replies; record refusals (bad data) and failures with their reasons."""
        good: list[Message] = []
        errors: list[str] = []
        parties = dict(roster.parties)
        refused = dict(roster.refused)
        for reply in replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                raw = reply.error.reason or ""
                reason = _short_reason(raw)
                errors.append(reason)
                if proto.REFUSAL_MARK in raw:
                    refused[node] = reason
                    self.progress.emit("refused", phase=phase, reason=reason)
                else:
                    self.progress.emit("party-error", phase=phase, reason=reason)
                log.warning("%s: a party failed: %s", phase, reason)
                continue
            party = reply.content.config_records.get(proto.CONFIG, ConfigRecord()).get(
                proto.CFG_PARTY
            )
            if isinstance(party, str):
                parties[node] = party
            good.append(reply)
        return Answers(
            good=tuple(good), errors=tuple(errors), roster=Roster(parties=parties, refused=refused)
        )

    def _require_quorum(self, answers: Answers, *, phase: str) -> None:
        if len(answers.good) < self.config.min_parties:
            raise FederationError(
                f"{phase}: only {len(answers.good)} parties answered; min-parties is "
                f"{self.config.min_parties}. Failures: "
                f"{list(answers.errors) or 'none (timeouts)'}"
            )

    def _pick_party_node(self, grid: Grid, roster: Roster) -> int:
        live = set(grid.get_node_ids())
        preferred = [
            n for n, p in roster.parties.items() if p == self.config.release_party and n in live
        ]
        others = sorted(n for n in roster.parties if n in live)
        if not preferred and not others:
            raise FederationError("no party is connected to decrypt the round's metrics")
        return (preferred or others)[0]


def _message(content: RecordDict, node: int, message_type: str) -> Message:
    return Message(content=content, message_type=message_type, dst_node_id=node)


def _short_reason(reason: str) -> str:
    """The party's own message, without the runtime's traceback decoration."""
    marker = proto.REFUSAL_MARK
    if marker in reason:
        tail = reason[reason.index(marker) :]
        return tail.split("\n\n")[0].strip().strip("'>\"")
    lines = [line for line in reason.strip().splitlines() if line.strip()]
    return lines[-1].strip().strip("'>\"") if lines else "unknown error"
