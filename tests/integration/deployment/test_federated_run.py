"""The full deployed path with real processes: provision, key ceremony, TLS SuperLink, three
authenticated SuperNodes, an encrypted run, the signed artifact, a differentially private run on
the same federation and its privacy record; then dropout and resume."""

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

    dp_events: list[dict] = []
    with running_federation(tmp_path / "fed", schema=schema, parties=parties) as fed:
        deployed, _ = fed.run(rounds=3, on_event=events.append)
        # The same federation again, with DP-SGD at every party under an ε = 3 budget, and
        # self masks besides the pairwise ones (every exchange then unmasked by query.unmask).
        fed.mask_self = True
        fed.run(
            rounds=2,
            on_event=dp_events.append,
            privacy={"dp_mode": "sample", "dp_epsilon": 3.0, "dp_delta": 1e-5},
        )

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
    # The DP run's artifact records what the accountant spent, within the budget.
    dp_released = next(e for e in dp_events if e["event"] == "released")
    dp_artifact = read_artifact(
        fed.release_dir / dp_released["model_id"],
        trusted_keys=load_trusted_keys(fed.release_dir / "trusted_keys"),
    )
    privacy = dp_artifact.privacy
    assert privacy is not None and artifact.privacy is None
    assert privacy.mode == "sample" and privacy.rounds == 2
    assert 0.0 < privacy.epsilon <= privacy.epsilon_budget == 3.0
    assert (privacy.delta, privacy.clip_norm) == (1e-5, 1.0)
    assert privacy.noise_multiplier > 0.5
    assert sorted(privacy.epsilon_per_party) == sorted(p.name for p in parties)
    assert max(privacy.epsilon_per_party.values()) == privacy.epsilon
    assert privacy.accountant.startswith("rdp (dp-accounting==")
    assert dp_artifact.lineage.secure_aggregation == "ckks+pairwise+self-masks threshold=2/3"
