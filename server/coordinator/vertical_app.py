"""The vertical run inside the Flower ServerApp: Grid messages carry the coordinator's packets."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from flwr.app import Message
from flwr.serverapp import Grid

from fedrisk.federation.run_config import FederationConfig
from fedrisk.federation.vertical import MSG_VERTICAL, Packet
from fedrisk.federation.vertical_params import params_of
from fedrisk.files import write_atomic
from secure_agg.vertical_records import packet_from_record, packet_to_record
from server.coordinator.alignment import AlignmentSettings, AlignmentSizes, align_parties
from server.coordinator.progress import ProgressLog
from server.coordinator.vertical import (
    EpochRecord,
    Exchange,
    VerticalCoordinator,
    VerticalRunError,
)
from server.coordinator.waves import SystemClock, exchange


def _grid_exchange(grid: Grid, *, timeout: float) -> Exchange:
    clock = SystemClock()

    def send(packets: Mapping[int, Packet]) -> dict[int, Packet]:
        messages = [
            Message(content=packet_to_record(p), message_type=MSG_VERTICAL, dst_node_id=node)
            for node, p in packets.items()
        ]
        replies = exchange(grid, messages, timeout=timeout, clock=clock)
        out: dict[int, Packet] = {}
        for reply in replies:
            if reply.has_error():
                raise VerticalRunError(
                    f"node {reply.metadata.src_node_id} failed a vertical step: "
                    f"{reply.error.reason}"
                )
            out[reply.metadata.src_node_id] = packet_from_record(reply.content)
        return out

    return send


def run_vertical(grid: Grid, config: FederationConfig, progress: ProgressLog) -> None:
    """Wait for the parties, train, release; write ``results.json`` for the simulation."""
    try:
        deadline = time.monotonic() + config.round_timeout
        while len(list(grid.get_node_ids())) < config.min_parties:
            if time.monotonic() > deadline:
                raise VerticalRunError(
                    f"only {len(list(grid.get_node_ids()))} parties connected; "
                    f"min-parties is {config.min_parties}"
                )
            time.sleep(0.2)

        def on_epoch(record: EpochRecord) -> None:
            progress.emit(
                "epoch", epoch=record.epoch, seconds=record.seconds, valid_auc=record.valid_auc
            )

        sizes = None
        if config.vertical_id_column:
            sizes = align_parties(
                grid,
                AlignmentSettings(
                    guest=config.vertical_guest,
                    id_column=config.vertical_id_column,
                    id_kind=config.vertical_id_kind,
                ),
                run_id=config.run_id,
                timeout=config.round_timeout,
                progress=progress,
            )
        coordinator = VerticalCoordinator(
            params_of(config),
            exchange=_grid_exchange(grid, timeout=config.round_timeout),
            model_id=config.run_id or "vertical",
            on_epoch=on_epoch,
        )
        result = coordinator.run(sorted(grid.get_node_ids()))
    except Exception as e:
        progress.emit("failed", reason=f"{type(e).__name__}: {e}")
        raise
    if config.server_path is not None:
        write_atomic(
            config.server_path / "results.json",
            json.dumps(
                {
                    "run_id": config.run_id,
                    "he": True,
                    **result.as_dict(),
                    "alignment": _sizes(sizes),
                },
                indent=2,
            ),
        )
    progress.emit("finished")


def _sizes(sizes: AlignmentSizes | None) -> dict[str, object] | None:
    """The set and intersection sizes, all the coordinator learnt from alignment."""
    if sizes is None:
        return None
    return {"guest_rows": sizes.guest_rows, "host_rows": sizes.host_rows, "shared": sizes.shared}
