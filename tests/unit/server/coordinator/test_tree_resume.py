"""A GBDT run whose coordinator crashed after a finished tree resumes to the same trees.

The real ClientApp answers in this process (one ``Context`` per party, as Flower keeps it for a
run) and the coordinator sums real CKKS ciphertexts with the public context only. The crashed
attempt's parties are discarded: the resumed run starts with fresh run contexts, as a new
Flower run does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from flwr.app import Message

from clients.clientapp import app
from fedrisk.federation import protocol as proto
from fedrisk.federation.run_config import FederationConfig, parse_run_config
from fedrisk.release.artifact import forest_from_artifact, load_trusted_keys, read_artifact
from secure_agg.aggregation import CkksAggregation
from secure_agg.keys import PublicContextError, load_public_context
from server.coordinator.checkpoints import CheckpointStore
from server.coordinator.progress import ProgressLog, read_events
from server.coordinator.strategy import FederationResult
from server.coordinator.tree_rounds import TreeBoosting
from simulations.runner import prepare_data
from simulations.spec import SimulationSpec
from simulations.workspace import SimWorkspace, prepare_workspace
from tests.support.clientapp_grid import ClientAppParty, Traffic, clientapp_grid
from tests.support.fake_grid import FakeGrid

pytestmark = pytest.mark.usefixtures("serverapp_identity")

SPEC = SimulationSpec(
    dataset="synthetic", parties=3, partition="quantity", model="gbdt", rounds=1, seed=4,
    trees=4, tree_depth=2, tree_bins=16,
)  # fmt: skip
TIMEOUT = 60.0
CRASH_AT_TREE = 2
"""The coordinator dies once this many trees are finished (and checkpointed)."""


class CoordinatorCrashError(RuntimeError):
    """The coordinator process dies here."""


@dataclass
class CrashingGrid:
    """The transport, until the coordinator dies pushing the first message of step ``at``."""

    grid: FakeGrid
    at: int

    def __getattr__(self, name: str) -> object:
        return getattr(self.grid, name)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str | None]:
        batch = list(messages)
        for message in batch:
            config = message.content.config_records.get(proto.CONFIG)
            step = None if config is None else config.get(proto.CFG_ROUND)
            if message.metadata.message_type == proto.MSG_TREE and step == self.at:
                raise CoordinatorCrashError(f"coordinator killed before tree step {step}")
        return self.grid.push_messages(batch)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> SimWorkspace:
    root = tmp_path_factory.mktemp("tree-resume")
    data = prepare_data(SPEC)
    return prepare_workspace(
        root / "federation",
        schema=data.dataset.schema,
        parties=data.parties,
        release_dir=root / "registry",
    )


def _config(ws: SimWorkspace, *, resume: bool) -> FederationConfig:
    return parse_run_config(
        {
            "run-id": "tree-resume",
            "model": "gbdt",
            "seed": SPEC.seed,
            "min-parties": 3,
            "release-party": "party_0",
            "public-context": str(ws.public_context),
            "sim-workspace": str(ws.root),
            "trees": SPEC.trees,
            "tree-depth": SPEC.tree_depth,
            "tree-bins": SPEC.tree_bins,
            "resume": resume,
        }
    )


def _attempt(
    ws: SimWorkspace, server_dir: Path, *, resume: bool, crash_at: int | None = None
) -> tuple[FederationResult, list[ClientAppParty], Traffic]:
    """One coordinator attempt over fresh parties; its checkpoints under ``server_dir``."""
    config = _config(ws, resume=resume)
    grid, parties, traffic = clientapp_grid(
        app,
        node_configs=[{"partition-id": i} for i in range(SPEC.parties)],
        run_config=config.to_run_config(),
    )
    strategy = TreeBoosting(
        config=config,
        summer=CkksAggregation(load_public_context(ws.public_context)),
        progress=ProgressLog(server_dir / "progress.jsonl"),
        checkpoints=CheckpointStore(server_dir / "checkpoints"),
        clock=grid.clock,
    )
    target = grid if crash_at is None else CrashingGrid(grid, crash_at)
    result = strategy.start(target, timeout=TIMEOUT)  # type: ignore[arg-type]
    return result, parties, traffic


def _trees(ws: SimWorkspace, result: FederationResult) -> list[dict[str, list[object]]]:
    trusted = load_trusted_keys(ws.trusted_keys_dir)
    artifact = read_artifact(ws.release_dir / result.release.model_id, trusted_keys=trusted)
    return [t.to_dict() for t in forest_from_artifact(artifact).forest.trees]


def _step_of(message: Message) -> int:
    return int(message.content.config_records[proto.CONFIG][proto.CFG_ROUND])  # type: ignore[arg-type]


def _tree_steps(traffic: Traffic) -> list[int]:
    return [_step_of(m) for m in traffic.sent if m.metadata.message_type == proto.MSG_TREE]


def test_resumed_gbdt_run_grows_the_uninterrupted_trees(
    workspace: SimWorkspace, tmp_path: Path
) -> None:
    # Arrange: the uninterrupted run, and the step at which tree CRASH_AT_TREE + 1 starts.
    full, _, full_traffic = _attempt(workspace, tmp_path / "full", resume=False)
    starts = [int(h["step"]) for h in full.history]
    assert len(starts) == SPEC.trees
    # A tree's report arrives the step after it finished: crash one step after that.
    crash_step = starts[CRASH_AT_TREE - 1] + 1
    with pytest.raises(CoordinatorCrashError):
        _attempt(workspace, tmp_path / "run", resume=False, crash_at=crash_step)
    saved = CheckpointStore(tmp_path / "run" / "checkpoints").latest()
    assert saved is not None and saved.enc_tree_state is not None
    assert [h["round"] for h in saved.history] == [float(CRASH_AT_TREE - 1)]
    # The checkpointed state is CKKS chunks, which the coordinator's public context cannot open.
    assert all(key == "header" or key.startswith("ckks.") for key in saved.enc_tree_state)
    with pytest.raises(PublicContextError):
        CkksAggregation(load_public_context(workspace.public_context)).decode(saved.enc_tree_state)

    # Act: resume with parties whose run contexts are empty.
    resumed, parties, traffic = _attempt(workspace, tmp_path / "run", resume=True)

    # Assert: the same trees node for node, and the same public record of every tree.
    assert _trees(workspace, resumed) == _trees(workspace, full)
    assert [(h["round"], h["auc"], h["ks"]) for h in resumed.history] == [
        (h["round"], h["auc"], h["ks"]) for h in full.history
    ]
    # The resumed attempt started after the checkpoint's step, not from the first tree.
    steps = _tree_steps(traffic)
    assert min(steps) == saved.round + 1
    assert max(steps) == max(_tree_steps(full_traffic))
    events = read_events(tmp_path / "run" / "progress.jsonl")
    assert [e["round"] for e in events if e["event"] == "resumed"] == [saved.round]
    # Only the newest tree checkpoint is kept.
    assert len(list((tmp_path / "run" / "checkpoints").glob("round-*"))) == 1
    # The checkpointed state went back only in the resumed attempt's first step.
    with_state = [
        _step_of(m) for m in traffic.sent if proto.ENC_TREE_STATE in m.content.array_records
    ]
    assert with_state == [saved.round + 1] * SPEC.parties
    assert all(p.context.state.config_records for p in parties)
