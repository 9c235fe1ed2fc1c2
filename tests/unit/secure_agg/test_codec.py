"""Ciphertext codec: chunking, ArrayRecord layout, Flower wire round trip, corrupted input."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from secure_agg.codec import (
    CKKS_DTYPE,
    CKKS_STYPE,
    HEADER_KEY,
    bytes_to_words,
    chunks_to_record,
    decrypt_record,
    decrypt_vector,
    encrypt_to_record,
    encrypt_vector,
    plain_vector_to_record,
    record_scheme,
    record_to_chunks,
    record_to_plain_vector,
    words_to_bytes,
)
from secure_agg.errors import CodecError
from secure_agg.keys import CkksContext, generate_context
from secure_agg.params import HEParams

SLOTS = 8192  # N = 8192 real values per ciphertext (complex packing)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # SEAL compresses ciphertexts with zstd


@pytest.fixture(scope="module")
def ctx() -> CkksContext:
    return generate_context(HEParams())


@pytest.fixture(scope="module")
def sample(ctx: CkksContext) -> tuple[np.ndarray, list[bytes]]:
    vec = np.random.default_rng(7).normal(size=SLOTS + 10)
    return vec, encrypt_vector(ctx, vec)


finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)


@settings(max_examples=15, deadline=None)
@given(vec=arrays(np.float64, st.integers(1, 2 * SLOTS + 3), elements=finite))
def test_encrypt_decrypt_round_trip_within_1e6(ctx: CkksContext, vec: np.ndarray) -> None:
    chunks = encrypt_vector(ctx, vec)

    out = decrypt_vector(ctx, chunks, length=vec.size)

    assert len(chunks) == -(-vec.size // SLOTS)
    assert out.shape == vec.shape
    np.testing.assert_allclose(out, vec, rtol=0, atol=1e-6)


def test_record_layout(sample: tuple[np.ndarray, list[bytes]]) -> None:
    vec, chunks = sample

    record = chunks_to_record(chunks, length=vec.size)

    assert sorted(record) == ["ckks.00000", "ckks.00001", HEADER_KEY]
    assert record[HEADER_KEY].numpy().tolist() == [2, 1, vec.size, 2]
    first = record["ckks.00000"]
    assert (first.dtype, first.stype, first.shape) == (CKKS_DTYPE, CKKS_STYPE, (len(chunks[0]),))
    assert record_scheme(record) == "ckks"
    assert record_to_chunks(record) == (chunks, vec.size)


def test_record_survives_flower_wire_serialization(
    ctx: CkksContext, sample: tuple[np.ndarray, list[bytes]]
) -> None:
    vec, chunks = sample
    record = chunks_to_record(chunks, length=vec.size)
    contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(record).items()}

    restored = inflate_object_from_contents(record.object_id, contents)

    assert isinstance(restored, ArrayRecord)
    np.testing.assert_allclose(decrypt_record(ctx, restored), vec, atol=1e-6)


def test_encrypt_to_record_and_back(ctx: CkksContext) -> None:
    vec = np.arange(10.0)

    out = decrypt_record(ctx, encrypt_to_record(ctx, vec))

    np.testing.assert_allclose(out, vec, atol=1e-6)


@pytest.mark.parametrize(
    "vec",
    [np.array([]), np.zeros((2, 2)), np.array([1.0, np.nan]), np.array([np.inf])],
    ids=["empty", "2d", "nan", "inf"],
)
def test_bad_input_vectors_are_rejected(ctx: CkksContext, vec: np.ndarray) -> None:
    with pytest.raises(CodecError, match="vec must be"):
        encrypt_vector(ctx, vec)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda b: b[: len(b) // 2],
        lambda b: b[:-1],
        lambda b: b"garbage",
        lambda b: b"",
        lambda b: b.replace(ZSTD_MAGIC, b"\x00" * 4, 1),
        lambda b: b[:-1] + b"\x00" * 64,
        lambda b: b[:5000] + bytes([b[5000] ^ 0x10]) + b[5001:],
        lambda b: b"XXXX" + b[4:],
    ],
    ids=[
        "half",
        "minus-one-byte",
        "garbage",
        "empty",
        "broken-frame",
        "trailing-junk",
        "flipped-bit",
        "wrong-magic",
    ],
)
def test_corrupted_chunk_raises_codec_error(
    ctx: CkksContext, sample: tuple[np.ndarray, list[bytes]], corrupt: object
) -> None:
    vec, chunks = sample
    bad = [corrupt(chunks[0]), chunks[1]]  # type: ignore[operator]

    with pytest.raises(CodecError):
        decrypt_vector(ctx, bad, length=vec.size)


def test_chunk_count_and_order_are_checked(
    ctx: CkksContext, sample: tuple[np.ndarray, list[bytes]]
) -> None:
    vec, chunks = sample

    with pytest.raises(CodecError, match="chunks must number 2"):
        decrypt_vector(ctx, chunks[:1], length=vec.size)
    with pytest.raises(CodecError, match="must hold 8192 values; got 10"):
        decrypt_vector(ctx, [chunks[1], chunks[0]], length=vec.size)
    with pytest.raises(CodecError, match="must hold 20 values; got 10"):
        decrypt_vector(ctx, chunks, length=SLOTS + 20)  # claims a longer last chunk


def test_chunks_to_record_checks_count_against_length(
    sample: tuple[np.ndarray, list[bytes]],
) -> None:
    _, chunks = sample

    with pytest.raises(CodecError, match="between 1 and length=1"):
        chunks_to_record(chunks, length=1)
    with pytest.raises(CodecError):
        chunks_to_record([], length=5)


def _record(sample: tuple[np.ndarray, list[bytes]]) -> ArrayRecord:
    vec, chunks = sample
    return chunks_to_record(chunks, length=vec.size)


def test_record_with_missing_or_extra_chunk_is_rejected(
    sample: tuple[np.ndarray, list[bytes]],
) -> None:
    missing = _record(sample)
    del missing["ckks.00001"]
    extra = _record(sample)
    extra["ckks.00002"] = extra["ckks.00000"]
    no_header = _record(sample)
    del no_header[HEADER_KEY]

    for record in (missing, extra):
        with pytest.raises(CodecError, match="record keys must be"):
            record_to_chunks(record)
    with pytest.raises(CodecError, match="'header'"):
        record_to_chunks(no_header)


@pytest.mark.parametrize(
    "header",
    [
        np.array([1, 1, 8202, 2], dtype=np.int64),  # version 1: TenSEAL vectors
        np.array([2, 7, 8202, 2], dtype=np.int64),
        np.array([2, 1, 8202, 0], dtype=np.int64),
        np.array([2, 1, 8202], dtype=np.int64),
        np.array([2.0, 1.0, 8202.0, 2.0]),
    ],
    ids=["version", "scheme", "zero-chunks", "short", "float"],
)
def test_bad_header_is_rejected(sample: tuple[np.ndarray, list[bytes]], header: np.ndarray) -> None:
    record = _record(sample)
    record[HEADER_KEY] = Array(header)

    with pytest.raises(CodecError, match="record"):
        record_to_chunks(record)


def test_chunk_metadata_is_checked(sample: tuple[np.ndarray, list[bytes]]) -> None:
    record = _record(sample)
    data = record["ckks.00000"].data
    record["ckks.00000"] = Array(dtype="float32", shape=(len(data),), stype=CKKS_STYPE, data=data)
    wrong_shape = _record(sample)
    wrong_shape["ckks.00000"] = Array(dtype=CKKS_DTYPE, shape=(3,), stype=CKKS_STYPE, data=data)

    with pytest.raises(CodecError, match="dtype 'ckks'"):
        record_to_chunks(record)
    with pytest.raises(CodecError, match="shape"):
        record_to_chunks(wrong_shape)


@settings(max_examples=20, deadline=None)
@given(vec=arrays(np.float64, st.integers(1, 50), elements=finite))
def test_plain_record_round_trip_is_exact(vec: np.ndarray) -> None:
    record = plain_vector_to_record(vec)

    out = record_to_plain_vector(record)

    assert record_scheme(record) == "plain"
    np.testing.assert_array_equal(out, vec)


def test_plain_and_ckks_records_are_not_interchangeable(
    sample: tuple[np.ndarray, list[bytes]],
) -> None:
    plain = plain_vector_to_record(np.ones(3))

    with pytest.raises(CodecError, match="got a plaintext record"):
        record_to_chunks(plain)
    with pytest.raises(CodecError, match="got a CKKS record"):
        record_to_plain_vector(_record(sample))


@settings(max_examples=10, deadline=None)
@given(data=st.binary(min_size=0, max_size=3 * 4 * SLOTS))
def test_bytes_travel_exactly_as_encrypted_words(ctx: CkksContext, data: bytes) -> None:
    # Arrange / act: bytes as 32-bit words, through CKKS and back.
    words = bytes_to_words(data)
    decrypted = decrypt_record(ctx, encrypt_to_record(ctx, words))

    # Assert: every byte back, though each value came back only approximately.
    assert words_to_bytes(decrypted) == data


@pytest.mark.parametrize(
    "vec",
    [np.zeros(0), np.array([9.0, 1.0]), np.array([2.0, -1.0]), np.array([4.0, 2.0**32])],
)
def test_words_that_are_not_bytes_are_rejected(vec: np.ndarray) -> None:
    with pytest.raises(CodecError, match="words must"):
        words_to_bytes(vec)
