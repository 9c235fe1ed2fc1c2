"""The coordinator's side of masks: plans for each exchange, unmasking and dropout recovery.

Parties mask what they encrypt so that the coordinator, even with one party's CKKS key, reads
only sums (:mod:`secure_agg.masking`). Pairwise masks cancel in the ordinary ciphertext sum;
self masks (run-config ``mask-self``) do not. After an exchange with self masks, or one in
which parties dropped, the coordinator declares the dropped set once (empty when everyone
answered), asks the survivors (``query.unmask``) for their shares of each survivor's self seed
and of the seeds between each dropped party and each survivor, passing each one the sealed
shares addressed to it, rebuilds those seeds from ``threshold`` shares, and adds the opposite
masks to the survivors' sum. Otherwise nothing runs here but the plan.

Notes
-----
The coordinator holds sealed shares only in memory for the exchange and never writes them; the
revealed shares it receives open only survivors' self seeds and dropped-to-survivor seeds. A
dropped party's ciphertext is never summed, even if it arrives late: with its pairwise seeds
revealed, only its self mask would still hide it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedrisk.federation import protocol as proto
from secure_agg.aggregation import CkksAggregation, VectorAggregation
from secure_agg.codec import chunks_to_record, record_to_chunks
from secure_agg.errors import SecureAggError
from secure_agg.masking import (
    MIN_MASKED_PARTIES,
    MaskedExchange,
    MaskPlan,
    threshold_for,
    unmask_sum,
)
from server.coordinator.waves import Clock, exchange

log = logging.getLogger(__name__)


class UnmaskError(SecureAggError, RuntimeError):
    """A masked exchange's sum cannot be recovered (too few survivors or reveals)."""


@dataclass
class ExchangeMasks:
    """One masked exchange at the coordinator: its plan, and once parties dropped, the
    declared exchange and the survivors' reveals (shared by every purpose of the exchange)."""

    plan: MaskPlan
    self_masks: bool = False
    """The parties add self masks: the exchange is unmasked even when nobody dropped."""
    declared: MaskedExchange | None = None
    reveals: dict[str, dict[str, bytes]] = field(default_factory=dict)


def masked_sum(
    summer: VectorAggregation,
    masks: ExchangeMasks | None,
    replies: Sequence[Message],
    *,
    names: Mapping[int, str],
    key: str,
    purpose: str,
    all_replies: Sequence[Message],
    grid: Grid,
    clock: Clock,
    timeout: float,
    configured_threshold: int,
    min_parties: int,
) -> ArrayRecord:
    """The sum of ``key`` over ``replies``, with dropped parties' masks removed.

    Parameters
    ----------
    replies
        The good replies carrying ``key``.
    all_replies
        Every good reply of the exchange: who answered at all, and their sealed shares.
    names
        Node → party name (the roster after the exchange).

    Raises
    ------
    UnmaskError
        Survivors below the threshold, or too few reveals came back.
    """
    shares = {
        names[r.metadata.src_node_id]: r.content.config_records[proto.MASK_SHARES]
        for r in all_replies
        if proto.MASK_SHARES in r.content.config_records
    }
    if masks is None or not shares:
        # No plan, or fewer than 3 parties masked (their answers carry no shares).
        return summer.sum_records(
            [r.content.array_records[key] for r in replies], min_parties=min_parties
        )
    holders = sorted(next(iter(shares.values())).keys())
    if any(sorted(record.keys()) != holders for record in shares.values()):
        raise UnmaskError(f"{masks.plan.exchange}: parties disagree on who takes part")
    members = masks.plan.members_of(purpose, holders)
    if len(members) < MIN_MASKED_PARTIES:
        # Too few members for this purpose: its vectors were sent unmasked.
        return summer.sum_records(
            [r.content.array_records[key] for r in replies], min_parties=min_parties
        )
    dropped = sorted(set(holders) - set(shares))
    if masks.declared is None and (dropped or masks.self_masks):
        masks.declared = _recover(
            masks,
            holders=holders,
            dropped=dropped,
            shares=shares,
            names=names,
            grid=grid,
            clock=clock,
            timeout=timeout,
            threshold=threshold_for(configured_threshold, len(holders)),
        )
    declared = masks.declared
    kept = [
        r.content.array_records[key]
        for r in replies
        if declared is None or declared.accepts(names[r.metadata.src_node_id])
    ]
    total = summer.sum_records(kept, min_parties=min_parties)
    if declared is None or not declared.needs_correction(members):
        return total
    if not isinstance(summer, CkksAggregation):
        raise UnmaskError("masks exist only under encryption; the summer is not CKKS")
    chunks, length = record_to_chunks(total)
    try:
        fixed = unmask_sum(
            summer.context, declared, chunks, masks.reveals, purpose=purpose, members=members
        )
    except SecureAggError as e:
        raise UnmaskError(f"{masks.plan.exchange}: {e}") from e
    return chunks_to_record(fixed, length=length)


def _recover(
    masks: ExchangeMasks,
    *,
    holders: list[str],
    dropped: list[str],
    shares: Mapping[str, ConfigRecord],
    names: Mapping[int, str],
    grid: Grid,
    clock: Clock,
    timeout: float,
    threshold: int,
) -> MaskedExchange:
    declared = MaskedExchange(
        masks.plan.exchange, tuple(holders), threshold, self_masks=masks.self_masks
    )
    try:
        survivors = declared.declare_dropped(dropped)
    except SecureAggError as e:
        raise UnmaskError(str(e)) from e
    if dropped:
        log.warning(
            "%s: %s dropped after masking; asking survivors to unmask", declared.exchange, dropped
        )
    plan = MaskPlan(
        exchange=masks.plan.exchange, members=masks.plan.members, dropped=tuple(dropped)
    )
    nodes = {name: node for node, name in names.items()}
    messages = []
    for name in sorted(survivors):
        content = RecordDict(
            {
                proto.CONFIG: ConfigRecord({proto.CFG_MASK: plan.to_json()}),
                proto.MASK_SHARES: ConfigRecord(
                    {sender: shares[sender][name] for sender in sorted(survivors)}
                ),
            }
        )
        messages.append(
            Message(content=content, message_type=proto.MSG_UNMASK, dst_node_id=nodes[name])
        )
    for reply in exchange(grid, messages, timeout=timeout, clock=clock):
        if reply.has_error():
            log.warning(
                "%s: a survivor refused to unmask: %s", declared.exchange, reply.error.reason
            )
            continue
        name = names[reply.metadata.src_node_id]
        revealed = reply.content.config_records.get(proto.MASK_REVEALED, ConfigRecord())
        masks.reveals[name] = {str(k): bytes(v) for k, v in revealed.items()}  # type: ignore[arg-type]
    if len(masks.reveals) < threshold:
        raise UnmaskError(
            f"{declared.exchange}: reveals must come from at least {threshold} survivors to "
            f"remove the masks of {dropped}; got {len(masks.reveals)}"
        )
    return declared
