"""EncryptedFedAvg against an in-memory grid whose parties answer with real CKKS ciphertexts.

The plaintext oracle: every round's global model is the example-weighted mean of what the
answering parties sent, each party adding its fixed step to the previous mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.serverapp import Grid

from fedrisk.federation import protocol as proto
from fedrisk.federation.run_config import FederationConfig
from secure_agg.aggregation import CkksAggregation, unweight_sum
from secure_agg.keys import CkksContext, public_context
from server.coordinator.checkpoints import CheckpointStore
from server.coordinator.progress import ProgressLog, read_events
from server.coordinator.strategy import (
    EncryptedFedAvg,
    FederationError,
    FederationResult,
    Release,
    RunState,
)
from server.coordinator.waves import QUICK_PULL, SLOW_PULL
from tests.support.fake_grid import FakeGrid, FakeParty, FloatArray, VirtualClock, oracle

pytestmark = pytest.mark.usefixtures("serverapp_identity")

TIMEOUT = 30.0
"""Virtual seconds the strategy waits for one wave's replies."""
TOL = 1e-6
"""CKKS noise on these small vectors is ~1e-9; 1e-6 is far above it and far below any step."""


@pytest.fixture(scope="module")
def crypto(secret: CkksContext) -> CkksAggregation:
    """What the parties encrypt and decrypt with (the secret context)."""
    return CkksAggregation(secret)


@pytest.fixture(scope="module")
def summer(secret: CkksContext) -> CkksAggregation:
    """What the server sums with: the public context only."""
    return CkksAggregation(public_context(secret))


def make_parties(crypto: CkksAggregation, n: int, **behaviour: dict[str, Any]) -> list[FakeParty]:
    """``n`` seeded parties ``party_0`` …; ``behaviour`` maps a party name to FakeParty options."""
    rng = np.random.default_rng(42)
    parties = []
    for i in range(n):
        name = f"party_{i}"
        parties.append(
            FakeParty(
                name=name,
                crypto=crypto,
                n_examples=100 * (i + 1),
                step=rng.normal(size=4),
                hist=np.array([float(i + 1), 10.0 * (i + 1)]),
                **behaviour.get(name, {}),
            )
        )
    return parties


def make_strategy(
    summer: CkksAggregation,
    tmp_path: Path,
    clock: VirtualClock,
    *,
    rounds: int,
    resume: bool = False,
    cls: type[EncryptedFedAvg] = EncryptedFedAvg,
) -> EncryptedFedAvg:
    """A strategy over three or more parties, keeping its files under ``tmp_path``."""
    config = FederationConfig(
        run_id="run-test", rounds=rounds, min_parties=3, release_party="party_0", resume=resume
    )
    return cls(
        config=config,
        summer=summer,
        progress=ProgressLog(tmp_path / "progress.jsonl"),
        checkpoints=CheckpointStore(tmp_path / "checkpoints"),
        clock=clock,
    )


def run(
    summer: CkksAggregation,
    tmp_path: Path,
    parties: list[FakeParty],
    *,
    rounds: int,
    resume: bool = False,
) -> FederationResult:
    """Start a strategy over ``parties`` on a fresh virtual clock."""
    clock = VirtualClock()
    strategy = make_strategy(summer, tmp_path, clock, rounds=rounds, resume=resume)
    return strategy.start(FakeGrid(parties, clock=clock), timeout=TIMEOUT)


def decrypted_model(crypto: CkksAggregation, result: FederationResult) -> FloatArray:
    weights, _ = unweight_sum(crypto.decode(result.enc_global))
    return weights


def test_rounds_sum_encrypted_updates_into_the_plaintext_model(
    crypto: CkksAggregation, summer: CkksAggregation, tmp_path: Path
) -> None:
    # Arrange
    parties = make_parties(crypto, 3)

    # Act
    result = run(summer, tmp_path, parties, rounds=3)

    # Assert: the model, the metrics and the statistics are the plaintext sums.
    np.testing.assert_allclose(
        decrypted_model(crypto, result), oracle([parties] * 3), rtol=0, atol=TOL
    )
    names = ["party_0", "party_1", "party_2"]
    assert [h["round"] for h in result.history] == [1, 2, 3]
    for h in result.history:
        assert h["train_parties"] == h["eval_parties"] == names
        assert h["dropped"] == []
        assert h["auc"] == pytest.approx(1 + 2 + 3, abs=TOL)
        assert h["ks"] == pytest.approx(10 + 20 + 30, abs=TOL)
        assert set(h["phase_seconds"]) == {"train", "evaluate", "metrics", "server_sums"}
    assert sorted(result.metrics) == [1, 2, 3]
    checkpoint = CheckpointStore(tmp_path / "checkpoints").latest()
    assert checkpoint is not None and checkpoint.round == 3
    assert checkpoint.history == list(result.history)
    np.testing.assert_allclose(crypto.decode(checkpoint.enc_stats), [600.0, 66.0], rtol=0, atol=TOL)
    # One message per party per round: train (which evaluates the previous round's model)
    # to every party; then the final evaluation and the release.
    for party in parties:
        kinds = [m.metadata.message_type for m in party.received]
        release = [proto.MSG_RELEASE] if party.name == "party_0" else []
        assert kinds == [proto.MSG_STATS] + [proto.MSG_TRAIN] * 3 + [proto.MSG_EVALUATE] + release
        trains = [m for m in party.received if m.metadata.message_type == proto.MSG_TRAIN]
        # The statistics sum travels once (round 1, which has no model yet); each later
        # round carries only the previous round's model, which it trains on and evaluates.
        # party_0 (the release party) also decrypts round 1's pooled histograms in round 3.
        pooled = [proto.ENC_POOLED_HIST] if party.name == "party_0" else []
        assert [sorted(m.content.array_records) for m in trains] == [
            [proto.ENC_STATS],
            [proto.ENC_GLOBAL],
            sorted([proto.ENC_GLOBAL, *pooled]),
        ]
        evaluates = [
            bool(m.content.config_records[proto.CONFIG].get(proto.CFG_EVALUATE)) for m in trains
        ]
        assert evaluates == [False, True, True]
    # Compressed ciphertexts differ by a few hundred bytes from round to round.
    down = [h["bytes_down_per_party"] for h in result.history]
    assert down[0] > 0 and abs(down[2] - down[1]) < down[1] / 10
    # Round r's metrics are in two exchanges after it trained: the last two come with the
    # final evaluation and with the release.
    kinds = [(e["event"], e.get("round")) for e in read_events(tmp_path / "progress.jsonl")]
    assert kinds == [
        ("stats", None),
        ("round-start", 1),
        ("round-start", 2),
        ("round-start", 3),
        ("round", 1),
        ("round", 2),
        ("round", 3),
        ("released", None),
    ]
    assert result.release == Release(party="party_0", model_id="model-party_0-3")


@pytest.mark.parametrize(("delay", "pull"), [(0.05, QUICK_PULL), (3.0, SLOW_PULL)])
def test_replies_are_pulled_every_20_ms_then_four_times_a_second(
    crypto: CkksAggregation,
    summer: CkksAggregation,
    tmp_path: Path,
    delay: float,
    pull: float,
) -> None:
    parties = make_parties(crypto, 3, party_2={"delay": delay})

    result = run(summer, tmp_path, parties, rounds=1)

    # The slowest reply is ready ``delay`` virtual seconds after the push; the wave ends at
    # the first pull after that.
    phases = result.history[0]["phase_seconds"]
    for phase in ("train", "evaluate"):
        assert delay <= phases[phase] <= delay + pull + 1e-9, (phase, phases)


def test_silent_party_is_dropped_after_the_round_timeout(
    crypto: CkksAggregation, summer: CkksAggregation, tmp_path: Path
) -> None:
    # Arrange: party_3's SuperNode dies before round 2; three parties must answer.
    parties = make_parties(crypto, 4, party_3={"silent_from_round": 2})

    # Act
    result = run(summer, tmp_path, parties, rounds=3)

    # Assert: dropped from rounds 2 and 3 after waiting the timeout for each wave, not longer.
    first, second, third = result.history
    assert first["dropped"] == [] and first["phase_seconds"]["train"] < 1.0
    for later in (second, third):
        assert later["dropped"] == ["party_3"]
        assert later["train_parties"] == later["eval_parties"] == ["party_0", "party_1", "party_2"]
        for phase in ("train", "evaluate"):
            assert later["phase_seconds"][phase] == pytest.approx(TIMEOUT)
    np.testing.assert_allclose(
        decrypted_model(crypto, result),
        oracle([parties, parties[:3], parties[:3]]),
        rtol=0,
        atol=TOL,
    )


def test_dropout_below_min_parties_fails_the_run_with_the_reason(
    crypto: CkksAggregation, summer: CkksAggregation, tmp_path: Path
) -> None:
    parties = make_parties(crypto, 3, party_2={"silent_from_round": 2})

    with pytest.raises(
        FederationError,
        match=r"round 2 train: only 2 parties answered; min-parties is 3\. "
        r"Failures: none \(timeouts\)",
    ):
        run(summer, tmp_path, parties, rounds=3)

    checkpoint = CheckpointStore(tmp_path / "checkpoints").latest()
    assert checkpoint is not None and checkpoint.round == 1


def test_too_few_connected_parties_fail_after_the_timeout(
    crypto: CkksAggregation, summer: CkksAggregation, tmp_path: Path
) -> None:
    clock = VirtualClock()
    strategy = make_strategy(summer, tmp_path, clock, rounds=1)

    with pytest.raises(FederationError, match="only 2 parties connected within 30s"):
        strategy.start(FakeGrid(make_parties(crypto, 2), clock=clock), timeout=TIMEOUT)

    events = read_events(tmp_path / "progress.jsonl")
    assert {(e["event"], e["connected"], e["needed"]) for e in events} == {("waiting", 2, 3)}
    assert TIMEOUT <= clock.now <= TIMEOUT + 1.0


def test_resume_continues_at_the_next_round_and_equals_an_uninterrupted_run(
    crypto: CkksAggregation, summer: CkksAggregation, tmp_path: Path
) -> None:
    # Arrange: the oracle run, and a run that fails in round 2 after checkpointing round 1.
    full = run(summer, tmp_path / "full", make_parties(crypto, 3), rounds=3)
    crashing = make_parties(crypto, 3, party_2={"silent_from_round": 2})
    with pytest.raises(FederationError):
        run(summer, tmp_path / "run", crashing, rounds=3)

    # Act: resume with fresh party processes (their record caches are empty).
    resumed = run(summer, tmp_path / "run", make_parties(crypto, 3), rounds=3, resume=True)

    # Assert
    assert [h["round"] for h in resumed.history] == [1, 2, 3]
    # Round 1 was checkpointed awaiting its evaluation, which the resumed attempt folds into
    # round 2: its metrics, like rounds 2 and 3's, come in during the resumed attempt.
    assert sorted(resumed.metrics) == [1, 2, 3]
    events = read_events(tmp_path / "run" / "progress.jsonl")
    marks = [(e["event"], e.get("round")) for e in events if e["event"] in ("round", "resumed")]
    assert marks == [("resumed", 1), ("round", 1), ("round", 2), ("round", 3)]
    for again, h in zip(resumed.history, full.history, strict=True):
        for key in ("round", "train_parties", "eval_parties", "dropped"):
            assert again[key] == h[key]
        assert again["auc"] == pytest.approx(h["auc"], abs=TOL)
    np.testing.assert_allclose(
        decrypted_model(crypto, resumed), decrypted_model(crypto, full), rtol=0, atol=TOL
    )


def test_party_that_lost_its_records_is_sent_them_in_full(
    crypto: CkksAggregation, summer: CkksAggregation, tmp_path: Path
) -> None:
    parties = make_parties(crypto, 3, party_1={"forgets_at_round": 2})

    result = run(summer, tmp_path, parties, rounds=2)

    resent = [e for e in read_events(tmp_path / "progress.jsonl") if e["event"] == "resent"]
    assert [(e["phase"], e["parties"]) for e in resent] == [(proto.MSG_TRAIN, ["party_1"])]
    trains = [m for m in parties[1].received if m.metadata.message_type == proto.MSG_TRAIN]
    # Round 2: first with the new model only (it held the statistics sum), then again with
    # both attached.
    assert [sorted(m.content.array_records) for m in trains[1:]] == [
        [proto.ENC_GLOBAL],
        sorted([proto.ENC_GLOBAL, proto.ENC_STATS]),
    ]
    assert result.history[1]["train_parties"] == ["party_0", "party_1", "party_2"]
    assert result.history[1]["dropped"] == []
    np.testing.assert_allclose(
        decrypted_model(crypto, result), oracle([parties] * 2), rtol=0, atol=TOL
    )


def test_refusing_party_is_excluded_for_the_whole_run(
    crypto: CkksAggregation, summer: CkksAggregation, tmp_path: Path
) -> None:
    parties = make_parties(crypto, 4, party_3={"refuses": True})

    result = run(summer, tmp_path, parties, rounds=2)

    refused = [e for e in read_events(tmp_path / "progress.jsonl") if e["event"] == "refused"]
    assert [e["phase"] for e in refused] == ["statistics"]
    assert "party_3: column x out of range" in refused[0]["reason"]
    assert [m.metadata.message_type for m in parties[3].received] == [proto.MSG_STATS]
    assert all(h["train_parties"] == ["party_0", "party_1", "party_2"] for h in result.history)
    np.testing.assert_allclose(
        decrypted_model(crypto, result), oracle([parties[:3]] * 2), rtol=0, atol=TOL
    )


class _RecordingRelease(EncryptedFedAvg):
    """Overrides the release hook to see what it is handed, then releases as usual."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.handed: list[RunState] = []

    def release(self, grid: Grid, state: RunState, *, timeout: float) -> Release:
        self.handed.append(state)
        return super().release(grid, state, timeout=timeout)


def test_release_hook_receives_the_final_encrypted_model(
    crypto: CkksAggregation, summer: CkksAggregation, tmp_path: Path
) -> None:
    clock = VirtualClock()
    parties = make_parties(crypto, 3)
    strategy = make_strategy(summer, tmp_path, clock, rounds=2, cls=_RecordingRelease)

    result = strategy.start(FakeGrid(parties, clock=clock), timeout=TIMEOUT)

    assert isinstance(strategy, _RecordingRelease)
    (state,) = strategy.handed
    assert state.round == 2
    assert state.enc_global is result.enc_global
    expected = oracle([parties] * 2)
    np.testing.assert_allclose(decrypted_model(crypto, result), expected, rtol=0, atol=TOL)
    # Only the release party decrypted it, and it got the same model.
    assert parties[0].released is not None
    np.testing.assert_allclose(parties[0].released, expected, rtol=0, atol=TOL)
    assert parties[1].released is None and parties[2].released is None
    assert result.release == Release(party="party_0", model_id="model-party_0-2")


def test_parties_outside_the_sample_only_evaluate_in_the_same_exchange(
    crypto: CkksAggregation, summer: CkksAggregation, tmp_path: Path
) -> None:
    # Arrange: four parties, three trained per round (rotating), all four evaluate.
    parties = make_parties(crypto, 4)
    clock = VirtualClock()
    config = FederationConfig(
        run_id="run-test", rounds=2, min_parties=3, release_party="party_0", fraction=0.75
    )
    strategy = EncryptedFedAvg(
        config=config,
        summer=summer,
        progress=ProgressLog(tmp_path / "progress.jsonl"),
        clock=clock,
    )

    # Act
    result = strategy.start(FakeGrid(parties, clock=clock), timeout=TIMEOUT)

    # Assert: round 1 trains parties 0-2; round 2 trains 3, 0, 1 and party_2 only evaluates.
    first, second = result.history
    assert first["train_parties"] == ["party_0", "party_1", "party_2"]
    assert second["train_parties"] == ["party_0", "party_1", "party_3"]
    all_four = ["party_0", "party_1", "party_2", "party_3"]
    assert first["eval_parties"] == second["eval_parties"] == all_four
    kinds = [m.metadata.message_type for m in parties[2].received]
    assert kinds == [proto.MSG_STATS, proto.MSG_TRAIN, proto.MSG_EVALUATE, proto.MSG_EVALUATE]
    kinds = [m.metadata.message_type for m in parties[3].received]
    assert kinds == [proto.MSG_STATS, proto.MSG_TRAIN, proto.MSG_EVALUATE]
    assert first["auc"] == pytest.approx(1 + 2 + 3 + 4, abs=TOL)
    assert second["auc"] == pytest.approx(1 + 2 + 3 + 4, abs=TOL)
    expected = oracle([parties[:3], [parties[0], parties[1], parties[3]]])
    np.testing.assert_allclose(decrypted_model(crypto, result), expected, rtol=0, atol=TOL)


def test_metrics_party_dropping_out_of_a_round_is_replaced_by_a_metrics_query(
    crypto: CkksAggregation, summer: CkksAggregation, tmp_path: Path
) -> None:
    # Arrange: party_0 decrypts the metrics; it stops answering train from round 3 on.
    parties = make_parties(crypto, 4, party_0={"silent_from_round": 3})

    # Act
    result = run(summer, tmp_path, parties, rounds=3)

    # Assert: round 1's metrics, which party_0's round-3 message carried, were asked for
    # again in a query of their own; the run completed with every round's metrics.
    assert [h["round"] for h in result.history] == [1, 2, 3]
    assert result.history[2]["dropped"] == ["party_0"]
    queries = [
        m for p in parties for m in p.received if m.metadata.message_type == proto.MSG_METRICS
    ]
    assert len(queries) == 2  # round 1's (in round 3) and round 2's (in the final evaluation)
    assert result.history[0]["auc"] == pytest.approx(1 + 2 + 3 + 4, abs=TOL)
    assert result.history[1]["auc"] == pytest.approx(2 + 3 + 4, abs=TOL)


def test_resume_from_a_checkpoint_with_nothing_pending_trains_on(
    crypto: CkksAggregation, summer: CkksAggregation, tmp_path: Path
) -> None:
    # Arrange: a finished one-round run; its last checkpoint has every round complete and
    # nothing pending, as checkpoints written before evaluation was folded into rounds.
    parties = make_parties(crypto, 3)
    run(summer, tmp_path, parties, rounds=1)
    checkpoint = CheckpointStore(tmp_path / "checkpoints").latest()
    assert checkpoint is not None and checkpoint.pending == []
    assert checkpoint.enc_pooled_hist is None

    # Act: the run extended to three rounds, resumed.
    resumed = run(summer, tmp_path, make_parties(crypto, 3), rounds=3, resume=True)

    # Assert: round 1 is not evaluated again; rounds 2 and 3 are trained, evaluated, released.
    assert [h["round"] for h in resumed.history] == [1, 2, 3]
    assert sorted(resumed.metrics) == [2, 3]
    expected = oracle([parties] * 3)
    np.testing.assert_allclose(decrypted_model(crypto, resumed), expected, rtol=0, atol=TOL)
