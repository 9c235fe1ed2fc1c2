"""The encrypted federated-averaging strategy: sums CKKS ciphertexts it can never read.

The protocol of one federated run, all driven from :meth:`EncryptedFedAvg.start`:

1. ``query.stats`` (the statistics hook, before round 1): every connected party validates its
   data, then sends its additive feature statistics, encrypted. The server sums them. Parties
   whose data fails validation refuse with the schema error; they are excluded and the error is
   surfaced in the progress log. A model kind that needs more (a scorecard's WOE second
   moments, :func:`fedrisk.ml.kinds.statistics_passes`) asks again, naming the encrypted sum so
   far; each answer holds the party's earlier statistics plus the new ones, so the last sum is
   the run's one statistics sum.
2. Each round is ONE exchange with every party (the round hook). ``train`` names the encrypted
   statistics sum and the encrypted global model of the previous round (absent in round 1,
   when every party starts from the same seeded initialisation). Each party decrypts, fits the
   same preprocessor, trains locally, and answers ``n * weights ++ [n]`` encrypted; the server
   sums the answers into the next encrypted global model. The same message asks the party to
   evaluate the model it names (the previous round's result): it answers per-class score
   histograms of its test split, encrypted, which the server sums. Parties outside the round's
   sample get an ``evaluate`` message instead. One party, the metrics party, also receives the
   pooled histograms summed in the exchange before, decrypts them and answers only the global
   AUC and KS. So round r's outcome is complete two exchanges after it trained: its model is
   evaluated in round r + 1's exchange and its metrics decrypted in round r + 2's.
3. After the last round (the finish hook): ``evaluate`` of the final model at every party,
   carrying the metrics party's decryption of the round before; then ``query.release`` (the
   release hook): the designated party decrypts the final model and the last pooled
   histograms, and writes a signed artifact with every round's metrics.

Messages travel in waves (:mod:`server.coordinator.waves`): sealed records are named by digest
and sent to a party only when it does not hold them yet, so the statistics sum reaches a party
once per run and each global model once.

Each phase takes the run's state and returns the next one (:class:`RunState`, :class:`Roster`,
:class:`RoundOutcome`, :class:`Release`); nothing is carried between phases on the strategy.
A round's public record, :class:`RoundOutcome`, is emitted (progress ``round`` event, history)
when its metrics are in; until then it is pending in the state and in the checkpoint, with the
pooled histograms awaiting decryption (a ciphertext).

Notes
-----
The server holds the CKKS public context only. It never sees a plaintext update, aggregate,
statistic or per-party sample count: parties weight their own updates and the count travels as
one more encrypted slot. Folding evaluation and metrics into the training exchange changes no
one's view: every party still receives the statistics sum and global models it received before,
only the metrics party receives pooled histograms, and only AUC and KS come back in the clear.
Dropped or failing parties are tolerated while at least ``min_parties`` answer; below that the
run fails with the reason. A metrics party that fails to answer is replaced by a separate
``query.metrics`` to another live party, as before the fold.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedrisk.errors import FedRiskError
from fedrisk.federation import protocol as proto
from fedrisk.federation.run_config import FederationConfig
from fedrisk.ml.kinds import statistics_passes
from secure_agg.aggregation import VectorAggregation
from secure_agg.masking import MaskPlan
from server.coordinator.checkpoints import Checkpoint, CheckpointStore
from server.coordinator.progress import ProgressLog
from server.coordinator.unmasking import ExchangeMasks, UnmaskError, masked_sum
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
    pending: tuple[dict[str, Any], ...] = ()
    """Trained rounds whose metrics are not in yet, oldest first, as public partial records:
    at most one evaluated (awaiting the decryption of ``enc_pooled_hist``) and one not yet."""
    enc_pooled_hist: ArrayRecord | None = None
    """The pooled histograms of the first pending round, once evaluated; awaiting decryption."""


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
    metrics: tuple[float, float] | None = field(default=None, compare=False)
    """AUC and KS of the last round, decrypted by the release party with the model."""


@dataclass(frozen=True)
class FederationResult:
    """A completed run: the final encrypted model, the public history and the release."""

    enc_global: ArrayRecord
    history: tuple[dict[str, Any], ...]
    metrics: Mapping[int, MetricRecord]
    """AUC and KS of each round whose metrics came in during this attempt (a resumed attempt
    also completes the rounds its checkpoint left pending)."""
    release: Release


@dataclass(frozen=True)
class _Exchange:
    """One exchange's replies sorted out, and what it cost."""

    answers: Answers
    held: Holdings
    bytes_down: Mapping[int, int]
    seconds: float
    metrics_node: int | None
    """The node sent the pooled histograms to decrypt, if any."""
    masks: ExchangeMasks | None = None
    """The exchange's mask plan (masked runs), and its dropout recovery once needed."""


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
        self.keep_round_one: Callable[[Mapping[str, Message]], None] | None = None
        """Set only by the collusion benchmark: what a curious coordinator would keep."""

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
        """Run the statistics phase, the rounds (checkpointed), the final evaluation, the release.

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

        def completed(outcomes: Sequence[RoundOutcome]) -> None:
            for outcome in outcomes:
                metrics[outcome.round] = MetricRecord(
                    {proto.METRIC_AUC: outcome.auc, proto.METRIC_KS: outcome.ks}
                )

        for _ in range(state.round, rounds):
            state, outcomes = self.run_round(
                grid,
                state,
                rounds=rounds,
                timeout=timeout,
                train_config=train_config or ConfigRecord(),
                evaluate_config=evaluate_config or ConfigRecord(),
            )
            completed(outcomes)
            self._save_checkpoint(state)
        state, outcomes = self.finish(
            grid, state, timeout=timeout, evaluate_config=evaluate_config or ConfigRecord()
        )
        completed(outcomes)
        self._save_checkpoint(state)
        mark = self.clock.monotonic()
        release = self.release(grid, state, timeout=timeout)
        if state.pending:
            if release.metrics is None:
                raise FederationError(
                    f"release at {release.party!r} returned no metrics for round "
                    f"{state.pending[0]['round']}"
                )
            state, outcome = self._complete(
                state, release.metrics, seconds=self.clock.monotonic() - mark
            )
            completed([outcome])
            self._save_checkpoint(state)
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
        # Names are not known yet: the parties mask against every party of the federation.
        # A resumed run masks too, though it keeps its checkpoint's sum: the answers still
        # pass through the coordinator.
        masks = self._masks("stats:1", {proto.PURPOSE_STATS: None})
        content = RecordDict({proto.CONFIG: self._config_record(0, masks=masks)})
        messages = [_message(content, node, proto.MSG_STATS) for node in nodes]
        replies = exchange(grid, messages, timeout=timeout, clock=self.clock)
        answers = self._accept(replies, Roster(), phase="statistics")
        self._require_quorum(answers, phase="statistics")
        if resumed is None:
            enc_stats, _ = self._masked_sum(
                grid, answers, masks, proto.ENC_STATS, proto.PURPOSE_STATS, timeout=timeout
            )
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
                pending=tuple(resumed.pending),
                enc_pooled_hist=resumed.enc_pooled_hist,
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
        nodes = self._sample(grid, state, fraction=1.0)
        masks = self._masks(f"stats:{stats_pass}", {proto.PURPOSE_STATS: self._names(state, nodes)})
        wave = self._wave(proto.MSG_STATS, state, 0, ConfigRecord(), enc_global=None, masks=masks)
        done = self._exchange(
            grid, state, [(wave, nodes)], phase=phase, timeout=timeout, masks=masks
        )
        self._require_quorum(done.answers, phase=phase)
        enc_stats, _ = self._masked_sum(
            grid, done.answers, masks, proto.ENC_STATS, proto.PURPOSE_STATS, timeout=timeout
        )
        return replace(state, enc_stats=enc_stats, roster=done.answers.roster, held=done.held)

    def run_round(
        self,
        grid: Grid,
        state: RunState,
        *,
        rounds: int,
        timeout: float,
        train_config: ConfigRecord,
        evaluate_config: ConfigRecord,
    ) -> tuple[RunState, list[RoundOutcome]]:
        """Round ``state.round + 1`` in one exchange: train on the previous round's model and
        evaluate it, decrypt the metrics of the round before; sum both.

        Returns the new state and the rounds whose metrics came in (their public records).
        """
        rnd = state.round + 1
        started = self.clock.monotonic()
        self.progress.emit("round-start", round=rnd, rounds=rounds)

        sent_to = self._sample(grid, state, fraction=self.config.fraction)
        # The model this round starts from is evaluated with it, unless there is none (round 1
        # starts from the seeded model) or it was already (a checkpoint from before the fold).
        evaluating = _awaits_evaluation(state)
        others = [n for n in self._sample(grid, state, fraction=1.0) if n not in sent_to]
        members: dict[str, list[str] | None] = {proto.PURPOSE_UPDATE: self._names(state, sent_to)}
        if evaluating:
            members[proto.PURPOSE_HIST] = self._names(state, [*sent_to, *others])
        masks = self._masks(f"round:{rnd}", members)
        waves = [
            (
                self._wave(
                    proto.MSG_TRAIN,
                    state,
                    rnd,
                    train_config,
                    enc_global=state.enc_global,
                    evaluate=evaluating,
                    masks=masks,
                ),
                sent_to,
            )
        ]
        if evaluating and others:
            waves.append(
                (
                    self._wave(
                        proto.MSG_EVALUATE,
                        state,
                        rnd,
                        evaluate_config,
                        enc_global=state.enc_global,
                        masks=masks,
                    ),
                    others,
                )
            )
        done = self._exchange(
            grid, state, waves, phase=f"round {rnd}", timeout=timeout, masks=masks
        )
        trained = [r for r in done.answers.good if r.metadata.src_node_id in set(sent_to)]
        train_answers = replace(done.answers, good=tuple(trained))
        self._require_quorum(train_answers, phase=f"round {rnd} train")
        updates = train_answers.records(proto.ENC_UPDATE)
        self._keep_for_attack_demo(rnd, train_answers)
        enc_global, update_seconds = self._masked_sum(
            grid,
            train_answers,
            masks,
            proto.ENC_UPDATE,
            proto.PURPOSE_UPDATE,
            timeout=timeout,
            exchange_answers=done.answers,
        )
        answered = set(train_answers.nodes)
        state = replace(state, roster=done.answers.roster, held=done.held)
        dropped = sorted(state.roster.name(n) for n in sent_to if n not in answered)
        state, outcomes = self._settle(
            grid, state, done, evaluated=rnd - 1 if evaluating else None, timeout=timeout
        )
        entry = {
            "round": rnd,
            "train_parties": sorted(state.roster.name(n) for n in answered),
            "dropped": dropped,
            "seconds": self.clock.monotonic() - started,
            "bytes_up_per_party": sum(r.count_bytes() for r in updates) / len(updates),
            "bytes_down_per_party": (
                sum(done.bytes_down.values()) / len(done.bytes_down) if done.bytes_down else 0.0
            ),
            "phase_seconds": {"train": done.seconds, "server_sums": update_seconds},
        }
        if dropped:
            log.warning("round %d: parties dropped or failed: %s", rnd, ", ".join(dropped))
        state = replace(state, round=rnd, enc_global=enc_global, pending=(*state.pending, entry))
        return state, outcomes

    def finish(
        self, grid: Grid, state: RunState, *, timeout: float, evaluate_config: ConfigRecord
    ) -> tuple[RunState, list[RoundOutcome]]:
        """After the last round: every party evaluates the final model, and the metrics party
        decrypts the round before's pooled histograms (nothing to do when resumed past it)."""
        if not _awaits_evaluation(state):
            return state, []
        nodes = self._sample(grid, state, fraction=1.0)
        masks = self._masks(f"final:{state.round}", {proto.PURPOSE_HIST: self._names(state, nodes)})
        wave = self._wave(
            proto.MSG_EVALUATE,
            state,
            state.round,
            evaluate_config,
            enc_global=state.enc_global,
            masks=masks,
        )
        done = self._exchange(
            grid, state, [(wave, nodes)], phase="final", timeout=timeout, masks=masks
        )
        state = replace(state, roster=done.answers.roster, held=done.held)
        state, outcomes = self._settle(grid, state, done, evaluated=state.round, timeout=timeout)
        return state, outcomes

    def release(self, grid: Grid, state: RunState, *, timeout: float) -> Release:
        """After the last round: the designated party decrypts the final model and writes the
        signed artifact; it also decrypts the last round's pooled histograms, if pending."""
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
                proto.CFG_HISTORY: json.dumps([*state.history, *state.pending]),
                proto.CFG_PARTIES: json.dumps(sorted(set(state.roster.parties.values()))),
            }
        )
        wave = self._wave(proto.MSG_RELEASE, state, state.round, cfg, enc_global=state.enc_global)
        extras = (
            {nodes[0]: {proto.ENC_POOLED_HIST: state.enc_pooled_hist}}
            if state.enc_pooled_hist is not None
            else None
        )
        delivery = self._deliver(grid, [(wave, nodes[:1])], state, timeout=timeout, extras=extras)
        answers = self._accept(delivery.replies, state.roster, phase="release")
        if not answers.good:
            raise FederationError(f"release at {target!r} failed: {list(answers.errors)}")
        answer = answers.good[0].content.config_records[proto.CONFIG]
        return Release(
            party=target,
            model_id=str(answer[proto.CFG_MODEL_ID]),
            metrics=_metrics_of(answers.good[0]),
        )

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

    def _exchange(
        self,
        grid: Grid,
        state: RunState,
        waves: Sequence[tuple[Wave, Sequence[int]]],
        *,
        phase: str,
        timeout: float,
        masks: ExchangeMasks | None = None,
    ) -> _Exchange:
        """Deliver ``waves`` in one exchange; the metrics party's message also carries the
        pooled histograms awaiting decryption."""
        nodes = [n for _, targets in waves for n in targets]
        metrics_node = None
        extras = None
        if state.enc_pooled_hist is not None and nodes:
            metrics_node = self._pick_party_node(grid, state.roster, among=nodes)
            extras = {metrics_node: {proto.ENC_POOLED_HIST: state.enc_pooled_hist}}
        mark = self.clock.monotonic()
        delivery = self._deliver(grid, waves, state, timeout=timeout, extras=extras)
        seconds = self.clock.monotonic() - mark
        return _Exchange(
            answers=self._accept(delivery.replies, state.roster, phase=phase),
            held=delivery.held,
            bytes_down=delivery.bytes_down,
            seconds=seconds,
            metrics_node=metrics_node,
            masks=masks,
        )

    def _settle(
        self,
        grid: Grid,
        state: RunState,
        done: _Exchange,
        *,
        evaluated: int | None,
        timeout: float,
    ) -> tuple[RunState, list[RoundOutcome]]:
        """After an exchange: complete the round whose metrics came back, then sum the pooled
        histograms of round ``evaluated`` (if the exchange evaluated one)."""
        outcomes: list[RoundOutcome] = []
        if state.enc_pooled_hist is not None:
            mark = self.clock.monotonic()
            reply = [r for r in done.answers.good if r.metadata.src_node_id == done.metrics_node]
            found = _metrics_of(reply[0]) if reply else None
            if found is None:
                # The metrics party dropped out of the exchange: ask another, as a query.
                found, roster = self._decrypt_metrics(
                    grid, state.roster, state.enc_pooled_hist, timeout=timeout
                )
                state = replace(state, roster=roster)
                seconds = done.seconds + self.clock.monotonic() - mark
            else:
                seconds = done.seconds
            state, outcome = self._complete(state, found, seconds=seconds)
            outcomes.append(outcome)
        if evaluated is not None:
            phase = f"round {evaluated} evaluate"
            scored = [r for r in done.answers.good if proto.ENC_HIST in r.content.array_records]
            answers = replace(done.answers, good=tuple(scored))
            self._require_quorum(answers, phase=phase)
            enc_hist, sum_seconds = self._masked_sum(
                grid,
                answers,
                done.masks,
                proto.ENC_HIST,
                proto.PURPOSE_HIST,
                timeout=timeout,
                exchange_answers=done.answers,
            )
            entry, *later = state.pending
            assert entry["round"] == evaluated, (entry["round"], evaluated)
            phases = dict(entry["phase_seconds"])
            phases["evaluate"] = done.seconds
            phases["server_sums"] = phases["server_sums"] + sum_seconds
            entry = {
                **entry,
                "eval_parties": sorted(state.roster.name(n) for n in answers.nodes),
                "phase_seconds": phases,
            }
            state = replace(state, pending=(entry, *later), enc_pooled_hist=enc_hist)
        return state, outcomes

    def _complete(
        self, state: RunState, metrics: tuple[float, float], *, seconds: float
    ) -> tuple[RunState, RoundOutcome]:
        """The first pending round's public record, now that its AUC and KS are in."""
        entry, *later = state.pending
        auc, ks = metrics
        outcome = RoundOutcome(
            round=int(entry["round"]),
            train_parties=list(entry["train_parties"]),
            eval_parties=list(entry["eval_parties"]),
            dropped=list(entry["dropped"]),
            auc=auc,
            ks=ks,
            seconds=float(entry["seconds"]),
            bytes_up_per_party=float(entry["bytes_up_per_party"]),
            bytes_down_per_party=float(entry["bytes_down_per_party"]),
            phase_seconds={**entry["phase_seconds"], "metrics": seconds},
        )
        self.progress.emit("round", **outcome.as_dict())
        state = replace(
            state,
            history=(*state.history, outcome.as_dict()),
            pending=tuple(later),
            enc_pooled_hist=None,
        )
        return state, outcome

    def _decrypt_metrics(
        self, grid: Grid, roster: Roster, enc_hist: ArrayRecord, *, timeout: float
    ) -> tuple[tuple[float, float], Roster]:
        """Ask one party to decrypt the pooled histograms; only AUC and KS come back."""
        node = self._pick_party_node(grid, roster)
        content = RecordDict(
            {proto.ENC_POOLED_HIST: enc_hist, proto.CONFIG: self._config_record(0)}
        )
        replies = exchange(
            grid, [_message(content, node, proto.MSG_METRICS)], timeout=timeout, clock=self.clock
        )
        answers = self._accept(replies, roster, phase="metrics")
        found = _metrics_of(answers.good[0]) if answers.good else None
        if found is None:
            raise FederationError("no party answered the metrics query")
        return found, answers.roster

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
                pending=list(state.pending),
                enc_pooled_hist=state.enc_pooled_hist,
            )
        )

    # ------------------------------------------------------------------ helpers

    def _masked_sum(
        self,
        grid: Grid,
        answers: Answers,
        masks: ExchangeMasks | None,
        key: str,
        purpose: str,
        *,
        timeout: float,
        exchange_answers: Answers | None = None,
    ) -> tuple[ArrayRecord, float]:
        """The sum of ``key`` over ``answers``, removing the masks of parties that dropped
        after masking (``exchange_answers``: every good reply of the exchange, default
        ``answers``), and the seconds it took.

        Raises
        ------
        FederationError
            Dropped masks cannot be removed: fewer survivors or reveals than the threshold.
        """
        mark = self.clock.monotonic()
        everyone = exchange_answers or answers
        recovered = masks is not None and masks.declared is not None
        try:
            total = masked_sum(
                self.summer,
                masks,
                answers.good,
                names=everyone.roster.parties,
                key=key,
                purpose=purpose,
                all_replies=everyone.good,
                grid=grid,
                clock=self.clock,
                timeout=timeout,
                configured_threshold=self.config.mask_threshold,
                min_parties=self.config.min_parties,
            )
        except UnmaskError as e:
            raise FederationError(f"masked sum refused: {e}") from e
        if (
            masks is not None
            and masks.declared is not None
            and masks.declared.dropped
            and not recovered
        ):
            self.progress.emit(
                "unmasked",
                exchange=masks.plan.exchange,
                dropped=sorted(masks.declared.dropped),
                survivors=sorted(masks.reveals),
            )
        return total, self.clock.monotonic() - mark

    def _masks(self, label: str, members: Mapping[str, list[str] | None]) -> ExchangeMasks | None:
        """The mask plan of one exchange, in a masked run; ``None`` members: every party."""
        if not self.config.masked:
            return None
        plan = MaskPlan(
            exchange=label,
            members={k: None if v is None else tuple(sorted(v)) for k, v in members.items()},
        )
        return ExchangeMasks(plan=plan, self_masks=self.config.mask_self)

    @staticmethod
    def _names(state: RunState, nodes: Sequence[int]) -> list[str]:
        return sorted({state.roster.name(n) for n in nodes})

    def _keep_for_attack_demo(self, rnd: int, answers: Answers) -> None:
        """Hook for ``benchmarks/collusion.py``: a curious coordinator keeps round 1's
        individual ciphertexts (see :attr:`keep_round_one`); nothing is kept by default."""
        if rnd == 1 and self.keep_round_one is not None:
            self.keep_round_one(
                {answers.roster.name(r.metadata.src_node_id): r for r in answers.good}
            )

    def _config_record(self, rnd: int, *, masks: ExchangeMasks | None = None) -> ConfigRecord:
        cfg = ConfigRecord({proto.CFG_ROUND: rnd, proto.CFG_RUN_ID: self.config.run_id})
        if masks is not None:
            cfg[proto.CFG_MASK] = masks.plan.to_json()
        return cfg

    def _wave(
        self,
        message_type: str,
        state: RunState,
        rnd: int,
        extra: ConfigRecord,
        *,
        enc_global: ArrayRecord | None,
        evaluate: bool = False,
        masks: ExchangeMasks | None = None,
    ) -> Wave:
        """A wave naming the statistics sum and, from round 2 on, the global model;
        ``evaluate`` asks a ``train`` wave to evaluate that model too; ``masks`` asks the
        parties to mask what they answer."""
        cfg = self._config_record(rnd, masks=masks)
        for key, value in extra.items():
            cfg[key] = value
        if evaluate:
            cfg[proto.CFG_EVALUATE] = True
        records = {proto.ENC_STATS: state.enc_stats}
        if enc_global is not None and len(enc_global) > 0:
            records[proto.ENC_GLOBAL] = enc_global
        return Wave.of(message_type, cfg, records)

    def _deliver(
        self,
        grid: Grid,
        waves: Sequence[tuple[Wave, Sequence[int]]],
        state: RunState,
        *,
        timeout: float,
        extras: Mapping[int, Mapping[str, ArrayRecord]] | None = None,
    ) -> Delivery:
        """Deliver ``waves`` from ``state``'s holdings; announce full resends in the progress
        log."""

        def announce(message_type: str, resend: list[int]) -> None:
            names = sorted(state.roster.name(n) for n in resend)
            log.info("%s: resending full records to %s", message_type, ", ".join(names))
            self.progress.emit("resent", phase=message_type, parties=names)

        return deliver(
            grid,
            waves,
            held=state.held,
            timeout=timeout,
            clock=self.clock,
            on_resend=announce,
            extras=extras,
        )

    def _sample(self, grid: Grid, state: RunState, *, fraction: float) -> list[int]:
        """Live parties minus the ones that refused; a fraction is taken deterministically."""
        nodes = sorted(n for n in grid.get_node_ids() if n not in state.roster.refused)
        if fraction >= 1.0:
            return nodes
        count = max(self.config.min_parties, round(len(nodes) * fraction))
        # Rotate through parties by round so every party trains over time, without server RNG.
        offset = state.round * count
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
                reason = short_reason(raw)
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

    def _pick_party_node(
        self, grid: Grid, roster: Roster, *, among: Sequence[int] | None = None
    ) -> int:
        """The release party's node if it is live (and in ``among``), else the first other."""
        live = set(grid.get_node_ids() if among is None else among)
        preferred = [
            n for n, p in roster.parties.items() if p == self.config.release_party and n in live
        ]
        others = sorted(n for n in roster.parties if n in live)
        if not preferred and not others:
            raise FederationError("no party is connected to decrypt the round's metrics")
        return (preferred or others)[0]


def _message(content: RecordDict, node: int, message_type: str) -> Message:
    return Message(content=content, message_type=message_type, dst_node_id=node)


def _awaits_evaluation(state: RunState) -> bool:
    """Whether the last trained round's model is still to be evaluated."""
    return bool(state.pending) and "eval_parties" not in state.pending[-1]


def _metrics_of(reply: Message) -> tuple[float, float] | None:
    """The AUC and KS a party decrypted, if its reply carries them."""
    record = reply.content.metric_records.get(proto.METRICS)
    if record is None:
        return None
    auc, ks = record[proto.METRIC_AUC], record[proto.METRIC_KS]
    return float(auc), float(ks)  # type: ignore[arg-type]


def short_reason(reason: str) -> str:
    """The party's own message, without the runtime's traceback decoration."""
    marker = proto.REFUSAL_MARK
    if marker in reason:
        tail = reason[reason.index(marker) :]
        return tail.split("\n\n")[0].strip().strip("'>\"")
    lines = [line for line in reason.strip().splitlines() if line.strip()]
    return lines[-1].strip().strip("'>\"") if lines else "unknown error"
