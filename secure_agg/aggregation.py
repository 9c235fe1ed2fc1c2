"""Weighted federated sums: parties weight and encrypt, the server adds ciphertexts, never reads.

Every party sends ``weight_update(vec, n)`` = ``vec * n`` followed by ``n`` in one more slot,
encrypted. The server adds the ciphertexts with the public context (``sum_encrypted``) and never
learns a value, not even the per-party example counts. A party decrypts the sum and
``unweight_sum`` gives the example-weighted mean (FedAvg) and the total count.

The insecure plaintext counterpart (``InsecurePlainAggregation``, ``sum_plain_insecure``) exists
only to measure what encryption costs; it shows every update to the server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt
from flwr.app import ArrayRecord

from secure_agg.codec import (
    chunks_to_record,
    decrypt_record,
    encrypt_to_record,
    plain_vector_to_record,
    record_to_chunks,
    record_to_plain_vector,
)
from secure_agg.errors import AggregationError, CodecError
from secure_agg.keys import ChunkMaskSource, CkksContext

FloatVector = npt.NDArray[np.float64]

MIN_PARTIES: Final = 3
"""Fewest updates a sum accepts by default: with 2 parties each could subtract its own update
from the aggregate and read the other's."""

COUNT_TOLERANCE: Final = 0.01
"""How far the decrypted total count may sit from an integer. CKKS noise is ~1e-8; a count far off
means the ciphertext was decrypted with the wrong key or corrupted."""

MAX_TOTAL_COUNT: Final = 2.0**40
"""Largest plausible total example count (~1.1e12). A wrong key decrypts to values near 1e30,
which are whole numbers in float64, so the integer test alone would not catch them."""


def _check_parties(n_updates: int, *, min_parties: int) -> None:
    if n_updates < min_parties:
        raise AggregationError(
            f"updates must come from at least {min_parties} parties (fewer lets a party recover "
            f"another's update by subtraction); got {n_updates}"
        )


# --------------------------------------------------------------------------------------------------
# Client side: weighting
# --------------------------------------------------------------------------------------------------


def weight_update(vec: npt.ArrayLike, n_examples: int) -> FloatVector:
    """Scale an update by its example count and append the count: ``concat(vec * n, [n])``.

    Parameters
    ----------
    vec
        A party's model parameters (or any additive statistic), 1-D and finite.
    n_examples
        Examples the party trained on, >= 1.

    Notes
    -----
    Weighting happens in plaintext on the client, so the server needs no multiplication and the
    count travels encrypted with the update.
    """
    if isinstance(n_examples, bool) or not isinstance(n_examples, int | np.integer):
        raise AggregationError(f"n_examples must be an int; got {type(n_examples).__name__}")
    if n_examples < 1:
        raise AggregationError(f"n_examples must be >= 1; got {n_examples}")
    arr = np.asarray(vec, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise AggregationError(
            f"vec must be a non-empty finite 1-D array; got shape {arr.shape}"
            + ("" if arr.size == 0 or np.all(np.isfinite(arr)) else " with NaN/inf values")
        )
    n = float(n_examples)
    return np.concatenate([arr * n, np.array([n])])


def unweight_sum(total: npt.ArrayLike) -> tuple[FloatVector, int]:
    """Turn a decrypted sum of ``weight_update`` vectors into the weighted mean and total count.

    Returns
    -------
    tuple[numpy.ndarray, int]
        ``(sum(vec_i * n_i) / sum(n_i), sum(n_i))``.

    Raises
    ------
    AggregationError
        The count slot is not a positive integer (wrong key, corrupted or mismatched sum).
    """
    arr = np.asarray(total, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2:
        raise AggregationError(f"total must be a 1-D array of >= 2 values; got shape {arr.shape}")
    raw_count = float(arr[-1])
    plausible = np.isfinite(raw_count) and 1 - COUNT_TOLERANCE <= raw_count <= MAX_TOTAL_COUNT
    count = round(raw_count) if plausible else 0
    if count < 1 or abs(raw_count - count) > COUNT_TOLERANCE:
        raise AggregationError(
            "total example count must be a positive integer (was the sum decrypted with the "
            f"matching secret context?); got {raw_count!r}"
        )
    # Dividing by the exact integer count removes the CKKS noise of the count slot.
    return arr[:-1] / count, count


# --------------------------------------------------------------------------------------------------
# Server side: sums
# --------------------------------------------------------------------------------------------------


def _update_digest(chunks: Sequence[bytes]) -> bytes:
    outer = hashlib.sha256()
    for chunk in chunks:
        outer.update(hashlib.sha256(bytes(chunk)).digest())
    return outer.digest()


def sum_encrypted(
    public_ctx: CkksContext,
    updates: Sequence[Sequence[bytes]],
    *,
    min_parties: int = MIN_PARTIES,
) -> list[bytes]:
    """Add encrypted updates chunk by chunk, with the public context only.

    Parameters
    ----------
    public_ctx
        The server's context; a public one is enough (and the only kind the server may hold).
    updates
        One list of ciphertext chunks per party, as from ``encrypt_vector``.
    min_parties
        Refuse fewer updates than this (default 3; see ``MIN_PARTIES``).

    Returns
    -------
    list[bytes]
        The chunks of the encrypted sum.

    Raises
    ------
    AggregationError
        Too few parties, a replayed (byte-identical) update, or updates of different shapes.

    Notes
    -----
    CKKS encryption is randomized, so two honest updates never share bytes; an identical one is a
    replay (e.g. a party resubmitting an intercepted ciphertext) and is refused.
    """
    _check_parties(len(updates), min_parties=min_parties)
    n_chunks = {len(chunks) for chunks in updates}
    if len(n_chunks) != 1 or 0 in n_chunks:
        raise AggregationError(
            f"updates must all have the same non-zero number of chunks; got {sorted(n_chunks)}"
        )
    digests = {_update_digest(chunks) for chunks in updates}
    if len(digests) != len(updates):
        raise AggregationError(
            f"updates must be distinct ciphertexts; got {len(updates) - len(digests)} replayed"
        )
    total: list[bytes] = []
    for index in range(n_chunks.pop()):
        column = [chunks[index] for chunks in updates]
        try:
            total.append(public_ctx.add(column))
        except CodecError as e:
            raise AggregationError(f"chunk {index} of the updates cannot be summed: {e}") from e
    return total


def sum_encrypted_records(
    public_ctx: CkksContext,
    records: Sequence[ArrayRecord],
    *,
    min_parties: int = MIN_PARTIES,
) -> ArrayRecord:
    """``sum_encrypted`` over records made by ``chunks_to_record``; lengths must agree."""
    _check_parties(len(records), min_parties=min_parties)
    unpacked = [record_to_chunks(record) for record in records]
    lengths = {length for _, length in unpacked}
    if len(lengths) != 1:
        raise AggregationError(f"updates must all have the same length; got {sorted(lengths)}")
    length = lengths.pop()
    expected_chunks = -(-length // public_ctx.slots)
    if any(len(chunks) != expected_chunks for chunks, _ in unpacked):
        raise AggregationError(
            f"updates must have {expected_chunks} chunks for length {length} at "
            f"{public_ctx.slots} slots; got {sorted({len(c) for c, _ in unpacked})}"
        )
    total = sum_encrypted(public_ctx, [chunks for chunks, _ in unpacked], min_parties=min_parties)
    return chunks_to_record(total, length=length)


def sum_plain_insecure(
    updates: Sequence[npt.ArrayLike], *, min_parties: int = MIN_PARTIES
) -> FloatVector:
    """INSECURE: add plaintext float64 updates (comparison mode; the server sees every update)."""
    _check_parties(len(updates), min_parties=min_parties)
    arrays = [np.asarray(u, dtype=np.float64) for u in updates]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or next(iter(shapes)) == (0,) or arrays[0].ndim != 1:
        raise AggregationError(
            f"updates must be non-empty 1-D arrays of one length; got shapes {sorted(shapes)}"
        )
    total: FloatVector = np.sum(np.stack(arrays), axis=0)
    return total


def sum_plain_records_insecure(
    records: Sequence[ArrayRecord], *, min_parties: int = MIN_PARTIES
) -> ArrayRecord:
    """INSECURE: ``sum_plain_insecure`` over records made by ``plain_vector_to_record``."""
    vectors = [record_to_plain_vector(record) for record in records]
    return plain_vector_to_record(sum_plain_insecure(vectors, min_parties=min_parties))


# --------------------------------------------------------------------------------------------------
# One interface for both modes
# --------------------------------------------------------------------------------------------------


class VectorAggregation(Protocol):
    """How vectors travel: ``encode`` on a party, ``sum_records`` on the server, ``decode`` on a
    party. Implemented by ``CkksAggregation`` (secure) and ``InsecurePlainAggregation``."""

    @property
    def secure(self) -> bool:
        """Whether the server is unable to read what it sums."""
        ...

    def encode(self, vec: npt.ArrayLike, *, masks: ChunkMaskSource | None = None) -> ArrayRecord:
        """Pack one party's (already weighted) vector for sending, masked when ``masks`` is
        given (:mod:`secure_agg.masking`)."""
        ...

    def sum_records(
        self, records: Sequence[ArrayRecord], *, min_parties: int = MIN_PARTIES
    ) -> ArrayRecord:
        """Add the parties' records (server side)."""
        ...

    def decode(self, record: ArrayRecord) -> FloatVector:
        """Unpack a (summed) record back to floats (party side)."""
        ...


class CkksAggregation:
    """Secure mode: vectors travel as CKKS ciphertexts; the server sums with the public context.

    Parameters
    ----------
    ctx
        A party's secret context (encode and decode) or the server's public one (``sum_records``;
        ``decode`` then raises ``PublicContextError``).
    """

    def __init__(self, ctx: CkksContext) -> None:
        self._ctx = ctx

    def __repr__(self) -> str:
        return f"CkksAggregation({self._ctx!r})"

    @property
    def secure(self) -> bool:
        """Always true: the server only ever holds ciphertexts."""
        return True

    def encode(self, vec: npt.ArrayLike, *, masks: ChunkMaskSource | None = None) -> ArrayRecord:
        """Encrypt ``vec`` into a record, each chunk masked by ``masks`` if given."""
        return encrypt_to_record(self._ctx, vec, masks=masks)

    @property
    def context(self) -> CkksContext:
        """The context vectors are encrypted (or summed) with."""
        return self._ctx

    def sum_records(
        self, records: Sequence[ArrayRecord], *, min_parties: int = MIN_PARTIES
    ) -> ArrayRecord:
        """Add encrypted records without decrypting."""
        return sum_encrypted_records(self._ctx, records, min_parties=min_parties)

    def decode(self, record: ArrayRecord) -> FloatVector:
        """Decrypt a record; needs the secret context."""
        return decrypt_record(self._ctx, record)


class InsecurePlainAggregation:
    """INSECURE comparison mode: vectors travel in the clear and the server reads every update.

    Exists only to measure the cost of encryption (time, bytes, accuracy); never use with real data.
    """

    def __repr__(self) -> str:
        return "InsecurePlainAggregation()"

    @property
    def secure(self) -> bool:
        """Always false: the server sees every update."""
        return False

    def encode(self, vec: npt.ArrayLike, *, masks: ChunkMaskSource | None = None) -> ArrayRecord:
        """Pack ``vec`` as plaintext float64 (masks exist only under encryption)."""
        if masks is not None:
            raise AggregationError("masks must not be given in the plaintext comparison mode")
        return plain_vector_to_record(vec)

    def sum_records(
        self, records: Sequence[ArrayRecord], *, min_parties: int = MIN_PARTIES
    ) -> ArrayRecord:
        """Add plaintext records."""
        return sum_plain_records_insecure(records, min_parties=min_parties)

    def decode(self, record: ArrayRecord) -> FloatVector:
        """Unpack plaintext floats."""
        return record_to_plain_vector(record)
