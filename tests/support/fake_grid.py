"""An in-memory Flower Grid for coordinator tests, whose parties answer with real CKKS ciphertexts.

The grid is only the transport. Each fake party encrypts, decrypts and caches sealed records
with ``secure_agg`` (``CkksAggregation``, ``record_cache.take_decrypted``) as the ClientApp
does; instead of training it adds a fixed local step to the global model, so the plaintext
oracle of every round is a weighted mean anyone can compute. Time is virtual: it moves only when
the coordinator sleeps between pulls, and a reply becomes pullable ``delay`` seconds after its
message was pushed, so a timeout is exercised without waiting for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fedrisk.federation import protocol as proto
from secure_agg.aggregation import CkksAggregation, unweight_sum, weight_update
from secure_agg.errors import SecureAggError
from secure_agg.masking import (
    MaskIdentity,
    MaskPlan,
    RevealLedger,
    chunk_masks,
    new_self_seed,
    reveal_shares,
    share_seeds,
    threshold_for,
)
from secure_agg.record_cache import take_decrypted

FloatArray = npt.NDArray[np.float64]


class VirtualClock:
    """A clock that advances only when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        """The virtual time, in seconds."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Advance the virtual time."""
        self.now += max(seconds, 0.0)


@dataclass
class FakeParty:
    """A party that answers the fedrisk protocol with real ciphertexts and no training.

    Parameters
    ----------
    name
        Its party name, sent back with every reply.
    crypto
        Encrypts and decrypts with the federation's secret context.
    n_examples
        The weight of its updates.
    step
        Added to the global model (zero in round 1) to make its update.
    hist
        What it answers to ``evaluate`` (or a ``train`` that asks to evaluate), encrypted: two
        slots, reported back as AUC and KS once pooled.
    delay
        Virtual seconds between a message and its reply.
    silent_from_round
        From this round on it never answers ``train`` or ``evaluate`` (a dead SuperNode).
    forgets_at_round
        Its record cache is wiped when this round's ``train`` arrives (a restarted SuperNode).
    refuses
        It refuses the statistics query, as a party whose data failed validation.
    masks
        Its masking identity: with it, the party masks what a message's mask plan asks for and
        answers ``query.unmask`` as the ClientApp does (:mod:`secure_agg.masking`).
    """

    name: str
    crypto: CkksAggregation
    n_examples: int
    step: FloatArray
    hist: FloatArray
    delay: float = 0.01
    silent_from_round: int | None = None
    forgets_at_round: int | None = None
    refuses: bool = False
    masks: MaskIdentity | None = None
    mask_threshold: int = 0
    self_masks: bool = False
    """Adds a fresh self mask to each masked message (the run config's ``mask-self``)."""
    ledger: RevealLedger = field(default_factory=RevealLedger)
    sent: list[Message] = field(default_factory=list)
    """Every reply it sent."""
    state: RecordDict = field(default_factory=RecordDict)
    """Its Flower ``Context.state``: where ``take_decrypted`` caches what it decrypted."""
    received: list[Message] = field(default_factory=list)
    released: FloatArray | None = None
    """The decrypted final model, once it released."""
    _plan: MaskPlan | None = None
    _masked: bool = False
    _self_seed: bytes | None = None

    def answer(self, message: Message) -> Message | None:
        """The reply to ``message``, or None when this party stays silent."""
        self.received.append(message)
        reply = self._answer(message)
        if reply is not None:
            self.sent.append(reply)
        return reply

    def _answer(self, message: Message) -> Message | None:
        kind = message.metadata.message_type
        config = message.content.config_records[proto.CONFIG]
        self._plan = (
            MaskPlan.from_json(str(config[proto.CFG_MASK])) if proto.CFG_MASK in config else None
        )
        self._masked = False
        self._self_seed = new_self_seed() if self.self_masks else None
        if kind == proto.MSG_UNMASK:
            return self._unmask(message)
        rnd = int(config[proto.CFG_ROUND])  # type: ignore[arg-type]
        if kind in (proto.MSG_TRAIN, proto.MSG_EVALUATE) and (
            self.silent_from_round is not None and rnd >= self.silent_from_round
        ):
            return None
        if kind == proto.MSG_STATS:
            if self.refuses:
                return Message(
                    Error(
                        code=0, reason=f"{proto.REFUSAL_MARK} {self.name}: column x out of range"
                    ),
                    reply_to=message,
                )
            stats = np.array([float(self.n_examples), float(self.hist.sum())])
            return self._reply(
                message, **{proto.ENC_STATS: self._encode(stats, proto.PURPOSE_STATS)}
            )
        metrics = self._pooled_metrics(message)
        if kind == proto.MSG_METRICS:
            return self._reply(message, **metrics)
        if kind == proto.MSG_TRAIN and rnd == self.forgets_at_round:
            self.state = RecordDict()
            self.forgets_at_round = None
        try:
            sealed = take_decrypted(
                message.content,
                config,
                self.state,
                keys=(proto.ENC_STATS, proto.ENC_GLOBAL),
                decrypt=self.crypto.decode,
            )
        except SecureAggError as e:
            return Message(Error(code=0, reason=str(e)), reply_to=message)
        global_sum = sealed.get(proto.ENC_GLOBAL)
        if kind == proto.MSG_TRAIN:
            weights = mean_model(global_sum, like=self.step)
            update = weight_update(weights + self.step, self.n_examples)
            folded = (
                {proto.ENC_HIST: self._encode(self.hist, proto.PURPOSE_HIST)}
                if config.get(proto.CFG_EVALUATE)
                else {}
            )
            return self._reply(
                message,
                **{proto.ENC_UPDATE: self._encode(update, proto.PURPOSE_UPDATE)},
                **folded,
                **metrics,
            )
        if kind == proto.MSG_EVALUATE:
            hist = {proto.ENC_HIST: self._encode(self.hist, proto.PURPOSE_HIST)}
            return self._reply(message, **hist, **metrics)
        assert kind == proto.MSG_RELEASE, kind
        self.released = mean_model(global_sum, like=self.step)
        content = RecordDict(
            {
                proto.CONFIG: ConfigRecord(
                    {proto.CFG_PARTY: self.name, proto.CFG_MODEL_ID: f"model-{self.name}-{rnd}"}
                ),
                **metrics,
            }
        )
        return Message(content=content, reply_to=message)

    def _pooled_metrics(self, message: Message) -> dict[str, MetricRecord]:
        """Stands in for AUC and KS: the two decrypted slots of the pooled histograms, when the
        message carries them (the metrics party's)."""
        pooled = message.content.array_records.get(proto.ENC_POOLED_HIST)
        if pooled is None:
            return {}
        first, second = self.crypto.decode(pooled)
        return {
            proto.METRICS: MetricRecord(
                {proto.METRIC_AUC: float(first), proto.METRIC_KS: float(second)}
            )
        }

    def _encode(self, vec: FloatArray, purpose: str) -> ArrayRecord:
        """Encrypt ``vec``, masked as the message's plan asks when this party has masks."""
        if self._plan is None or self.masks is None:
            return self.crypto.encode(vec)
        members = self._plan.members_of(purpose, self.masks.peers)
        self._masked = True
        return self.crypto.encode(
            vec,
            masks=chunk_masks(
                self.masks,
                exchange=self._plan.exchange,
                purpose=purpose,
                participants=members,
                self_seed=self._self_seed,
            ),
        )

    def _unmask(self, message: Message) -> Message:
        assert self.masks is not None and self._plan is not None
        holders = self._plan.holders(self.masks.peers)
        try:
            revealed = reveal_shares(
                self.masks,
                exchange=self._plan.exchange,
                participants=holders,
                dropped=self._plan.dropped,
                sealed={
                    str(k): bytes(v)  # type: ignore[arg-type]
                    for k, v in message.content.config_records[proto.MASK_SHARES].items()
                },
                threshold=threshold_for(self.mask_threshold, len(holders)),
                ledger=self.ledger,
                self_masks=self.self_masks,
            )
        except SecureAggError as e:
            return Message(Error(code=0, reason=str(e)), reply_to=message)
        content = RecordDict(
            {
                proto.CONFIG: ConfigRecord({proto.CFG_PARTY: self.name}),
                proto.MASK_REVEALED: ConfigRecord(dict(revealed)),
            }
        )
        return Message(content=content, reply_to=message)

    def _reply(self, message: Message, **records: ArrayRecord | MetricRecord) -> Message:
        content = RecordDict({proto.CONFIG: ConfigRecord({proto.CFG_PARTY: self.name})})
        for key, record in records.items():
            content[key] = record
        if self._masked and self._plan is not None and self.masks is not None:
            holders = self._plan.holders(self.masks.peers)
            content[proto.MASK_SHARES] = ConfigRecord(
                dict(
                    share_seeds(
                        self.masks,
                        exchange=self._plan.exchange,
                        participants=holders,
                        threshold=threshold_for(self.mask_threshold, len(holders)),
                        self_seed=self._self_seed,
                    )
                )
            )
        return Message(content=content, reply_to=message)


def oracle(rounds: Sequence[Sequence[FakeParty]]) -> FloatArray:
    """The plaintext global model after ``rounds``, each listing the parties that trained."""
    weights = np.zeros_like(rounds[0][0].step)
    for answering in rounds:
        total = sum(p.n_examples for p in answering)
        weights = np.sum([p.n_examples * (weights + p.step) for p in answering], axis=0) / total
    return weights


def mean_model(global_sum: npt.ArrayLike | None, *, like: FloatArray) -> FloatArray:
    """The weighted mean a decrypted global sum stands for; zeros before round 1."""
    if global_sum is None:
        return np.zeros_like(like)
    weights, _ = unweight_sum(global_sum)
    return weights


class FakeGrid(Grid):
    """Flower's Grid over in-memory parties on a virtual clock.

    Node ids are 101, 102, … in the order of ``parties``.
    """

    def __init__(self, parties: Sequence[FakeParty], *, clock: VirtualClock) -> None:
        self.parties = {101 + i: party for i, party in enumerate(parties)}
        self.clock = clock
        self._run = Run.create_empty(run_id=1)
        self._replies: dict[str, tuple[float, Message]] = {}

    def node_of(self, name: str) -> int:
        """The node id of party ``name``."""
        return next(node for node, party in self.parties.items() if party.name == name)

    def set_run(self, run: Run) -> None:
        """Set the run this grid serves."""
        self._run = run

    @property
    def run(self) -> Run:
        """The run this grid serves."""
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """A message to ``dst_node_id``."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """Every party's node."""
        return list(self.parties)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Hand each message to its party; its reply is pullable ``delay`` seconds later."""
        ids: list[str] = []
        for message in messages:
            # As Flower's own grids do: the transport names the message.
            message_id = uuid.uuid4().hex
            message.metadata.__dict__["_message_id"] = message_id
            party = self.parties[message.metadata.dst_node_id]
            reply = party.answer(message)
            if reply is not None:
                self._replies[message_id] = (self.clock.monotonic() + party.delay, reply)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies that are ready by now."""
        now = self.clock.monotonic()
        ready = [
            mid for mid in message_ids if mid in self._replies and self._replies[mid][0] <= now
        ]
        return [self._replies.pop(mid)[1] for mid in ready]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Not offered: the coordinator pulls its own replies, quickly (``waves.exchange``)."""
        raise AssertionError("the coordinator must not use Grid.send_and_receive")
