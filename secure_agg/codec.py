"""Encode float vectors as CKKS ciphertext chunks and carry them in Flower ``ArrayRecord``s.

Record layout (one ``ArrayRecord`` per encrypted vector)::

    "header"      Array(ndarray=int64[4])  [format version, scheme (1 = ckks), length, n_chunks]
    "ckks.00000"  Array(dtype="ckks", shape=(nbytes,), stype="seal.ckks", data=<ciphertext>)
    "ckks.00001"  ...                          one per chunk of ``slots`` values, the last shorter

Each ciphertext is the byte form ``secure_agg.keys`` gives it (a header with the value count and
a SHA-256, then SEAL's serialization). Format version 1 carried TenSEAL ``CKKSVector``s; its
records are refused by version rather than misread.

The insecure comparison mode uses the same header with scheme 0 and one ``"plain"`` float64 Array.
The header holds no slot count: whoever holds a context (decrypt, sum) checks the chunk count and
every chunk's size against ``ctx.slots``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from flwr.app import Array, ArrayRecord

from secure_agg.errors import CodecError
from secure_agg.keys import ChunkMaskSource, CkksContext

FloatVector = npt.NDArray[np.float64]
Scheme = Literal["ckks", "plain"]

FORMAT_VERSION: Final = 2
HEADER_KEY: Final = "header"
CHUNK_KEY_PREFIX: Final = "ckks."
PLAIN_KEY: Final = "plain"
CKKS_DTYPE: Final = "ckks"
CKKS_STYPE: Final = "seal.ckks"

_SCHEME_CODES: Final[dict[Scheme, int]] = {"plain": 0, "ckks": 1}
_HEADER_FIELDS: Final = 4


def _as_vector(vec: npt.ArrayLike, *, name: str = "vec") -> FloatVector:
    arr = np.asarray(vec, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise CodecError(f"{name} must be a non-empty 1-D array; got shape {arr.shape}")
    n_bad = int(np.count_nonzero(~np.isfinite(arr)))
    if n_bad:
        raise CodecError(f"{name} must be finite; got {n_bad} NaN/inf values of {arr.size}")
    return arr


def chunk_count(length: int, *, slots: int) -> int:
    """Number of ciphertexts needed for ``length`` values at ``slots`` values per ciphertext."""
    return math.ceil(length / slots)


def _chunk_sizes(length: int, *, slots: int) -> list[int]:
    n = chunk_count(length, slots=slots)
    return [min(slots, length - i * slots) for i in range(n)]


def encrypt_vector(
    ctx: CkksContext, vec: npt.ArrayLike, *, masks: ChunkMaskSource | None = None
) -> list[bytes]:
    """Encrypt a float vector of any length as serialized CKKS ciphertexts of ``ctx.slots`` values.

    Parameters
    ----------
    ctx
        A secret or public context (encryption needs the public key only).
    vec
        Finite floats, 1-D, non-empty.

    Returns
    -------
    list[bytes]
        ``ceil(len(vec) / slots)`` ciphertexts; the last holds the remainder.
    """
    arr = _as_vector(vec)
    slots = ctx.slots
    return [
        ctx.encrypt(
            arr[start : start + slots],
            mask=None if masks is None else masks(index, ctx.ring_moduli, ctx.poly_modulus_degree),
        )
        for index, start in enumerate(range(0, arr.size, slots))
    ]


def decrypt_vector(ctx: CkksContext, chunks: Sequence[bytes], *, length: int) -> FloatVector:
    """Decrypt ciphertext chunks made by ``encrypt_vector`` (or summed) back to ``length`` floats.

    Raises
    ------
    CodecError
        Wrong chunk count for ``length``, corrupted or truncated bytes, a chunk of the wrong size.
    PublicContextError
        ``ctx`` has no secret key.
    """
    if length < 1:
        raise CodecError(f"length must be >= 1; got {length}")
    sizes = _chunk_sizes(length, slots=ctx.slots)
    if len(chunks) != len(sizes):
        raise CodecError(
            f"chunks must number {len(sizes)} for length {length} at {ctx.slots} slots; "
            f"got {len(chunks)}"
        )
    parts = [
        ctx.decrypt(chunk, expected_size=size) for chunk, size in zip(chunks, sizes, strict=True)
    ]
    return np.concatenate(parts)


def _header_array(*, scheme: Scheme, length: int, n_chunks: int) -> Array:
    header = np.array([FORMAT_VERSION, _SCHEME_CODES[scheme], length, n_chunks], dtype=np.int64)
    return Array(header)


def chunks_to_record(chunks: Sequence[bytes], *, length: int) -> ArrayRecord:
    """Pack ciphertext chunks of a ``length``-value vector into an ``ArrayRecord``.

    Parameters
    ----------
    chunks
        Serialized ciphertexts in order, as returned by ``encrypt_vector`` or ``sum_encrypted``.
    length
        Number of plaintext values they hold.
    """
    if not 1 <= len(chunks) <= length:
        raise CodecError(f"chunks must number between 1 and length={length}; got {len(chunks)}")
    record = ArrayRecord()
    record[HEADER_KEY] = _header_array(scheme="ckks", length=length, n_chunks=len(chunks))
    for index, chunk in enumerate(chunks):
        data = bytes(chunk)
        if not data:
            raise CodecError(f"chunk {index} must be non-empty bytes; got 0 bytes")
        record[f"{CHUNK_KEY_PREFIX}{index:05d}"] = Array(
            dtype=CKKS_DTYPE, shape=(len(data),), stype=CKKS_STYPE, data=data
        )
    return record


def _read_header(record: ArrayRecord) -> tuple[Scheme, int, int]:
    if HEADER_KEY not in record:
        raise CodecError(f"record must have a {HEADER_KEY!r} array; got keys {sorted(record)}")
    try:
        header = record[HEADER_KEY].numpy()
    except (TypeError, ValueError, OSError, EOFError) as e:
        raise CodecError(
            f"record header must be a numpy int64 array; got unreadable data ({e})"
        ) from e
    if header.dtype != np.int64 or header.shape != (_HEADER_FIELDS,):
        raise CodecError(
            f"record header must be int64[{_HEADER_FIELDS}]; got {header.dtype}{list(header.shape)}"
        )
    version, code, length, n_chunks = (int(v) for v in header)
    if version != FORMAT_VERSION:
        raise CodecError(f"record format version must be {FORMAT_VERSION}; got {version}")
    schemes = {v: k for k, v in _SCHEME_CODES.items()}
    if code not in schemes:
        raise CodecError(f"record scheme code must be one of {sorted(schemes)}; got {code}")
    if not 1 <= n_chunks <= length:
        raise CodecError(
            f"record header must have 1 <= n_chunks <= length; got length={length}, "
            f"n_chunks={n_chunks}"
        )
    return schemes[code], length, n_chunks


def record_scheme(record: ArrayRecord) -> Scheme:
    """Whether a record carries CKKS ciphertexts (``"ckks"``) or plaintext (``"plain"``)."""
    return _read_header(record)[0]


def record_to_chunks(record: ArrayRecord) -> tuple[list[bytes], int]:
    """Unpack an ``ArrayRecord`` made by ``chunks_to_record``.

    Returns
    -------
    tuple[list[bytes], int]
        The ciphertext chunks in order and the plaintext length.

    Raises
    ------
    CodecError
        Missing/extra keys, a wrong header, a plaintext record, or a chunk with the wrong metadata.
    """
    scheme, length, n_chunks = _read_header(record)
    if scheme != "ckks":
        raise CodecError(
            "record must hold CKKS ciphertexts; got a plaintext record (insecure mode)"
        )
    expected_keys = {f"{CHUNK_KEY_PREFIX}{i:05d}" for i in range(n_chunks)} | {HEADER_KEY}
    if set(record) != expected_keys:
        missing = sorted(expected_keys - set(record))
        extra = sorted(set(record) - expected_keys)
        raise CodecError(
            f"record keys must be the header and {n_chunks} chunks; got missing={missing[:5]}, "
            f"extra={extra[:5]}"
        )
    chunks: list[bytes] = []
    for index in range(n_chunks):
        array = record[f"{CHUNK_KEY_PREFIX}{index:05d}"]
        if array.dtype != CKKS_DTYPE or array.stype != CKKS_STYPE:
            raise CodecError(
                f"chunk {index} must have dtype {CKKS_DTYPE!r} and stype {CKKS_STYPE!r}; "
                f"got {array.dtype!r}/{array.stype!r}"
            )
        if len(array.data) == 0 or tuple(array.shape) != (len(array.data),):
            raise CodecError(
                f"chunk {index} must have shape (nbytes,) matching its data; got shape "
                f"{tuple(array.shape)} for {len(array.data)} bytes"
            )
        chunks.append(bytes(array.data))
    return chunks, length


def plain_vector_to_record(vec: npt.ArrayLike) -> ArrayRecord:
    """Carry a float64 vector *in the clear* (insecure comparison mode only).

    Notes
    -----
    Whoever receives this record reads the vector. It exists to measure what encryption costs;
    never use it with real party data.
    """
    arr = _as_vector(vec)
    record = ArrayRecord()
    record[HEADER_KEY] = _header_array(scheme="plain", length=arr.size, n_chunks=1)
    record[PLAIN_KEY] = Array(arr)
    return record


def record_to_plain_vector(record: ArrayRecord) -> FloatVector:
    """Unpack a record made by ``plain_vector_to_record`` (insecure comparison mode)."""
    scheme, length, _ = _read_header(record)
    if scheme != "plain":
        raise CodecError("record must hold a plaintext vector; got a CKKS record")
    if set(record) != {HEADER_KEY, PLAIN_KEY}:
        raise CodecError(f"record keys must be {[HEADER_KEY, PLAIN_KEY]}; got {sorted(record)}")
    try:
        arr = record[PLAIN_KEY].numpy()
    except (TypeError, ValueError, OSError, EOFError) as e:
        raise CodecError(
            f"plain vector must be a numpy float64 array; got unreadable data ({e})"
        ) from e
    if arr.dtype != np.float64 or arr.shape != (length,):
        raise CodecError(
            f"plain vector must be float64[{length}]; got {arr.dtype}{list(arr.shape)}"
        )
    return np.asarray(arr, dtype=np.float64)


def encrypt_to_record(
    ctx: CkksContext, vec: npt.ArrayLike, *, masks: ChunkMaskSource | None = None
) -> ArrayRecord:
    """``encrypt_vector`` then ``chunks_to_record``: what a party sends."""
    arr = _as_vector(vec)
    return chunks_to_record(encrypt_vector(ctx, arr, masks=masks), length=arr.size)


def decrypt_record(ctx: CkksContext, record: ArrayRecord) -> FloatVector:
    """``record_to_chunks`` then ``decrypt_vector``: what a party does with the aggregate."""
    chunks, length = record_to_chunks(record)
    return decrypt_vector(ctx, chunks, length=length)


BYTES_PER_WORD: Final = 4
"""Bytes packed into one value by :func:`bytes_to_words`: a 32-bit word decrypts within about
2e-6 of itself (measured), far inside the 0.5 that rounding back to it allows."""


def bytes_to_words(data: bytes) -> FloatVector:
    """``data`` as exact integers, one 32-bit little-endian word per value, behind its length.

    CKKS carries approximate reals; integers well inside its precision round back exactly, so
    a byte string (a party's serialized state) can travel in an ordinary encrypted vector.
    """
    padded = data + b"\0" * (-len(data) % BYTES_PER_WORD)
    words = np.frombuffer(padded, dtype="<u4").astype(np.float64)
    return np.concatenate([[float(len(data))], words])


def words_to_bytes(vec: npt.ArrayLike) -> bytes:
    """Invert :func:`bytes_to_words` on a decrypted vector (rounding off the CKKS noise).

    Raises
    ------
    CodecError
        If the vector is not a length followed by that many bytes' worth of 32-bit words.
    """
    arr = np.rint(np.asarray(vec, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0:
        raise CodecError(f"words must be a non-empty 1-D array; got shape {arr.shape}")
    length = int(arr[0])
    words = arr[1:]
    if not 0 <= length <= words.size * BYTES_PER_WORD < length + BYTES_PER_WORD or (
        words.size and (words.min() < 0 or words.max() >= 2.0**32)
    ):
        raise CodecError(
            f"words must hold a byte length and its 32-bit words; got length {length} with "
            f"{words.size} words"
        )
    return words.astype("<u4").tobytes()[:length]
