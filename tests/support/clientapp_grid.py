"""An in-process Flower Grid that hands each message to the real ClientApp and records traffic.

Every node is the project's own ``clients.clientapp.app`` with its own ``Context`` (node config,
run config, persistent state), called as Flower's runtime calls it. A handler's exception
becomes an error reply, as in Flower. Every message the coordinator sends and every reply it
gets is kept, so tests can inspect exactly what crossed between the parties and the
coordinator.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run


@dataclass
class Traffic:
    """Everything sent to and received from the parties, in order."""

    sent: list[Message] = field(default_factory=list)
    received: list[Message] = field(default_factory=list)

    def all(self) -> list[Message]:
        """Every message, both directions."""
        return [*self.sent, *self.received]


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


class ClientAppGrid(Grid):
    """Flower's Grid over real ClientApp calls in this process.

    Node ids are 201, 202, ... in the order of ``node_configs``.
    """

    def __init__(
        self,
        app: ClientApp,
        *,
        node_configs: Iterable[Mapping[str, str | int]],
        run_config: Mapping[str, str | int | float | bool],
    ) -> None:
        self.app = app
        self.contexts = {
            201 + i: Context(
                run_id=1,
                node_id=201 + i,
                node_config=dict(cfg),
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for i, cfg in enumerate(node_configs)
        }
        self.traffic = Traffic()
        self._run = Run.create_empty(run_id=1)
        self._replies: dict[str, Message] = {}

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
        """Every node."""
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Run the ClientApp on each message now; its reply is pullable at once."""
        ids = []
        for message in messages:
            message_id = uuid.uuid4().hex
            message.metadata.__dict__["_message_id"] = message_id
            self.traffic.sent.append(message)
            context = self.contexts[message.metadata.dst_node_id]
            try:
                reply = self.app(message, context)
            except Exception as e:  # Flower turns any handler error into an error reply
                reply = Message(Error(code=0, reason=f"{type(e).__name__}: {e}"), reply_to=message)
            reply.metadata.__dict__["_src_node_id"] = message.metadata.dst_node_id
            self._replies[message_id] = reply
            self.traffic.received.append(reply)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies to ``message_ids``."""
        return [self._replies.pop(mid) for mid in list(message_ids) if mid in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Not offered: the coordinator pulls its own replies (``waves.exchange``)."""
        raise AssertionError("the coordinator must not use Grid.send_and_receive")
