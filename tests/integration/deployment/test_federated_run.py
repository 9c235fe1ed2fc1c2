"""The full deployed path with real processes: provision, key ceremony, TLS SuperLink, three
authenticated SuperNodes, an encrypted run, the signed artifact; then dropout and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrisk.data.datasets import load_dataset
from fedrisk.data.partitions import parse_partition, partition_frame
from fedrisk.release.artifact import load_trusted_keys, read_artifact
from server.coordinator.checkpoints import CheckpointStore
from simulations.deployment import coordinator_files, running_federation

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def synthetic_parties():
    rng = np.random.default_rng(11)
    dataset = load_dataset("synthetic", rng=rng, n_rows=6000)
    parties = partition_frame(
        dataset.frame, dataset.schema, parse_partition("by:segment"), n_parties=3, rng=rng
    )
    return dataset.schema, parties


def test_three_party_encrypted_run_releases_a_verified_artifact(
    tmp_path: Path, synthetic_parties
) -> None:
    schema, parties = synthetic_parties
    events: list[dict] = []

    with running_federation(tmp_path / "fed", schema=schema, parties=parties) as fed:
        deployed, _ = fed.run(rounds=3, on_event=events.append)

    rounds = [e for e in events if e["event"] == "round"]
    assert [e["round"] for e in rounds] == [1, 2, 3]
    assert all(len(e["train_parties"]) == 3 for e in rounds)
    released = [e for e in events if e["event"] == "released"]
    artifact_dir = fed.release_dir / released[0]["model_id"]
    artifact = read_artifact(
        artifact_dir, trusted_keys=load_trusted_keys(fed.release_dir / "trusted_keys")
    )
    assert artifact.lineage.rounds == 3
    assert sorted(artifact.lineage.parties) == sorted(p.name for p in parties)
    assert rounds[-1]["auc"] > 0.7
    # Checkpoints on the coordinator's disk hold ciphertexts only.
    assert CheckpointStore(deployed.run_dir / "checkpoints").latest().round == 3
    for path in coordinator_files(fed):
        data = path.read_bytes()
        assert b"PRIVATE KEY" not in data or path.name in ("ca.key", "superlink.key"), path
        assert b"customer_id" not in data or path.suffix == ".toml", path
