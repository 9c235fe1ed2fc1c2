"""FedAdam / FedYogi at the parties: state carried in the aggregate, Reddi et al.'s step."""

from __future__ import annotations

import numpy as np
import pytest

from fedrisk.errors import ConfigError, ModelError
from fedrisk.ml.server_optimizers import BETA_1, BETA_2, TAU, ServerOptimizer
from secure_agg.aggregation import CkksAggregation, unweight_sum, weight_update
from secure_agg.keys import generate_context, public_context
from secure_agg.params import HEParams


def _round(
    opt: ServerOptimizer, trained: list[np.ndarray], counts: list[int], start: object
) -> np.ndarray:
    """The plaintext sum of the parties' weighted carried vectors (what the server sums)."""
    return np.sum(
        [weight_update(opt.carry(w, start), n) for w, n in zip(trained, counts, strict=True)],  # type: ignore[arg-type]
        axis=0,
    )


@pytest.mark.parametrize("kind", ["fedadam", "fedyogi"])
def test_state_carried_in_the_sum_gives_reddis_step(kind: str) -> None:
    # Arrange: three parties with different sizes start two rounds from the same state.
    rng = np.random.default_rng(0)
    opt = ServerOptimizer(kind, learning_rate=0.05)  # type: ignore[arg-type]
    x = rng.normal(size=7)
    start = opt.initial(x)
    counts = [100, 40, 7]
    m, v = np.zeros(7), np.full(7, TAU**2)
    for _ in range(2):
        trained = [start.weights + rng.normal(scale=0.1, size=7) for _ in counts]
        # Act: any party decrypts the sum and steps from it alone.
        mean, _ = unweight_sum(_round(opt, trained, counts, start))
        nxt = opt.step(mean)
        # Assert: the oracle, Reddi et al. (2021) Algorithm 2 on the weighted average.
        delta = np.average(trained, axis=0, weights=counts) - start.weights
        m = BETA_1 * m + (1 - BETA_1) * delta
        if kind == "fedadam":
            v = BETA_2 * v + (1 - BETA_2) * delta**2
        else:
            v = v - (1 - BETA_2) * delta**2 * np.sign(v - delta**2)
        expected = start.weights + 0.05 * m / (np.sqrt(v) + TAU)
        np.testing.assert_allclose(nxt.weights, expected, rtol=0, atol=1e-12)
        np.testing.assert_allclose(nxt.momentum, m, atol=1e-12)  # type: ignore[arg-type]
        start = nxt


def test_every_party_derives_the_same_model_from_the_ckks_sum() -> None:
    # Arrange: the parties' carried vectors, encrypted; the server sums with the public key.
    secret = generate_context(HEParams())
    party, server = CkksAggregation(secret), CkksAggregation(public_context(secret))
    opt = ServerOptimizer("fedyogi", learning_rate=0.1)
    start = opt.initial(np.linspace(-1, 1, 50))
    rng = np.random.default_rng(1)
    trained = [start.weights + rng.normal(scale=0.05, size=50) for _ in range(3)]
    counts = [500, 300, 20]
    records = [
        party.encode(weight_update(opt.carry(w, start), n))
        for w, n in zip(trained, counts, strict=True)
    ]
    enc_sum = server.sum_records(records)
    # Act: two parties decrypt the same sum independently.
    first = opt.step(unweight_sum(party.decode(enc_sum))[0])
    second = opt.step(unweight_sum(CkksAggregation(secret).decode(enc_sum))[0])
    plain = opt.step(unweight_sum(_round(opt, trained, counts, start))[0])
    # Assert: bit-identical between parties, and the plaintext step within CKKS noise.
    assert np.array_equal(first.weights, second.weights)
    np.testing.assert_allclose(first.weights, plain.weights, atol=1e-7)


def test_fedavg_carries_nothing_and_takes_the_average() -> None:
    opt = ServerOptimizer()
    start = opt.initial([1.0, 2.0])
    assert np.array_equal(opt.carry([3.0, 4.0], start), [3.0, 4.0])
    assert np.array_equal(opt.step([3.0, 4.0]).weights, [3.0, 4.0])
    assert start.momentum is None


def test_bad_settings_and_vectors_are_refused() -> None:
    with pytest.raises(ConfigError, match="server optimizer must be one of"):
        ServerOptimizer("sgd")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="server learning rate must be a positive number"):
        ServerOptimizer("fedadam", learning_rate=0.0)
    opt = ServerOptimizer("fedadam")
    with pytest.raises(ModelError, match="4 equal parts"):
        opt.step(np.zeros(6))
    with pytest.raises(ModelError, match="global model's 2 values"):
        opt.carry([1.0], opt.initial([0.0, 0.0]))
