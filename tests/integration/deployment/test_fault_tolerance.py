"""Fault tolerance of the deployed federation, with real processes on 127.0.0.1.

- A party's SuperNode is killed mid-round (SIGKILL of its whole process tree, as a crash): the
  round completes with the remaining parties, the dropout is in the progress log, and the
  restarted party rejoins and trains on the current global model in a later round.
- The coordinator crashes mid-run (SIGKILL of the SuperLink tree, ServerApp included): after a
  restart on the same state database, ``--resume`` continues from the last ciphertext
  checkpoint, no completed round is lost or repeated, and the released model equals that of an
  uninterrupted run with the same seed and parties.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedrisk.data.datasets import load_dataset
from fedrisk.data.partitions import PartyData, parse_partition, partition_frame
from fedrisk.data.schema import DatasetSchema
from fedrisk.federation.processes import is_alive
from fedrisk.release.artifact import ModelArtifact, load_trusted_keys, read_artifact
from secure_agg.codec import record_scheme
from server.coordinator.checkpoints import CheckpointStore
from server.coordinator.deployed_runs import resumable_run
from server.coordinator.progress import read_events
from server.coordinator.provisioning import WorkspaceLayout
from server.coordinator.runs import run_status
from server.coordinator.superlink import CONNECTION_NAME, running_superlink
from simulations.deployment import LocalDeployment, running_federation
from tests.support.processes import read_log, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROUND_TIMEOUT = 60.0
"""Seconds the server waits for a phase's replies: a crashed party costs this much once."""

RUN_TIMEOUT = 1500.0
"""Upper bound on one run's wall time on a loaded 2-core machine (a round takes ~1 min there)."""

RESTART_TIMEOUT = 3 * ROUND_TIMEOUT
"""Bound on restarting a crashed party (its old node expires within 2 heartbeats, 60 s)."""

SEED = 7
ROUNDS_WITH_CRASH = 6
"""The victim is killed in round 2 and must train again by the last round (a round is one
exchange of a few seconds, so rounds 3-6 leave its restart room on a loaded machine)."""
RECEIVED_TRAIN = "Receiving: train message"
SENT_TRAIN = "Sending: train message"


def synthetic_parties(
    n_parties: int, *, seed: int, partition: str
) -> tuple[DatasetSchema, list[PartyData]]:
    """Seeded synthetic bank / e-commerce / telecom parties (small: the rounds are the cost)."""
    rng = np.random.default_rng(seed)
    dataset = load_dataset("synthetic", rng=rng, n_rows=1500 * n_parties)
    parties = partition_frame(
        dataset.frame, dataset.schema, parse_partition(partition), n_parties=n_parties, rng=rng
    )
    return dataset.schema, list(parties)


def released_artifact(fed: LocalDeployment, events: list[dict[str, Any]]) -> ModelArtifact:
    """The signed artifact a run released, verified against the parties' keys."""
    released = [e for e in events if e["event"] == "released"]
    assert len(released) == 1, f"exactly one release expected; got {released}"
    return read_artifact(
        fed.release_dir / released[0]["model_id"],
        trusted_keys=load_trusted_keys(fed.release_dir / "trusted_keys"),
    )


def round_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "round"]


class PartyCrasher:
    """Crashes a party as soon as its ``nth`` train message arrives, then restarts it.

    A thread tails the party's SuperNode log (0.1 s polls), so the kill lands while the
    ClientApp is still starting up or training, whatever the coordinator's polling latency.
    The restart retries until the SuperLink accepts the node again, which it does only once
    the crashed node's heartbeat has expired (``LocalDeployment.restart_party``).
    """

    def __init__(self, fed: LocalDeployment, party: str, *, nth: int, timeout: float) -> None:
        self.fed = fed
        self.party = party
        self.nth = nth
        self.timeout = timeout
        self.log_path = fed.supernodes[party].log_path
        self.replies_before_kill: int | None = None
        self.killed_at: float | None = None
        self.rejoined_at: float | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"crash-{party}", daemon=True)

    def __enter__(self) -> PartyCrasher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        # A restart in progress is waited for, so that the SuperNode it starts is in
        # fed.supernodes before the federation is stopped.
        self._thread.join(timeout=RESTART_TIMEOUT + 60)
        assert not self._thread.is_alive(), "the crasher thread must finish"
        if self.error is not None and exc[0] is None:
            raise AssertionError(f"crashing {self.party} failed: {self.error!r}") from self.error

    def _watch(self) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                text = read_log(self.log_path)
                if text.count(RECEIVED_TRAIN) >= self.nth:
                    self.replies_before_kill = text.count(SENT_TRAIN)
                    self.fed.kill_party(self.party)
                    self.killed_at = time.time()
                    self.fed.restart_party(self.party, timeout=RESTART_TIMEOUT)
                    self.rejoined_at = time.time()
                    return
                self._stop.wait(0.1)
        except BaseException as e:  # re-raised in the test's thread by __exit__
            self.error = e


def test_party_killed_mid_round_is_dropped_and_rejoins_next_round(tmp_path: Path) -> None:
    # Arrange: four parties, at least three must answer each round.
    schema, parties = synthetic_parties(4, seed=5, partition="iid")
    names = sorted(p.name for p in parties)
    victim = parties[-1].name  # not the lead: the lead decrypts metrics and releases
    events: list[dict[str, Any]] = []

    with running_federation(tmp_path / "fed", schema=schema, parties=parties) as fed:
        # Act: kill the victim's SuperNode tree once its round-2 train message has arrived,
        # and restart it at once (it comes back with its registered key, as the same node).
        with PartyCrasher(fed, victim, nth=2, timeout=RUN_TIMEOUT) as crasher:
            deployed, _ = fed.run(
                rounds=ROUNDS_WITH_CRASH,
                seed=SEED,
                min_parties=3,
                round_timeout=ROUND_TIMEOUT,
                on_event=events.append,
                timeout=RUN_TIMEOUT,
            )
        artifact = released_artifact(fed, events)

    # Assert: the kill really was mid-round (the round-2 answer had not been sent).
    assert crasher.killed_at is not None, "the victim never received its round-2 train message"
    assert crasher.replies_before_kill == 1, crasher.replies_before_kill
    rounds = round_events(events)
    assert [e["round"] for e in rounds] == list(range(1, ROUNDS_WITH_CRASH + 1))
    assert rounds[0]["train_parties"] == names
    # Round 2 completed with the three others; the dropout is recorded in the progress log.
    assert rounds[1]["train_parties"] == sorted(set(names) - {victim})
    assert rounds[1]["dropped"] == [victim]
    on_disk = round_events(read_events(deployed.progress))
    assert on_disk[1]["round"] == 2 and on_disk[1]["dropped"] == [victim]
    # The others had masked round 2 against the victim too: the survivors revealed their shares
    # of those seeds (query.unmask), and round 2's sums came out exact (the later rounds train
    # on its model, and the final AUC below would be noise otherwise).
    # (Until its old node expires the victim may be sent, and miss, a later round too.)
    unmasked = [(e["exchange"], e["dropped"]) for e in events if e["event"] == "unmasked"]
    assert unmasked[0] == ("round:2", [victim])
    assert all(dropped == [victim] for _, dropped in unmasked)
    assert artifact.lineage.secure_aggregation == "ckks+pairwise-masks threshold=3/4"
    assert rounds[0]["dropped"] == rounds[-1]["dropped"] == []
    # Restarted, the party rejoined, received the current global model and trained on it in
    # the last round. Its restart is accepted within seconds of its old node expiring; round 3
    # starts the moment round 2's wait for it times out (a round is one exchange), so which
    # round it makes first is a race this test does not assert.
    assert crasher.rejoined_at is not None
    starts = {e["round"]: e["time"] for e in events if e["event"] == "round-start"}
    last = ROUNDS_WITH_CRASH
    assert crasher.rejoined_at < starts[last], "the victim came back too late for the last round"
    assert rounds[-1]["train_parties"] == names
    assert artifact.lineage.rounds == ROUNDS_WITH_CRASH
    assert sorted(artifact.lineage.parties) == names
    assert rounds[-1]["auc"] > 0.65


class CoordinatorCrashedError(Exception):
    """Raised from the progress callback to stop following a run whose SuperLink was killed."""


def test_coordinator_crash_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    schema, parties = synthetic_parties(3, seed=11, partition="by:segment")
    with running_federation(tmp_path / "fed", schema=schema, parties=parties) as fed:
        # Arrange: the oracle, an uninterrupted run with the same seed and parties.
        full_events: list[dict[str, Any]] = []
        fed.run(
            rounds=3,
            seed=SEED,
            round_timeout=ROUND_TIMEOUT,
            on_event=full_events.append,
            timeout=RUN_TIMEOUT,
        )
        uninterrupted = released_artifact(fed, full_events)

        # Act 1: the same run again; kill the SuperLink tree once round 1 is checkpointed and
        # round 2 has started (round 1's metrics come in only with round 3's exchange, so the
        # checkpoint holds round 1 awaiting its evaluation). Events reach this callback through
        # a status poll that lags by seconds on a loaded machine, so round 2 may be checkpointed
        # too by the time of the kill: either checkpoint must resume to the same model.
        first_attempt: list[dict[str, Any]] = []
        killed_pids: list[int] = []

        def crash_after_round_one(event: dict[str, Any]) -> None:
            first_attempt.append(event)
            if event["event"] == "round-start" and event["round"] == 2:
                store = resumable_run(fed.workspace).run_dir / "checkpoints"
                wait_for(
                    lambda: (store / "round-0001" / "manifest.json").exists(),
                    timeout=60,
                    what="the round-1 checkpoint",
                )
                assert fed.superlink is not None
                killed_pids.append(fed.superlink.pid)
                fed.kill_superlink()
                raise CoordinatorCrashedError

        with pytest.raises(CoordinatorCrashedError):
            fed.run(
                rounds=3,
                seed=SEED,
                round_timeout=ROUND_TIMEOUT,
                on_event=crash_after_round_one,
                timeout=RUN_TIMEOUT,
            )
        crashed = resumable_run(fed.workspace)
        assert running_superlink(fed.workspace) is None
        assert not any(is_alive(pid) for pid in killed_pids)
        at_crash = CheckpointStore(crashed.run_dir / "checkpoints").latest()
        assert at_crash is not None and at_crash.round in (1, 2), at_crash
        assert not crashed.results.exists()

        # Act 2: restart the SuperLink (same port and state database; the SuperNodes were left
        # running and reconnect by themselves), then `fedrisk run --resume`.
        executors = {party: node.executor_pid for party, node in fed.supernodes.items()}
        fed.start_superlink()
        resumed_events: list[dict[str, Any]] = []
        deployed, outcome = fed.run(
            rounds=3, resume=True, on_event=resumed_events.append, timeout=RUN_TIMEOUT
        )
        resumed = released_artifact(fed, resumed_events)
        # Every party's warm executor outlived the crash, even one whose task of the crashed
        # run the SuperNode withdrew mid-pull (a 401 once made Flower's retry SIGINT it).
        assert {p: n.executor_pid for p, n in fed.supernodes.items()} == executors
        assert all(pid is not None and is_alive(pid) for pid in executors.values())
        flower_runs = deployed.flower_run_ids
        first_status = run_status(
            connection=CONNECTION_NAME,
            flwr_home=WorkspaceLayout(fed.workspace).flwr_home,
            run_id=flower_runs[0],
        )

    # Assert: the resumed attempt continued the crashed run from its checkpoint.
    assert deployed.run_dir == crashed.run_dir
    assert len(flower_runs) == 2
    assert first_status in ("finished:failed", "finished:stopped"), first_status
    assert outcome.status == "finished:completed"
    # The checkpointed rounds were trained before the crash and evaluated after the resume
    # (metrics lag two exchanges), so every round's record comes from the resumed attempt.
    assert [e["round"] for e in round_events(resumed_events)] == [1, 2, 3]
    resumed_marks = [e for e in resumed_events if e["event"] == "resumed"]
    assert [e["round"] for e in resumed_marks] == [at_crash.round]
    # The whole progress log: the crash, 'resumed', rounds 1, 2 and 3; none twice, and no
    # checkpointed round trained again.
    log = read_events(deployed.progress)
    kinds = [(e["event"], e.get("round")) for e in log if e["event"] in ("round", "resumed")]
    assert kinds == [("resumed", at_crash.round), ("round", 1), ("round", 2), ("round", 3)]
    for trained in range(1, at_crash.round + 1):
        assert sum(1 for e in log if e["event"] == "round-start" and e["round"] == trained) == 1
    assert [m.round for m in resumed.metrics] == [1, 2, 3]
    checkpoints = CheckpointStore(deployed.run_dir / "checkpoints").latest()
    assert checkpoints is not None and checkpoints.round == 3
    assert [h["round"] for h in checkpoints.history] == [1, 2, 3]
    assert record_scheme(checkpoints.enc_global) == "ckks"
    assert record_scheme(checkpoints.enc_stats) == "ckks"
    # Same seed, same parties: the same model, up to CKKS noise (far below 1e-6).
    assert resumed.model_id != uninterrupted.model_id
    assert resumed.lineage.rounds == uninterrupted.lineage.rounds == 3
    np.testing.assert_allclose(
        np.asarray(resumed.weights), np.asarray(uninterrupted.weights), rtol=0, atol=1e-6
    )
    assert resumed.logit_offset == pytest.approx(uninterrupted.logit_offset, abs=1e-6)
