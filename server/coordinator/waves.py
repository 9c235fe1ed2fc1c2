"""Message waves to the parties: each sealed record sent once per party, replies pulled quickly.

A wave is one message type sent to many parties at once (``train`` to the sampled parties,
``evaluate`` to the others, ...); one exchange may deliver several waves, each party getting one
message. A wave's messages name their sealed records by digest and carry only those a party does
not hold yet (:mod:`secure_agg.record_cache`); a party that lost its cache answers with
:data:`~secure_agg.record_cache.RESEND_MARK` and is sent the full message again within the same
exchange. A message may also carry records for its party alone (the pooled histograms the
metrics party decrypts), attached every time and never cached.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from secure_agg import record_cache

# Seconds between pulls for a wave's replies: quick ones during the quick period, then slow.
QUICK_PULL = 0.02
QUICK_PERIOD = 2.0
SLOW_PULL = 0.25

Holdings = Mapping[int, Mapping[str, str]]
"""Per node, the digest of each sealed record it confirmed holding."""


class Clock(Protocol):
    """The time the coordinator waits on parties by; tests pass a virtual one."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The process's monotonic clock and real sleeps."""

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """``time.sleep(seconds)``."""
        time.sleep(seconds)


@dataclass(frozen=True)
class Wave:
    """One message type sent to many parties: its config and the sealed records it names."""

    message_type: str
    config: ConfigRecord
    records: Mapping[str, ArrayRecord]
    digests: Mapping[str, str]

    @classmethod
    def of(
        cls, message_type: str, config: ConfigRecord, records: Mapping[str, ArrayRecord]
    ) -> Wave:
        """A wave naming ``records`` by their digests."""
        return cls(message_type, config, dict(records), record_cache.digests_of(records))

    def message(self, node: int, *, held: Mapping[str, str]) -> Message:
        """The wave's message to ``node``, without the records ``held`` says it already has."""
        content = record_cache.attach(self.config, self.records, self.digests, held=held)
        return Message(content=content, message_type=self.message_type, dst_node_id=node)


@dataclass(frozen=True)
class Delivery:
    """What one wave brought back, and what the parties hold after it."""

    replies: tuple[Message, ...]
    held: Holdings
    bytes_down: Mapping[int, int]
    """Sealed-record bytes sent to each node, full resends included."""


def deliver(
    grid: Grid,
    waves: Sequence[tuple[Wave, Sequence[int]]],
    *,
    held: Holdings,
    timeout: float,
    clock: Clock,
    on_resend: Callable[[str, list[int]], None],
    extras: Mapping[int, Mapping[str, ArrayRecord]] | None = None,
) -> Delivery:
    """Send each wave to its nodes in one exchange; resend in full to nodes that lost their cache.

    ``on_resend`` hears the message type and the nodes sent the full message again, before it
    is sent. ``extras`` maps a node to records attached to its message alone (not counted in
    ``bytes_down``, which counts sealed records). Each exchange waits up to ``timeout`` seconds
    for its replies.
    """
    bytes_down: dict[int, int] = {}
    wave_of = {node: wave for wave, nodes in waves for node in nodes}
    own = extras or {}

    def message(node: int, holds: Mapping[str, str]) -> Message:
        msg = wave_of[node].message(node, held=holds)
        sent = sum(r.count_bytes() for r in msg.content.array_records.values())
        bytes_down[node] = bytes_down.get(node, 0) + sent
        for key, record in own.get(node, {}).items():
            msg.content[key] = record
        return msg

    replies = exchange(
        grid, [message(n, held.get(n, {})) for n in wave_of], timeout=timeout, clock=clock
    )
    holdings = {node: dict(digests) for node, digests in held.items()}
    resend = [
        r.metadata.src_node_id
        for r in replies
        if r.has_error() and record_cache.RESEND_MARK in (r.error.reason or "")
    ]
    if resend:
        # A restarted SuperNode keeps its node id but not its cache.
        for wave, _ in waves:
            again = [node for node in resend if wave_of[node] is wave]
            if again:
                on_resend(wave.message_type, again)
        for node in resend:
            holdings.pop(node, None)
        replies = [r for r in replies if r.metadata.src_node_id not in resend]
        retry = [message(node, {}) for node in resend]
        replies += exchange(grid, retry, timeout=timeout, clock=clock)
    for reply in replies:
        node = reply.metadata.src_node_id
        if not reply.has_error() and node in wave_of:
            holdings.setdefault(node, {}).update(wave_of[node].digests)
    return Delivery(replies=tuple(replies), held=holdings, bytes_down=bytes_down)


def exchange(
    grid: Grid, messages: Sequence[Message], *, timeout: float, clock: Clock
) -> list[Message]:
    """Push messages and pull their replies until all are in or ``timeout`` seconds pass.

    Flower's ``send_and_receive`` sleeps a fixed interval between pulls (0.1 s in the
    simulation runtime, 3 s in deployment), so every wave lasted a whole number of
    intervals. Pulling every 20 ms for the first two seconds returns soon after the last
    reply of a quick wave; after that, a slow one (a cold ClientApp process) is pulled four
    times a second.
    """
    waiting = {mid for mid in grid.push_messages(messages) if mid is not None}
    started = clock.monotonic()
    deadline = started + timeout
    replies: list[Message] = []
    while waiting:
        got = list(grid.pull_messages(list(waiting)))
        replies += got
        waiting -= {reply.metadata.reply_to_message_id for reply in got}
        now = clock.monotonic()
        if not waiting or now >= deadline:
            break
        interval = QUICK_PULL if now - started < QUICK_PERIOD else SLOW_PULL
        clock.sleep(min(interval, deadline - now))
    return replies
