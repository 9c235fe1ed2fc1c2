"""Parties that answer with the real ClientApp in this process, recording all their traffic.

Each party is the project's own ``clients.clientapp.app`` with its own ``Context`` (node config,
run config, persistent state), called as Flower's runtime calls it; a handler's exception
becomes an error reply, as in Flower. They plug into :class:`tests.support.fake_grid.FakeGrid`
(the transport), and every message the coordinator sends and every reply it gets is kept, so
tests can inspect exactly what crossed between the parties and the coordinator.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from tests.support.fake_grid import FakeGrid, VirtualClock


@dataclass
class Traffic:
    """Everything sent to and received from the parties, in order."""

    sent: list[Message] = field(default_factory=list)
    received: list[Message] = field(default_factory=list)

    def all(self) -> list[Message]:
        """Every message, both directions."""
        return [*self.sent, *self.received]


@dataclass
class ClientAppParty:
    """One node running the real ClientApp; answers at once (``delay`` 0)."""

    name: str
    app: ClientApp
    context: Context
    traffic: Traffic
    delay: float = 0.0

    def answer(self, message: Message) -> Message:
        """The ClientApp's reply to ``message``, or its error as an error reply."""
        self.traffic.sent.append(message)
        try:
            reply = self.app(message, self.context)
        except Exception as e:  # Flower turns any handler error into an error reply
            reply = Message(Error(code=0, reason=f"{type(e).__name__}: {e}"), reply_to=message)
        self.traffic.received.append(reply)
        return reply


def message_bytes(message: Message) -> Iterator[bytes]:
    """Every byte string and text a message carries: array payloads and config values."""
    if message.has_error():
        yield (message.error.reason or "").encode()
        return
    for record in message.content.array_records.values():
        for array in record.values():
            yield bytes(array.data)
    for record in message.content.config_records.values():
        for key, value in record.items():
            yield key.encode()
            for item in value if isinstance(value, list) else [value]:
                yield item if isinstance(item, bytes) else str(item).encode()


def clientapp_grid(
    app: ClientApp,
    *,
    node_configs: Iterable[Mapping[str, str | int]],
    run_config: Mapping[str, str | int | float | bool],
) -> tuple[FakeGrid, list[ClientAppParty], Traffic]:
    """A grid (node ids 101, 102, ...) whose parties run ``app``, and their shared traffic."""
    traffic = Traffic()
    parties = [
        ClientAppParty(
            name=f"node-{101 + i}",
            app=app,
            context=Context(
                run_id=1,
                node_id=101 + i,
                node_config=dict(cfg),
                state=RecordDict(),
                run_config=dict(run_config),
            ),
            traffic=traffic,
        )
        for i, cfg in enumerate(node_configs)
    ]
    return FakeGrid(parties, clock=VirtualClock()), parties, traffic  # type: ignore[arg-type]
