"""Federated rounds of the parties' own code (``clients.party.PartyNode``) in one process.

The parties' vectors are summed in plaintext as the coordinator sums ciphertexts; everything a
party computes (statistics, preprocessing, training, the server optimiser's step, the released
pipeline) is the code each ClientApp runs. Used by tests and by ``benchmarks/client_drift.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clients.party import PARTY_CONFIG_FILE, PartyNode, load_party_config
from fedrisk.data.partitions import PartyData
from fedrisk.data.schema import DatasetSchema
from fedrisk.federation.run_config import FederationConfig
from fedrisk.ml.kinds import statistics_passes
from simulations.workspace import prepare_workspace


class PartyRounds:
    """Every party of a plaintext federation under ``root``, and the sums they decrypt."""

    def __init__(
        self,
        root: Path,
        *,
        schema: DatasetSchema,
        parties: Sequence[PartyData],
        federation: FederationConfig,
    ) -> None:
        ws = prepare_workspace(
            root / "federation", schema=schema, parties=parties, release_dir=root / "registry"
        )
        self.folders = [ws.root / "parties" / f"party_{i}" for i in range(len(parties))]
        self.federation = federation.model_copy(update={"plaintext": True})
        self.nodes = [self.node(i) for i in range(len(parties))]

    def node(self, index: int) -> PartyNode:
        """Party ``index`` as a fresh process would build it (no state kept between messages)."""
        config = load_party_config(self.folders[index] / PARTY_CONFIG_FILE)
        return PartyNode(config, self.federation)

    def restart(self) -> None:
        """Every party restarts: fresh nodes, holding only their files and keys."""
        self.nodes = [self.node(i) for i in range(len(self.nodes))]

    def pooled(self, vectors: Sequence[Any]) -> np.ndarray:
        """The sum of the parties' vectors, as each party would decrypt it."""
        return np.sum([n.decrypt(v) for n, v in zip(self.nodes, vectors, strict=True)], axis=0)

    def statistics(self) -> np.ndarray:
        """Every statistics pass of the run's model kind; the final pooled sum."""
        stats = None
        for _ in range(statistics_passes(self.federation.model)):
            stats = self.pooled([node.local_stats(stats) for node in self.nodes])
        assert stats is not None
        return stats

    def train(
        self, stats: np.ndarray, global_sum: np.ndarray | None, rounds: range
    ) -> np.ndarray | None:
        """Run ``rounds`` from ``global_sum`` (None: the seeded start); the last global sum."""
        for rnd in rounds:
            global_sum = self.pooled([node.train(stats, global_sum, rnd) for node in self.nodes])
        return global_sum
