"""Encrypted weighted aggregation against the plaintext weighted average (the oracle)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_agg.aggregation import (
    CkksAggregation,
    InsecurePlainAggregation,
    VectorAggregation,
    sum_encrypted,
    sum_encrypted_records,
    sum_plain_insecure,
    unweight_sum,
    weight_update,
)
from secure_agg.codec import (
    chunks_to_record,
    decrypt_vector,
    encrypt_to_record,
    encrypt_vector,
    plain_vector_to_record,
)
from secure_agg.errors import AggregationError, CodecError, PublicContextError
from secure_agg.keys import CkksContext, generate_context
from secure_agg.params import HEParams


def _oracle(vectors: list[np.ndarray], counts: list[int]) -> np.ndarray:
    return np.average(np.stack(vectors), axis=0, weights=np.array(counts, dtype=np.float64))


@st.composite
def party_updates(draw: st.DrawFn) -> tuple[list[np.ndarray], list[int]]:
    n_parties = draw(st.integers(3, 5))
    length = draw(st.integers(1, 5000))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    vectors = [rng.normal(scale=scale, size=length) for _ in range(n_parties)]
    counts = draw(st.lists(st.integers(1, 100_000), min_size=n_parties, max_size=n_parties))
    return vectors, counts


@settings(max_examples=12, deadline=None)
@given(case=party_updates())
def test_encrypted_weighted_mean_matches_plaintext_oracle(
    secret_ctx: CkksContext,
    server_ctx: CkksContext,
    case: tuple[list[np.ndarray], list[int]],
) -> None:
    vectors, counts = case
    updates = [
        encrypt_vector(secret_ctx, weight_update(v, n))
        for v, n in zip(vectors, counts, strict=True)
    ]

    enc_total = sum_encrypted(server_ctx, updates)
    mean, total_n = unweight_sum(decrypt_vector(secret_ctx, enc_total, length=vectors[0].size + 1))

    assert total_n == sum(counts)
    np.testing.assert_allclose(mean, _oracle(vectors, counts), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["ckks", "plain"])
def test_both_modes_give_the_same_weighted_mean(
    secret_ctx: CkksContext, server_ctx: CkksContext, mode: str
) -> None:
    rng = np.random.default_rng(3)
    vectors = [rng.normal(size=6000) for _ in range(4)]
    counts = [120, 5, 9000, 33]
    party: VectorAggregation
    server: VectorAggregation
    if mode == "ckks":
        party, server = CkksAggregation(secret_ctx), CkksAggregation(server_ctx)
    else:
        party = server = InsecurePlainAggregation()
    records = [party.encode(weight_update(v, n)) for v, n in zip(vectors, counts, strict=True)]

    mean, total_n = unweight_sum(party.decode(server.sum_records(records)))

    assert party.secure is (mode == "ckks")
    assert total_n == 9158
    np.testing.assert_allclose(mean, _oracle(vectors, counts), rtol=0, atol=1e-6)


def test_server_side_aggregation_cannot_decode(
    secret_ctx: CkksContext, server_ctx: CkksContext
) -> None:
    server = CkksAggregation(server_ctx)
    records = [encrypt_to_record(secret_ctx, weight_update([1.0, 2.0], n)) for n in (1, 2, 3)]
    total = server.sum_records(records)

    with pytest.raises(PublicContextError):
        server.decode(total)


def test_fewer_than_three_parties_are_refused_by_default(secret_ctx: CkksContext) -> None:
    updates = [encrypt_vector(secret_ctx, [float(i)]) for i in range(2)]

    with pytest.raises(AggregationError, match="at least 3 parties"):
        sum_encrypted(secret_ctx, updates)
    with pytest.raises(AggregationError, match="at least 3 parties"):
        sum_plain_insecure([np.ones(2), np.ones(2)])
    total = sum_encrypted(secret_ctx, updates, min_parties=2)

    np.testing.assert_allclose(decrypt_vector(secret_ctx, total, length=1), [1.0], atol=1e-6)


def test_replayed_update_is_refused(secret_ctx: CkksContext) -> None:
    one = encrypt_vector(secret_ctx, [1.0, 2.0])
    other = encrypt_vector(secret_ctx, [1.0, 2.0])

    with pytest.raises(AggregationError, match="1 replayed"):
        sum_encrypted(secret_ctx, [one, other, one])


def test_mismatched_update_shapes_are_refused(secret_ctx: CkksContext) -> None:
    short = encrypt_vector(secret_ctx, np.ones(3))
    long = encrypt_vector(secret_ctx, np.ones(9000))  # two chunks of 8192
    longer_tail = encrypt_vector(secret_ctx, np.ones(4))

    with pytest.raises(AggregationError, match="same non-zero number of chunks"):
        sum_encrypted(secret_ctx, [short, short[:], long])
    with pytest.raises(AggregationError, match="chunk 0"):
        sum_encrypted(secret_ctx, [short, encrypt_vector(secret_ctx, np.ones(3)), longer_tail])
    with pytest.raises(AggregationError, match="same length"):
        sum_encrypted_records(
            secret_ctx,
            [
                chunks_to_record(short, length=3),
                chunks_to_record(encrypt_vector(secret_ctx, np.ones(3)), length=3),
                chunks_to_record(longer_tail, length=4),
            ],
        )


def test_plain_records_are_refused_by_the_secure_server(server_ctx: CkksContext) -> None:
    records = [plain_vector_to_record(np.ones(3)) for _ in range(3)]

    with pytest.raises(CodecError, match="got a plaintext record"):
        CkksAggregation(server_ctx).sum_records(records)


def test_sum_decrypted_with_the_wrong_key_is_detected(secret_ctx: CkksContext) -> None:
    other_ctx = generate_context(HEParams())
    updates = [encrypt_vector(secret_ctx, weight_update(np.ones(3), 10)) for _ in range(3)]
    total = sum_encrypted(secret_ctx, updates)

    garbage = decrypt_vector(other_ctx, total, length=4)

    with pytest.raises(AggregationError, match="positive integer"):
        unweight_sum(garbage)


def test_weight_update_appends_the_count() -> None:
    out = weight_update(np.array([0.5, -1.0]), 4)

    np.testing.assert_array_equal(out, [2.0, -4.0, 4.0])
    assert out.dtype == np.float64


@pytest.mark.parametrize(
    ("vec", "n", "fragment"),
    [
        ([1.0], 0, "n_examples must be >= 1"),
        ([1.0], 2.5, "n_examples must be an int"),
        ([1.0], True, "n_examples must be an int"),
        ([], 3, "vec must be a non-empty finite 1-D array"),
        ([np.nan], 3, "NaN/inf"),
    ],
)
def test_weight_update_rejects_bad_input(vec: list[float], n: object, fragment: str) -> None:
    with pytest.raises(AggregationError, match=fragment):
        weight_update(vec, n)  # type: ignore[arg-type]


@pytest.mark.parametrize("total", [[1.0, 0.0], [1.0, -3.0], [1.0, 2.4], [1.0, np.nan], [5.0]])
def test_unweight_sum_rejects_an_implausible_count(total: list[float]) -> None:
    with pytest.raises(AggregationError):
        unweight_sum(total)


def test_unweight_sum_divides_by_the_rounded_count() -> None:
    mean, n = unweight_sum([10.0, -5.0, 5.0000000123])

    assert n == 5
    np.testing.assert_array_equal(mean, [2.0, -1.0])
