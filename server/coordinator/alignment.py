"""The coordinator's ``align`` phase: relays blinded identifiers between guest and hosts.

Private entity alignment of a vertical run, before training, in four message exchanges
(:mod:`secure_agg.psi` has the cryptography, ``clients.alignment`` the parties' answers):

1. ``offer`` to every party. Each host answers its identifiers blinded with its key, in a
   secret order, and a channel public key; the guest answers one blinded list per host slot
   (a fresh key per host: the guest aligns with each host separately).
2. ``reblind`` to each host, carrying the guest's list for its slot; it answers it blinded
   again.
3. ``match`` to the guest, carrying each host's list and its doubly blinded own list; it
   answers one result per host, sealed for that host.
4. ``finish`` to each host, carrying its sealed result.

Notes
-----
The coordinator only relays. It sees lists of blinded values it cannot unblind or link (it
holds no party's key), their lengths (the set sizes) and the sealed results' lengths (the
intersection sizes): :class:`AlignmentSizes` is everything it learns. It never sees an
identifier, an unblinded digest, or which rows are shared.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedrisk.federation import protocol as proto
from fedrisk.federation import published_keys as pk
from fedrisk.federation.identifiers import IDENTIFIER_KINDS, IdentifierKind
from server.coordinator.progress import ProgressLog
from server.coordinator.strategy import FederationError, short_reason
from server.coordinator.waves import Clock, SystemClock, exchange

log = logging.getLogger(__name__)

_SEAL_OVERHEAD = 12 + 16 + 8
"""Nonce, tag and the count header of a sealed result: the rest is 8 bytes per shared slot."""


@dataclass(frozen=True)
class AlignmentSettings:
    """What the parties align on: who the guest is, which column, which identifier rules."""

    guest: str
    id_column: str
    id_kind: IdentifierKind = "phone"
    default_country_code: str = "86"

    def __post_init__(self) -> None:
        if self.id_kind not in IDENTIFIER_KINDS:
            raise FederationError(
                f"id kind must be one of {list(IDENTIFIER_KINDS)}; got {self.id_kind!r}"
            )
        if not self.guest or not self.id_column:
            raise FederationError(
                f"guest and id column must be named; got {self.guest!r} and {self.id_column!r}"
            )


@dataclass(frozen=True)
class AlignmentSizes:
    """Everything the coordinator learns from the phase: set and intersection sizes."""

    guest: str
    guest_rows: int
    host_rows: dict[str, int] = field(default_factory=dict)
    shared: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)
    """Node id of each party, for the phases that follow."""


def align_parties(
    grid: Grid,
    settings: AlignmentSettings,
    *,
    run_id: str,
    timeout: float,
    nodes: Sequence[int] | None = None,
    clock: Clock | None = None,
    progress: ProgressLog | None = None,
) -> AlignmentSizes:
    """Run the four ``align`` exchanges between the guest and every other connected party.

    Raises
    ------
    FederationError
        If the guest is not connected, no host is, or any party fails a step (the guest
        cannot align with a host that fails, and a host without a result cannot train).
    """
    clock = clock or SystemClock()
    targets = sorted(nodes if nodes is not None else grid.get_node_ids())
    if len(targets) < 2:
        raise FederationError(f"alignment needs a guest and a host; got {len(targets)} nodes")
    base: dict[str, str | int] = {
        proto.CFG_RUN_ID: run_id,
        proto.CFG_ALIGN_GUEST: settings.guest,
        proto.CFG_ALIGN_ID_COLUMN: settings.id_column,
        proto.CFG_ALIGN_ID_KIND: settings.id_kind,
        proto.CFG_ALIGN_COUNTRY_CODE: settings.default_country_code,
        proto.CFG_ALIGN_SLOTS: len(targets) - 1,
    }

    def step(name: str, sends: dict[int, RecordDict]) -> dict[int, Message]:
        messages = []
        for node, content in sends.items():
            cfg = content.config_records.get(proto.CONFIG, ConfigRecord())
            for key, value in {**base, proto.CFG_ALIGN_STEP: name}.items():
                cfg[key] = value
            content[proto.CONFIG] = cfg
            messages.append(
                Message(content=content, message_type=proto.MSG_ALIGN, dst_node_id=node)
            )
        replies = exchange(grid, messages, timeout=timeout, clock=clock)
        by_node = {r.metadata.src_node_id: r for r in replies}
        failed = [
            f"node {node}: "
            + (short_reason(by_node[node].error.reason or "") if node in by_node else "timeout")
            for node in sends
            if node not in by_node or by_node[node].has_error()
        ]
        if failed:
            listed = "".join(f"\n- {reason}" for reason in failed)
            raise FederationError(f"align {name}: every party must answer; got failures:{listed}")
        return by_node

    offers = step(proto.ALIGN_OFFER, {node: RecordDict() for node in targets})
    names = {
        node: str(r.content.config_records[proto.CONFIG][proto.CFG_PARTY])
        for node, r in offers.items()
    }
    guests = [n for n, p in names.items() if p == settings.guest]
    if not guests:
        raise FederationError(
            f"guest {settings.guest!r} must be connected; got parties {sorted(names.values())}"
        )
    guest = guests[0]
    hosts = [n for n in targets if n != guest]
    slot_of = {node: slot for slot, node in enumerate(hosts)}
    guest_lists = offers[guest].content.array_records[proto.PSI_POINTS]
    rows = {names[n]: int(_int(offers[n], proto.CFG_ALIGN_ROWS)) for n in targets}
    if progress is not None:
        progress.emit("align", step=proto.ALIGN_OFFER, rows=rows)

    doubles = step(
        proto.ALIGN_REBLIND,
        {
            node: RecordDict(
                {proto.PSI_POINTS: ArrayRecord({proto.PSI_GUEST: guest_lists[str(slot_of[node])]})}
            )
            for node in hosts
        },
    )
    match_points: dict[str, Array] = {}
    host_entries = []
    for node in hosts:
        slot = slot_of[node]
        own = offers[node].content.array_records[proto.PSI_POINTS][proto.PSI_OWN]
        double = doubles[node].content.array_records[proto.PSI_POINTS][proto.PSI_DOUBLE]
        match_points[proto.psi_slot_key(proto.PSI_OWN, slot)] = own
        match_points[proto.psi_slot_key(proto.PSI_DOUBLE, slot)] = double
        offer_cfg = offers[node].content.config_records[proto.CONFIG]
        channel = offer_cfg[proto.CFG_ALIGN_CHANNEL]
        # Channel keys travel with their owner's signature, relayed as is: the receiver checks
        # it against the owner's roster key.
        signature = offer_cfg.get(pk.CFG_ALIGN_CHANNEL_SIGNATURE, b"")
        host_entries.append(
            {
                proto.ALIGN_HOST_SLOT: slot,
                proto.ALIGN_HOST_NAME: names[node],
                proto.ALIGN_HOST_CHANNEL: bytes(channel).hex(),  # type: ignore[arg-type]
                pk.ALIGN_HOST_CHANNEL_SIGNATURE: bytes(signature).hex(),  # type: ignore[arg-type]
            }
        )
    matched = step(
        proto.ALIGN_MATCH,
        {
            guest: RecordDict(
                {
                    proto.PSI_POINTS: ArrayRecord(match_points),
                    proto.CONFIG: ConfigRecord({proto.CFG_ALIGN_HOSTS: json.dumps(host_entries)}),
                }
            )
        },
    )[guest]
    sealed = matched.content.array_records[proto.PSI_SEALED]
    guest_cfg = matched.content.config_records[proto.CONFIG]
    step(
        proto.ALIGN_FINISH,
        {
            node: RecordDict(
                {
                    proto.PSI_SEALED: ArrayRecord({proto.PSI_RESULT: sealed[str(slot_of[node])]}),
                    proto.CONFIG: ConfigRecord(
                        {
                            proto.CFG_ALIGN_CHANNEL: guest_cfg[
                                proto.align_channel_key(slot_of[node])
                            ],
                            pk.CFG_ALIGN_CHANNEL_SIGNATURE: guest_cfg.get(
                                pk.align_channel_signature_key(slot_of[node]), b""
                            ),
                        }
                    ),
                }
            )
            for node in hosts
        },
    )
    shared = {
        names[node]: (sealed[str(slot_of[node])].numpy().size - _SEAL_OVERHEAD) // 8
        for node in hosts
    }
    sizes = AlignmentSizes(
        guest=settings.guest,
        guest_rows=rows[settings.guest],
        host_rows={names[n]: rows[names[n]] for n in hosts},
        shared=shared,
        nodes={p: n for n, p in names.items()},
    )
    log.info("aligned %s with %s", settings.guest, sizes.shared)
    if progress is not None:
        progress.emit(
            "aligned", guest_rows=sizes.guest_rows, host_rows=sizes.host_rows, shared=shared
        )
    return sizes


def _int(reply: Message, key: str) -> int:
    value = reply.content.config_records[proto.CONFIG][key]
    return int(value)  # type: ignore[arg-type]
