"""Real Flower simulations of the encrypted federation (ServerApp + ClientApps under flwr run)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from fedrisk.errors import SignatureError
from fedrisk.ml.features import FeatureStats
from fedrisk.ml.metrics import auc
from fedrisk.release.artifact import load_trusted_keys, pipeline_from_artifact, read_artifact
from fedrisk.release.reference import feature_reference
from secure_agg.aggregation import sum_encrypted
from secure_agg.codec import encrypt_vector
from secure_agg.keys import generate_context
from secure_agg.params import HEParams
from server.coordinator.runs import RunFailedError
from simulations.runner import (
    SimulationSpec,
    prepare_data,
    run_federation,
)

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _started_by_this_worker(pid: int) -> bool:
    """Whether ``pid`` descends from this pytest worker (always, without pytest-xdist).

    Under xdist another worker may be running a simulation of its own at the same moment. Every
    process inherits the worker's ``PYTEST_XDIST_WORKER`` and ``PYTEST_XDIST_TESTRUNUID``, even
    one that Ray re-parents.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        return True
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:  # exited meanwhile, or not ours to read
        return False
    # The run id too: a worker of an earlier test run has the same name.
    ours = [
        f"{name}={os.environ.get(name)}"
        for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_TESTRUNUID")
    ]
    return all(entry.encode() in environ for entry in ours)


def _flower_processes_left(*, settle: float = 20.0) -> list[str]:
    """Simulation SuperLinks, simulation runtimes or Ray workers still alive after the run.

    Ray's processes can take a few seconds to exit once their SuperLink is gone on a loaded
    2-core machine, so this waits up to ``settle`` seconds for them; exited processes that
    only wait to be reaped (state Z) do not count.
    """
    deadline = time.monotonic() + settle
    while True:
        out = subprocess.run(
            ["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        leftovers = [
            line.strip()
            for line in out
            if "Z" not in line.split(maxsplit=2)[1]
            and (
                ("flower-superlink" in line and "--simulation" in line)
                or "flwr-simulation" in line
                or "raylet" in line
            )
            and _started_by_this_worker(int(line.split(maxsplit=1)[0]))
        ]
        if not leftovers or time.monotonic() > deadline:
            return leftovers
        time.sleep(0.5)


@pytest.fixture(scope="module")
def encrypted_run(tmp_path_factory: pytest.TempPathFactory):
    spec = SimulationSpec(
        dataset="synthetic", parties=3, partition="by:segment", model="lr", rounds=2, seed=3
    )
    data = prepare_data(spec)
    registry = tmp_path_factory.mktemp("registry")
    events: list[dict] = []
    outcome = run_federation(spec, data, release_dir=registry, on_event=events.append)
    return spec, data, registry, outcome, events


def _summed_model_bytes(n_weights: int) -> int:
    """Bytes of a sum of three encrypted ``n * w ++ [n]`` updates (what a party decrypts)."""
    ctx = generate_context(HEParams())
    updates = [encrypt_vector(ctx, np.ones(n_weights + 1)) for _ in range(3)]
    return sum(len(chunk) for chunk in sum_encrypted(ctx, updates))


def test_encrypted_simulation_releases_a_signed_model_that_predicts(encrypted_run) -> None:
    _, data, _, outcome, events = encrypted_run

    target = data.dataset.schema.target_column
    p = pipeline_from_artifact(outcome.artifact).predict_proba(data.pooled_test)
    test_auc = auc(data.pooled_test[target].to_numpy(), p)

    assert [h["round"] for h in outcome.history] == [1, 2]
    assert all(len(h["train_parties"]) == 3 for h in outcome.history)
    # The statistics sum reaches each party once (round 1's train, before any model); after
    # that only the previous round's global model travels down, once, with the next train
    # (which also evaluates it).
    down = [h["bytes_down_per_party"] for h in outcome.history]
    assert down[0] > 0
    assert down[1] == pytest.approx(_summed_model_bytes(len(outcome.artifact.weights)), rel=0.05)
    # Each round says where its time went: its own exchange (train) fits inside the round;
    # its evaluation and metrics travelled with the later exchanges.
    for h in outcome.history:
        phases = h["phase_seconds"]
        assert set(phases) == {"train", "evaluate", "metrics", "server_sums"}
        assert all(v >= 0 for v in phases.values())
        assert phases["train"] <= h["seconds"]
    assert test_auc > 0.7
    # The pooled-histogram AUC the parties decrypted matches the exact AUC on the union.
    assert abs(outcome.history[-1]["auc"] - test_auc) < 0.002
    assert outcome.artifact.lineage.rounds == 2
    assert sorted(outcome.artifact.lineage.parties) == ["party_0", "party_1", "party_2"]
    assert outcome.artifact.he_params is not None
    assert any(e["event"] == "released" for e in events)
    assert _flower_processes_left() == []


def test_released_artifact_carries_reference_bands_of_the_pooled_histograms(
    encrypted_run,
) -> None:
    _, _, _, outcome, _ = encrypted_run

    reference = outcome.artifact.reference

    # The bands come from the final round's pooled evaluation histograms, the ones whose AUC
    # and KS the history records.
    assert reference is not None
    assert reference.auc == pytest.approx(outcome.history[-1]["auc"], abs=1e-12)
    assert reference.ks == pytest.approx(outcome.history[-1]["ks"], abs=1e-12)
    assert len(reference.shares) == len(reference.pd_edges) + 1 >= 5
    assert sum(reference.shares) == pytest.approx(1.0)
    # A riskier band defaults more often: the reference ranks as the model does.
    assert reference.bad_rates[-1] > reference.bad_rates[0]


def test_released_artifact_carries_feature_bins_of_the_encrypted_pooled_statistics(
    encrypted_run,
) -> None:
    # arrange: the plaintext oracle, the statistics of the union of the parties' training rows
    _, data, _, outcome, _ = encrypted_run
    schema = data.dataset.schema
    oracle = feature_reference(FeatureStats.from_frame(data.pooled_train, schema, n_bins=64))

    # act
    reference = outcome.artifact.reference

    # assert: the CKKS-summed, decrypted statistics give the same bins and shares
    assert reference is not None and len(reference.features) == len(oracle) >= 10
    for got, want in zip(reference.features, oracle, strict=True):
        assert (got.name, got.cuts, got.labels) == (want.name, want.cuts, want.labels)
        assert got.shares == pytest.approx(want.shares, abs=1e-9)
    income = next(f for f in reference.features if f.name == "income")
    rows = data.pooled_train["income"]
    bins = [income.bin_of(None if np.isnan(v) else float(v)) for v in rows]
    shares = np.bincount(bins, minlength=len(income.shares)) / len(rows)
    assert shares == pytest.approx(income.shares, abs=1e-9)


def test_released_artifact_signature_fails_after_one_byte_change(encrypted_run) -> None:
    _, _, registry, outcome, _ = encrypted_run
    artifact_json = outcome.artifact_dir / "artifact.json"
    original = artifact_json.read_bytes()
    index = original.index(b'"rounds":') + len(b'"rounds":')
    tampered = original[:index] + (b"9" if original[index : index + 1] != b"9" else b"8")
    tampered += original[index + 1 :]

    artifact_json.write_bytes(tampered)
    try:
        with pytest.raises(SignatureError):
            read_artifact(
                outcome.artifact_dir, trusted_keys=load_trusted_keys(registry / "trusted_keys")
            )
    finally:
        artifact_json.write_bytes(original)
    assert (
        read_artifact(
            outcome.artifact_dir, trusted_keys=load_trusted_keys(registry / "trusted_keys")
        ).model_id
        == outcome.artifact.model_id
    )


def test_encrypted_and_plaintext_federations_agree(encrypted_run, tmp_path: Path) -> None:
    spec, data, _, encrypted, _ = encrypted_run

    plain = run_federation(spec, data, release_dir=tmp_path, plaintext=True)

    np.testing.assert_allclose(encrypted.artifact.weights, plain.artifact.weights, atol=1e-5)
    assert plain.artifact.he_params is None
    assert plain.bytes_up_per_party_round < encrypted.bytes_up_per_party_round


def test_party_with_bad_data_is_excluded_and_round_completes(tmp_path: Path) -> None:
    spec = SimulationSpec(
        dataset="synthetic", parties=4, partition="iid", model="lr", rounds=1, seed=5
    )
    data = prepare_data(spec)
    bad = data.parties[3]
    numeric = next(f for f in data.dataset.schema.features if f.max is not None)
    bad.train.loc[bad.train.index[:5], numeric.name] = numeric.max + 1e6
    events: list[dict] = []

    outcome = run_federation(spec, data, release_dir=tmp_path, on_event=events.append)

    refused = [e for e in events if e["event"] == "refused"]
    assert refused, events
    assert "party_3" in refused[0]["reason"]
    assert numeric.name in refused[0]["reason"]
    assert outcome.history[0]["train_parties"] == ["party_0", "party_1", "party_2"]
    assert "party_3" not in outcome.artifact.lineage.parties
    # The three others had masked their statistics against party_3 too: the survivors revealed
    # their shares of those seeds, and the statistics sum came out exact (a wrong correction
    # leaves ~1e18 noise in every statistic and no usable model).
    unmasked = [e for e in events if e["event"] == "unmasked"]
    assert [(e["exchange"], e["dropped"]) for e in unmasked] == [("stats:1", ["party_3"])]
    assert unmasked[0]["survivors"] == ["party_0", "party_1", "party_2"]
    p = pipeline_from_artifact(outcome.artifact).predict_proba(data.pooled_test)
    assert auc(data.pooled_test[data.dataset.schema.target_column].to_numpy(), p) > 0.7
    assert outcome.artifact.lineage.secure_aggregation == "ckks+pairwise-masks threshold=2/3"


def test_two_parties_are_refused_by_the_server_config(tmp_path: Path) -> None:
    from fedrisk.errors import ConfigError
    from fedrisk.federation.run_config import parse_run_config

    with pytest.raises(ConfigError, match="min-parties must be at least 3"):
        parse_run_config({"min-parties": 2})


def test_too_few_valid_parties_fails_the_run_with_the_reason(tmp_path: Path) -> None:
    spec = SimulationSpec(
        dataset="synthetic", parties=3, partition="iid", model="lr", rounds=1, seed=6
    )
    data = prepare_data(spec)
    numeric = next(f for f in data.dataset.schema.features if f.max is not None)
    bad = data.parties[2]
    bad.train.loc[bad.train.index[:3], numeric.name] = numeric.max + 1e6

    with pytest.raises(RunFailedError, match="only 2 parties answered"):
        run_federation(spec, data, release_dir=tmp_path)
    assert _flower_processes_left() == []
