"""FedYogi at the parties: the optimiser's state rides in the aggregate, so a restarted party or a
resumed coordinator continues from the last global sum alone."""

from __future__ import annotations

import numpy as np
import pytest

from fedrisk.data.datasets import load_dataset
from fedrisk.data.partitions import parse_partition, partition_frame
from fedrisk.federation.run_config import FederationConfig
from secure_agg.aggregation import unweight_sum
from tests.support.party_rounds import PartyRounds


@pytest.fixture(scope="module")
def rounds(tmp_path_factory: pytest.TempPathFactory) -> PartyRounds:
    data = load_dataset("synthetic", rng=np.random.default_rng(0), n_rows=900)
    parties = partition_frame(
        data.frame, data.schema, parse_partition("quantity"), n_parties=3,
        rng=np.random.default_rng(1),
    )  # fmt: skip
    federation = FederationConfig(
        model="mlp", hidden=(8,), seed=3, optimizer="sgd", learning_rate=0.1, proximal_mu=0.01,
        server_optimizer="fedyogi", server_learning_rate=0.05,
    )  # fmt: skip
    return PartyRounds(
        tmp_path_factory.mktemp("yogi"), schema=data.schema, parties=parties, federation=federation
    )


def test_a_resumed_run_continues_from_the_last_global_sum_alone(rounds: PartyRounds) -> None:
    # Arrange
    stats = rounds.statistics()
    straight = rounds.train(stats, None, range(1, 4))
    after_two = rounds.train(stats, None, range(1, 3))
    assert straight is not None and after_two is not None

    # Act: every party restarts (fresh objects, nothing cached) and round 3 runs from the sum
    rounds.restart()
    resumed = rounds.train(stats, after_two, range(3, 4))

    # Assert: the same run, and round 3 started from the model the server step gave
    assert resumed is not None
    np.testing.assert_array_equal(resumed, straight)
    mean, _ = unweight_sum(straight)
    weights, started_from, _m, _v = np.split(mean, 4)
    stepped = rounds.nodes[0]._global_model(after_two)
    np.testing.assert_allclose(started_from, stepped.weights, rtol=0, atol=1e-12)
    plain_average = np.split(unweight_sum(after_two)[0], 4)[0]
    assert not np.allclose(stepped.weights, plain_average)
    assert not np.array_equal(weights, started_from)
