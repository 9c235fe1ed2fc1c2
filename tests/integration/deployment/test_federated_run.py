"""The full deployed path with real processes: provision, key ceremony, TLS SuperLink, three
authenticated SuperNodes, an encrypted run, the signed artifact; then dropout and resume.

One federation serves the module: an LR run, a differentially private run with self masks and
its privacy record, a small boosted-trees run on the same SuperLink and SuperNodes, whose
released trees are the central fit's, and last a boosted-trees run whose SuperLink is killed
after its first tree and which ``fedrisk run --resume`` finishes with the same trees."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from fedrisk.data.datasets import load_dataset
from fedrisk.data.partitions import PartyData, parse_partition, partition_frame
from fedrisk.data.schema import DatasetSchema
from fedrisk.ml.trees import tree_params_of
from fedrisk.release.artifact import (
    ModelArtifact,
    forest_from_artifact,
    load_trusted_keys,
    read_artifact,
)
from server.coordinator.checkpoints import CheckpointStore
from server.coordinator.deployed_runs import resumable_run
from server.coordinator.progress import read_events
from server.coordinator.superlink import running_superlink
from simulations.deployment import LocalDeployment, coordinator_files, running_federation
from tests.support.processes import wait_for
from tests.support.trees import central_trees

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def synthetic_parties() -> tuple[DatasetSchema, list[PartyData]]:
    rng = np.random.default_rng(11)
    dataset = load_dataset("synthetic", rng=rng, n_rows=6000)
    parties = partition_frame(
        dataset.frame, dataset.schema, parse_partition("by:segment"), n_parties=3, rng=rng
    )
    return dataset.schema, list(parties)


@pytest.fixture(scope="module")
def fed(
    tmp_path_factory: pytest.TempPathFactory,
    synthetic_parties: tuple[DatasetSchema, list[PartyData]],
) -> Iterator[LocalDeployment]:
    """The module's federation: started once, stopped (every process by PID) at the end."""
    schema, parties = synthetic_parties
    root = tmp_path_factory.mktemp("deployed") / "fed"
    with running_federation(root, schema=schema, parties=parties) as deployment:
        yield deployment


def released_artifact(fed: LocalDeployment, events: list[dict]) -> ModelArtifact:
    released = [e for e in events if e["event"] == "released"]
    assert len(released) == 1, released
    return read_artifact(
        fed.release_dir / released[0]["model_id"],
        trusted_keys=load_trusted_keys(fed.release_dir / "trusted_keys"),
    )


def test_three_party_encrypted_run_releases_a_verified_artifact(
    fed: LocalDeployment, synthetic_parties: tuple[DatasetSchema, list[PartyData]]
) -> None:
    _, parties = synthetic_parties
    events: list[dict] = []

    deployed, _ = fed.run(rounds=3, on_event=events.append)

    rounds = [e for e in events if e["event"] == "round"]
    assert [e["round"] for e in rounds] == [1, 2, 3]
    assert all(len(e["train_parties"]) == 3 for e in rounds)
    artifact = released_artifact(fed, events)
    assert artifact.lineage.rounds == 3
    assert artifact.privacy is None
    assert sorted(artifact.lineage.parties) == sorted(p.name for p in parties)
    assert rounds[-1]["auc"] > 0.7
    # Checkpoints on the coordinator's disk hold ciphertexts only.
    assert CheckpointStore(deployed.run_dir / "checkpoints").latest().round == 3
    for path in coordinator_files(fed):
        data = path.read_bytes()
        assert b"PRIVATE KEY" not in data or path.name in ("ca.key", "superlink.key"), path
        assert b"customer_id" not in data or path.suffix == ".toml", path


def test_a_private_run_with_self_masks_records_its_privacy_spend(
    fed: LocalDeployment, synthetic_parties: tuple[DatasetSchema, list[PartyData]]
) -> None:
    _, parties = synthetic_parties
    events: list[dict] = []

    # DP-SGD at every party under an ε = 3 budget, and self masks besides the pairwise ones
    # (every exchange then unmasked by query.unmask).
    fed.mask_self = True
    try:
        fed.run(
            rounds=2,
            on_event=events.append,
            privacy={"dp_mode": "sample", "dp_epsilon": 3.0, "dp_delta": 1e-5},
        )
    finally:
        fed.mask_self = False

    # The artifact records what the accountant spent, within the budget.
    artifact = released_artifact(fed, events)
    privacy = artifact.privacy
    assert privacy is not None
    assert privacy.mode == "sample" and privacy.rounds == 2
    assert 0.0 < privacy.epsilon <= privacy.epsilon_budget == 3.0
    assert (privacy.delta, privacy.clip_norm) == (1e-5, 1.0)
    assert privacy.noise_multiplier > 0.5
    assert sorted(privacy.epsilon_per_party) == sorted(p.name for p in parties)
    assert max(privacy.epsilon_per_party.values()) == privacy.epsilon
    assert privacy.accountant.startswith("rdp (dp-accounting==")
    assert artifact.lineage.secure_aggregation == "ckks+pairwise+self-masks threshold=2/3"


def test_boosted_trees_through_the_pinned_app_are_the_central_trees(
    fed: LocalDeployment, synthetic_parties: tuple[DatasetSchema, list[PartyData]]
) -> None:
    # Arrange: a small gbdt run config, which the parties' executors check against the pin.
    schema, parties = synthetic_parties
    events: list[dict] = []

    # Act: the deployed path of `fedrisk run --model gbdt --trees 2 --tree-depth 2`.
    deployed, _ = fed.run(
        rounds=1,
        model="gbdt",
        seed=3,
        trees={"trees": 2, "tree-depth": 2, "tree-bins": 16},
        on_event=events.append,
    )

    # Assert: the signed artifact holds the trees a central fit grows over the same parties'
    # rows on the same bins, node for node.
    params = tree_params_of(deployed.config)
    assert (params.n_trees, params.max_depth, params.max_bins, params.seed) == (2, 2, 16, 3)
    central = central_trees(parties, schema, params)
    released = forest_from_artifact(released_artifact(fed, events))
    assert [t.to_dict() for t in released.forest.trees] == [t.to_dict() for t in central.trees]
    assert released.forest.base_margin == central.base_margin
    assert [e["round"] for e in events if e["event"] == "round"] == [1.0, 2.0]
    # After each tree the coordinator checkpointed the parties' state: a ciphertext.
    checkpoint = CheckpointStore(deployed.run_dir / "checkpoints").latest()
    assert checkpoint is not None and checkpoint.enc_tree_state is not None


class CoordinatorCrashedError(Exception):
    """Raised from the progress callback to stop following a run whose SuperLink was killed."""


def test_boosted_trees_killed_after_a_tree_resume_to_the_central_trees(
    fed: LocalDeployment, synthetic_parties: tuple[DatasetSchema, list[PartyData]]
) -> None:
    # Last in the module: it kills and restarts the module's SuperLink.
    schema, parties = synthetic_parties
    trees = {"trees": 4, "tree-depth": 2, "tree-bins": 16}

    # Act 1: kill the SuperLink tree (SIGKILL, as a crash) once the first tree is reported and
    # its checkpoint, the parties' boosting state as a ciphertext, is on the coordinator's disk.
    # Events arrive through a status poll that lags on a loaded machine, so a later tree may be
    # checkpointed by then: any tree checkpoint must resume to the same forest.
    def crash_after_first_tree(event: dict[str, Any]) -> None:
        if event["event"] == "round":
            store = CheckpointStore(resumable_run(fed.workspace).run_dir / "checkpoints")

            def tree_checkpointed() -> bool:
                latest = store.latest()
                return latest is not None and latest.enc_tree_state is not None

            wait_for(tree_checkpointed, timeout=60, what="the first tree's checkpoint")
            fed.kill_superlink()
            raise CoordinatorCrashedError

    with pytest.raises(CoordinatorCrashedError):
        fed.run(rounds=1, model="gbdt", seed=5, trees=trees, on_event=crash_after_first_tree)
    crashed = resumable_run(fed.workspace)
    assert running_superlink(fed.workspace) is None
    at_crash = CheckpointStore(crashed.run_dir / "checkpoints").latest()
    assert at_crash is not None and at_crash.enc_tree_state is not None
    # A tree's report arrives one step after the tree is finished and checkpointed, so the
    # checkpoint after tree k records the reports of trees 1 .. k-1.
    done_at_crash = [h["round"] for h in at_crash.history]
    assert at_crash.round >= 1 and len(done_at_crash) < trees["trees"] - 1, done_at_crash

    # Act 2: restart the SuperLink (same port and state; the SuperNodes reconnect), then
    # `fedrisk run --resume`, whose settings are the crashed run's.
    fed.start_superlink()
    events: list[dict] = []
    deployed, outcome = fed.run(rounds=1, resume=True, on_event=events.append)

    # Assert: the crashed run continued from its checkpoint, growing only the missing trees...
    assert deployed.run_dir == crashed.run_dir
    assert outcome.status == "finished:completed"
    assert [e["round"] for e in events if e["event"] == "resumed"] == [at_crash.round]
    grown = [e["round"] for e in events if e["event"] == "round"]
    assert done_at_crash + grown == [1.0, 2.0, 3.0, 4.0]
    # The steps up to the checkpoint's were not run again.
    log = read_events(deployed.progress)
    starts = [e["round"] for e in log if e["event"] == "round-start"]
    assert starts.count(at_crash.round) == 1 and starts.count(0) == 1
    # ... and released the trees an uninterrupted run releases: the central fit's, node for
    # node (the test above shows an uninterrupted deployed run equals it).
    params = tree_params_of(deployed.config)
    assert (params.n_trees, params.max_depth, params.seed) == (4, 2, 5)
    central = central_trees(parties, schema, params)
    released = forest_from_artifact(released_artifact(fed, events))
    assert [t.to_dict() for t in released.forest.trees] == [t.to_dict() for t in central.trees]
    assert released.forest.base_margin == central.base_margin
