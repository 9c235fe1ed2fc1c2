"""The party's Flower ClientApp: one handler per message type of the fedrisk protocol.

A round is one message per party (see ``server.coordinator.strategy``): ``train`` may also ask
the party to evaluate the global model it names, and the metrics party's message, whatever its
type, may carry pooled histograms to decrypt into AUC and KS. Those folded answers travel in
the same reply.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients import alignment, tree_party
from clients.party import (
    PartyNode,
    PartyRefusedError,
    histogram_metrics,
    mask_identity,
    resolve_party_config,
)
from fedrisk.errors import FedRiskError
from fedrisk.federation import protocol as proto
from fedrisk.federation.run_config import parse_run_config
from secure_agg.aggregation import FloatVector
from secure_agg.errors import SecureAggError
from secure_agg.masking import (
    MaskPlan,
    RevealLedger,
    reveal_shares,
    run_binding,
    threshold_for,
)
from secure_agg.record_cache import take_decrypted

log = logging.getLogger(__name__)

app = ClientApp()


def _node(context: Context, message: Message | None = None) -> PartyNode:
    """Parse the run config and the party's config, load and validate its data; set up the
    masks ``message`` asks for.

    Raises
    ------
    PartyRefusedError
        Re-raised with the protocol's refusal mark, so the server excludes this party for the
        rest of the run and shows why. Nothing is encrypted or sent before validation passes.
    """
    federation = parse_run_config(dict(context.run_config))
    try:
        config = resolve_party_config(dict(context.node_config), federation)
        node = PartyNode(config, federation)
        plan = None if message is None else _mask_plan(message)
        if plan is not None:
            used = context.state.config_records.get(_MASKS_USED, ConfigRecord())
            node.use_masks(
                plan,
                run=run_binding(federation.run_id, context.run_id),
                used={str(k): str(v) for k, v in used.items()},
            )
        return node
    except FedRiskError as e:
        raise PartyRefusedError(f"{proto.REFUSAL_MARK} {e}") from e


def _mask_plan(message: Message) -> MaskPlan | None:
    config = message.content.config_records.get(proto.CONFIG, ConfigRecord())
    text = config.get(proto.CFG_MASK)
    return MaskPlan.from_json(str(text)) if text else None


_MASKS_USED = "fedrisk.masks-used"
"""Where a party keeps, in its run's ``Context.state``, the vectors it masked per exchange."""


def _remember_masks(context: Context, node: PartyNode) -> None:
    if node.masks_used:
        context.state[_MASKS_USED] = ConfigRecord(dict(node.masks_used))


def _reply(message: Message, node: PartyNode, **records: ArrayRecord | MetricRecord) -> Message:
    content = RecordDict({proto.CONFIG: ConfigRecord({proto.CFG_PARTY: node.config.name})})
    for key, record in records.items():
        content[key] = record
    shares = node.sealed_shares()
    if shares:
        # Sealed to each recipient: the coordinator keeps them unread, for dropout recovery.
        content[proto.MASK_SHARES] = ConfigRecord(dict(shares))
    return Message(content=content, reply_to=message)


def _pooled_histogram(message: Message, node: PartyNode) -> np.ndarray | None:
    """The decrypted pooled histograms the message carries (only the metrics party's
    messages do), else None."""
    enc_hist = message.content.array_records.get(proto.ENC_POOLED_HIST)
    return None if enc_hist is None else node.pooled_histogram(enc_hist)


def _metrics_of(hist: np.ndarray | None) -> dict[str, MetricRecord]:
    """AUC and KS of pooled histograms; only these two numbers leave the party."""
    if hist is None:
        return {}
    auc, ks = histogram_metrics(hist)
    return {proto.METRICS: MetricRecord({proto.METRIC_AUC: auc, proto.METRIC_KS: ks})}


def _pooled_metrics(message: Message, node: PartyNode) -> dict[str, MetricRecord]:
    """AUC and KS of the pooled histograms the message carries, if any."""
    return _metrics_of(_pooled_histogram(message, node))


def _sealed(message: Message, context: Context, node: PartyNode) -> dict[str, FloatVector]:
    """The statistics sum and global model the message names, decrypted: from the attached
    ciphertext, or from this run's cache.

    Raises
    ------
    secure_agg.record_cache.MissingRecordError
        If one is neither attached nor cached (the server then resends it).
    """
    config = message.content.config_records.get(proto.CONFIG, ConfigRecord())
    return take_decrypted(
        message.content,
        config,
        context.state,
        keys=(proto.ENC_STATS, proto.ENC_GLOBAL),
        decrypt=node.decrypt,
    )


Handler = Callable[[Message, PartyNode, dict[str, FloatVector]], Message]


def _handle(fn: Handler) -> Callable[[Message, Context], Message]:
    def handler(message: Message, context: Context) -> Message:
        node = _node(context, message)
        reply = fn(message, node, _sealed(message, context, node))
        _remember_masks(context, node)
        return reply

    handler.__name__ = fn.__name__
    handler.__doc__ = fn.__doc__
    return handler


@app.query("stats")
@_handle
def stats(message: Message, node: PartyNode, sealed: dict[str, FloatVector]) -> Message:
    """Validate local data and send its additive feature statistics, encrypted.

    A later statistics pass names the sum so far; the party's answer builds on it.
    """
    return _reply(message, node, **{proto.ENC_STATS: node.local_stats(sealed.get(proto.ENC_STATS))})


@app.train()
@_handle
def train(message: Message, node: PartyNode, sealed: dict[str, FloatVector]) -> Message:
    """Decrypt the global model, train on local data, send the weighted update encrypted."""
    stats = sealed.get(proto.ENC_STATS)
    if stats is None:
        raise PartyRefusedError("train message names no statistics sum")
    config = message.content.config_records[proto.CONFIG]
    rnd = int(config[proto.CFG_ROUND])  # type: ignore[arg-type]
    global_sum = sealed.get(proto.ENC_GLOBAL)
    records: dict[str, ArrayRecord | MetricRecord] = {}
    if config.get(proto.CFG_EVALUATE):
        # The model this round starts from is the previous round's result: evaluate it here
        # rather than in a message of its own.
        if global_sum is None:
            raise PartyRefusedError("train message asks to evaluate but names no global model")
        records[proto.ENC_HIST] = node.evaluate(stats, global_sum)
    records[proto.ENC_UPDATE] = node.train(stats, global_sum, rnd)
    return _reply(message, node, **records, **_pooled_metrics(message, node))


@app.evaluate()
@_handle
def evaluate(message: Message, node: PartyNode, sealed: dict[str, FloatVector]) -> Message:
    """Score the local test split with the global model; send score histograms encrypted."""
    stats = sealed.get(proto.ENC_STATS)
    global_sum = sealed.get(proto.ENC_GLOBAL)
    if stats is None or global_sum is None:
        raise PartyRefusedError("evaluate message must name the statistics sum and the model")
    hist = node.evaluate(stats, global_sum)
    return _reply(message, node, **{proto.ENC_HIST: hist}, **_pooled_metrics(message, node))


@app.query("metrics")
@_handle
def metrics(message: Message, node: PartyNode, sealed: dict[str, FloatVector]) -> Message:
    """Decrypt the pooled histograms; only the global AUC and KS leave the party (asked only
    when the metrics party of a round's exchange dropped out)."""
    metrics = _pooled_metrics(message, node)
    if not metrics:
        raise PartyRefusedError("metrics query carries no histograms")
    return _reply(message, node, **metrics)


@app.query("tree")
def tree(message: Message, context: Context) -> Message:
    """One boosting step: apply the pooled histograms, send the next level's encrypted.

    A resumed run's first step also carries the checkpointed state to continue from; after a
    finished tree the release party's answer carries its state for the next checkpoint.
    """
    node = _node(context, message)
    sealed = _sealed(message, context, node)
    stats = sealed.get(proto.ENC_STATS)
    if stats is None:
        raise PartyRefusedError("tree message names no statistics sum")
    number = int(message.content.config_records[proto.CONFIG][proto.CFG_ROUND])  # type: ignore[arg-type]
    snapshot = message.content.array_records.get(proto.ENC_TREE_STATE)
    answer = tree_party.step(
        node,
        context.state,
        stats=stats,
        pooled=sealed.get(proto.ENC_GLOBAL),
        number=number,
        snapshot=None if snapshot is None else node.decrypt(snapshot),
    )
    records = {} if answer.record is None else {proto.ENC_TREE: answer.record}
    if answer.snapshot is not None:
        records[proto.ENC_TREE_STATE] = answer.snapshot
    reply = _reply(message, node, **records)
    _remember_masks(context, node)
    cfg = reply.content.config_records[proto.CONFIG]
    cfg[proto.CFG_TREE_DONE] = answer.done
    cfg[proto.CFG_TREE_REPORT] = json.dumps(answer.report) if answer.report else ""
    return reply


@app.query("align")
def align(message: Message, context: Context) -> Message:
    """One step of private entity alignment (``clients.alignment``): blinded identifiers only."""
    federation = parse_run_config(dict(context.run_config))
    try:
        config = resolve_party_config(dict(context.node_config), federation)
        return alignment.answer(message, context.state, config=config, federation=federation)
    except (FedRiskError, SecureAggError) as e:
        # Bad identifiers or a malformed blinded list: the party refuses, saying why.
        raise PartyRefusedError(f"{proto.REFUSAL_MARK} {e}") from e


@app.query("unmask")
def unmask(message: Message, context: Context) -> Message:
    """After a masked exchange: reveal this survivor's shares of each survivor's self seed and
    of the seeds between each dropped party and each survivor, never of a seed between two
    survivors, never both kinds for one party.

    Refuses (``RecoveryRefusedError``) when this party is named dropped, the survivors are
    fewer than the threshold, or the request contradicts an earlier one for the exchange.
    """
    # Only keys are needed: no data, no CKKS context (this exchange sits on the round's path).
    federation = parse_run_config(dict(context.run_config))
    try:
        config = resolve_party_config(dict(context.node_config), federation)
    except FedRiskError as e:
        raise PartyRefusedError(f"{proto.REFUSAL_MARK} {e}") from e
    plan = _mask_plan(message)
    if plan is None or not (plan.dropped or federation.mask_self):
        raise PartyRefusedError("unmask query must carry a mask plan naming dropped parties")
    identity = mask_identity(config, run_binding(federation.run_id, context.run_id))
    holders = plan.holders(identity.peers)
    ledger = _reveal_ledger(context)
    revealed = reveal_shares(
        identity,
        exchange=plan.exchange,
        participants=holders,
        dropped=plan.dropped,
        sealed={
            str(sender): bytes(blob)  # type: ignore[arg-type]
            for sender, blob in message.content.config_records[proto.MASK_SHARES].items()
        },
        threshold=threshold_for(federation.mask_threshold, len(holders)),
        ledger=ledger,
        self_masks=federation.mask_self,
    )
    context.state[_LEDGER] = ConfigRecord({"json": ledger.to_json()})
    content = RecordDict(
        {
            proto.CONFIG: ConfigRecord({proto.CFG_PARTY: config.name}),
            proto.MASK_REVEALED: ConfigRecord(dict(revealed)),
        }
    )
    return Message(content=content, reply_to=message)


_LEDGER = "fedrisk.mask-reveals"
"""Where a party keeps, in its run's ``Context.state``, whom it was told is alive or dropped per
exchange (:class:`~secure_agg.masking.RevealLedger`)."""


def _reveal_ledger(context: Context) -> RevealLedger:
    record = context.state.config_records.get(_LEDGER, ConfigRecord())
    return RevealLedger.from_json(str(record.get("json", "")))


@app.query("release")
def release(message: Message, context: Context) -> Message:
    """Decrypt the final model and write the signed artifact at this party."""
    node = _node(context)
    sealed = _sealed(message, context, node)
    stats = sealed.get(proto.ENC_STATS)
    global_sum = sealed.get(proto.ENC_GLOBAL)
    if stats is None or global_sum is None:
        raise PartyRefusedError("release query must name the statistics sum and the model")
    cfg = message.content.config_records[proto.CONFIG]
    history = json.loads(str(cfg[proto.CFG_HISTORY]))
    parties = json.loads(str(cfg[proto.CFG_PARTIES]))
    rounds = int(cfg[proto.CFG_ROUND])  # type: ignore[arg-type]
    hist = _pooled_histogram(message, node)
    metrics = _metrics_of(hist)
    if metrics:
        # The last round's metrics come with its model: the pooled histograms of the final
        # evaluation, decrypted here; the history's last entry awaits them.
        record = metrics[proto.METRICS]
        history[-1] = {
            **history[-1],
            "auc": record[proto.METRIC_AUC],
            "ks": record[proto.METRIC_KS],
        }
    if node.federation.model == "gbdt":
        model_id, path = tree_party.release(
            node, context.state, stats=stats, rounds=rounds, history=history, parties=parties
        )
    else:
        model_id, path = node.release(
            stats, global_sum, rounds=rounds, history=history, parties=parties, hist=hist
        )
    log.info("release written under %s", path.parent)
    content = RecordDict(
        {
            proto.CONFIG: ConfigRecord(
                {proto.CFG_PARTY: node.config.name, proto.CFG_MODEL_ID: model_id}
            ),
            **metrics,
        }
    )
    return Message(content=content, reply_to=message)


@app.query("vertical")
def vertical(message: Message, context: Context) -> Message:
    """One step of vertical logistic regression (``clients.vertical_party``)."""
    from clients import vertical_party
    from fedrisk.federation.pin import check_vertical_roster
    from fedrisk.federation.vertical import STEP_SETUP
    from fedrisk.federation.vertical_params import params_of
    from secure_agg.vertical_records import packet_from_record, packet_to_record

    federation = parse_run_config(dict(context.run_config))
    config = vertical_party.config_for(dict(context.node_config), federation)
    # After the align phase the party trains on its private-set-intersection result.
    aligned = alignment.load_alignment(context.state)
    runtime = vertical_party.runtime(
        config, federation.run_id, aligned.to_json() if aligned is not None else None
    )
    packet = packet_from_record(message.content)
    # Our role comes from our own data; the run's guest and parties from our pin. The setup
    # step relays the peers' keys: a party outside the pinned roster is refused there, before
    # any of its keys is installed.
    check_vertical_roster(
        federation,
        party=config.name,
        role=config.role,
        peers=[key.partition("/")[2] for key in packet.enc if "/" in key]
        if packet.step == STEP_SETUP
        else [],
    )
    record = context.state.config_records.get(vertical_party.STATE_KEY)
    state = json.loads(str(record["json"])) if record is not None else {}
    answer = vertical_party.handle(packet, runtime, state, params_of(federation))
    context.state[vertical_party.STATE_KEY] = ConfigRecord({"json": json.dumps(state)})
    return Message(content=packet_to_record(answer), reply_to=message)
