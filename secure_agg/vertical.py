"""CKKS building blocks of vertical logistic regression: each party's own key, masked
per-feature products, and noise-flooded decryption of their sums.

Every party of a vertical run holds its own CKKS key (no shared secret). A vector travels as
ciphertext chunks of at most :data:`SLOTS` values. A party that holds another party's ciphertext
``[[v]]`` and its own plaintext matrix ``X`` computes, per feature ``j``, the slot-wise product
``[[X_j * v + M_j]]`` with a fresh uniform mask ``M_j`` per slot (one plaintext multiply and one
plaintext add, no rotation, so no Galois keys anywhere). The key holder decrypts, sums each
feature's slots, floods the sum with Gaussian noise and rounds it, and returns only these
``F`` numbers; the sender subtracts ``sum(M_j)``.

Notes
-----
- The slot sums are done by the key holder after decryption rather than by rotations under
  encryption: the ciphertext count is the same (one per feature and chunk), no 35 MB Galois keys
  travel, and the key holder sees only masked slots.
- IND-CPA^D: a key holder decrypts only ciphertexts whose layout it checked (count and slot
  counts), and what it returns is a sum with noise of standard deviation :data:`FLOOD_SIGMA`
  rounded to :data:`ROUND_STEP`, never a raw decryption.
- Masks come from the operating system's CSPRNG, not from a seeded generator: they are the
  secret that hides a value, not a simulation input.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import tenseal as ts
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from secure_agg.errors import CodecError, PublicContextError

SLOTS: Final = 4096
"""Values per ciphertext chunk (N = 8192, real packing)."""
POLY_MODULUS: Final = 8192
COEFF_BITS: Final = (60, 40, 40, 60)
SCALE_BITS: Final = 40
MASK_BOUND: Final = float(2**30)
"""Masks are uniform in [-2^30, 2^30]: a masked value v (|v| <= ~2^7 after clipping) is hidden
to a statistical distance of about |v| / 2^31 <= 2^-24 per value."""
FLOOD_SIGMA: Final = 1.0
"""Noise on every returned sum. The CKKS error of a decrypted sum of 8,192 masked products
measured here is about 1e-5, so the flooding is about 2^17 times that error; it adds at most
1 / (4 * batch) to a gradient coordinate."""
ROUND_STEP: Final = 2.0**-8
CONVERT_SIGMA: Final = 2.0**-10
"""Noise a host adds to every value it decrypts for re-encryption under the guest's key (a masked
score, :meth:`PartyKey.reencrypt`): about 2^10 times the CKKS error of a fresh decryption, small
against a residual of order 1."""
CONVERT_STEP: Final = 2.0**-12

FloatVector = npt.NDArray[np.float64]


def csprng_uniform(n: int, bound: float) -> FloatVector:
    """``n`` uniform values in ``[-bound, bound]`` from the OS CSPRNG (53-bit resolution)."""
    raw = np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)
    unit = raw.astype(np.float64) / float(2**53)
    return np.asarray((2.0 * unit - 1.0) * bound, dtype=np.float64)


def csprng_normal(n: int, sigma: float) -> FloatVector:
    """``n`` Gaussian values (Box-Muller over the OS CSPRNG)."""
    u1 = (csprng_uniform(n, 0.5) + 0.5).clip(2.0**-53, 1.0)
    u2 = csprng_uniform(n, 0.5) + 0.5
    return np.asarray(sigma * np.sqrt(-2.0 * np.log(u1)) * np.cos(2 * math.pi * u2))


def chunk_count(n: int) -> int:
    """Ciphertexts per vector of ``n`` values."""
    return max(1, -(-n // SLOTS))


@dataclass(frozen=True)
class PartyKey:
    """One party's own CKKS context (secret) or another party's (public)."""

    _ctx: Any
    secret: bool

    @classmethod
    def generate(cls) -> PartyKey:
        """A fresh secret context: N = 8192, primes (60, 40, 40, 60), scale 2^40, no Galois
        keys (nothing rotates)."""
        ctx = ts.context(ts.SCHEME_TYPE.CKKS, POLY_MODULUS, coeff_mod_bit_sizes=list(COEFF_BITS))
        ctx.global_scale = 2.0**SCALE_BITS
        return cls(ctx, secret=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> PartyKey:
        """Load a serialized context (secret or public)."""
        try:
            ctx = ts.context_from(data)
        except Exception as e:  # TenSEAL raises plain exceptions on malformed input
            raise CodecError(f"CKKS context bytes must be a TenSEAL context; got {e}") from e
        return cls(ctx, secret=bool(ctx.has_secret_key()))

    def public_bytes(self) -> bytes:
        """The public half: encrypt, add and multiply by plaintext; cannot decrypt."""
        return bytes(self._ctx.serialize(save_secret_key=False, save_galois_keys=False))

    def secret_bytes(self) -> bytes:
        """The full context, for the owner's own key file only."""
        self._require_secret()
        return bytes(self._ctx.serialize(save_secret_key=True, save_galois_keys=False))

    def _require_secret(self) -> None:
        if not self.secret:
            raise PublicContextError("decrypting needs the party's own secret context")

    def _load(self, data: bytes, *, expect_size: int | None = None) -> Any:
        try:
            vec = ts.ckks_vector_from(self._ctx, data)
        except Exception as e:
            raise CodecError(f"ciphertext bytes must be a CKKS vector; got {e}") from e
        if expect_size is not None and vec.size() != expect_size:
            raise CodecError(
                f"ciphertext must hold {expect_size} slots; got {vec.size()} (layout refused)"
            )
        return vec

    # -- what anyone with the public context can do -------------------------------------------

    def encrypt(self, values: FloatVector) -> list[bytes]:
        """``values`` as ciphertext chunks under this key."""
        values = np.asarray(values, dtype=np.float64)
        return [
            bytes(ts.ckks_vector(self._ctx, values[i : i + SLOTS].tolist()).serialize())
            for i in range(0, max(len(values), 1), SLOTS)
        ]

    def add(self, *vectors: Sequence[bytes]) -> list[bytes]:
        """The slot-wise sum of several encrypted vectors of the same length."""
        if not vectors or len({len(v) for v in vectors}) != 1:
            raise CodecError("encrypted vectors to add must have the same chunk count")
        out = []
        for chunks in zip(*vectors, strict=True):
            acc = self._load(chunks[0])
            for other in chunks[1:]:
                acc = acc + self._load(other, expect_size=acc.size())
            out.append(bytes(acc.serialize()))
        return out

    def masked_products(
        self, enc: Sequence[bytes], matrix: npt.NDArray[np.float64]
    ) -> tuple[list[bytes], FloatVector]:
        """``[[X_j * v + M_j]]`` for every column ``j`` of ``matrix`` (rows = the vector's slots).

        Returns the ciphertexts (feature-major, then chunk) and ``sum(M_j)`` per feature, which
        only the caller keeps.
        """
        n, n_features = matrix.shape
        if len(enc) != chunk_count(n):
            raise CodecError(
                f"encrypted vector must have {chunk_count(n)} chunks for {n} rows; got {len(enc)}"
            )
        loaded = [self._load(c, expect_size=min(SLOTS, n - i * SLOTS)) for i, c in enumerate(enc)]
        out: list[bytes] = []
        mask_sums = np.zeros(n_features)
        for j in range(n_features):
            for i, vec in enumerate(loaded):
                col = matrix[i * SLOTS : (i + 1) * SLOTS, j]
                mask = csprng_uniform(len(col), MASK_BOUND)
                mask_sums[j] += float(np.sum(mask))
                out.append(bytes((vec * col.tolist() + mask.tolist()).serialize()))
        return out, mask_sums

    def masked_scaled(
        self, enc: Sequence[bytes], weights: FloatVector
    ) -> tuple[list[bytes], FloatVector]:
        """``[[w * v + R]]``: the slot-wise product with the caller's plaintext ``weights`` (zero
        where a value must not count) plus a fresh uniform mask ``R`` per slot, which only the
        caller keeps (returned)."""
        weights = np.asarray(weights, dtype=np.float64)
        n = len(weights)
        if len(enc) != chunk_count(n):
            raise CodecError(
                f"encrypted vector must have {chunk_count(n)} chunks for {n} rows; got {len(enc)}"
            )
        mask = csprng_uniform(n, MASK_BOUND)
        out = []
        for i, chunk in enumerate(enc):
            vec = self._load(chunk, expect_size=min(SLOTS, n - i * SLOTS))
            part = slice(i * SLOTS, (i + 1) * SLOTS)
            out.append(bytes((vec * weights[part].tolist() + mask[part].tolist()).serialize()))
        return out, mask

    # -- what only the owner can do ------------------------------------------------------------

    def reencrypt(
        self, enc: Sequence[bytes], *, n: int, to: PartyKey, offset: FloatVector
    ) -> list[bytes]:
        """Key switching by the owner: decrypt a masked vector another party made under this
        key (layout checked first), flood it with noise of sd :data:`CONVERT_SIGMA`, round it
        to :data:`CONVERT_STEP`, add ``offset`` and encrypt it under ``to``. The plain values
        never leave; what leaves is a fresh ciphertext under another key, whose decryption
        carries no trace of this key's decryption error."""
        values = self.decrypt(enc, n=n) + csprng_normal(n, CONVERT_SIGMA)
        rounded = np.round(values / CONVERT_STEP) * CONVERT_STEP
        return to.encrypt(rounded + np.asarray(offset, dtype=np.float64))

    def decrypt(self, enc: Sequence[bytes], *, n: int) -> FloatVector:
        """The owner's decryption of its own vector of ``n`` values (never returned to anyone)."""
        self._require_secret()
        if len(enc) != chunk_count(n):
            raise CodecError(f"encrypted vector must have {chunk_count(n)} chunks; got {len(enc)}")
        parts = [
            np.asarray(self._load(c, expect_size=min(SLOTS, n - i * SLOTS)).decrypt())
            for i, c in enumerate(enc)
        ]
        return np.concatenate(parts).astype(np.float64)

    def flooded_sums(self, enc: Sequence[bytes], *, n: int, n_features: int) -> FloatVector:
        """Decrypt another party's masked products, sum each feature's slots, flood and round.

        Raises
        ------
        CodecError
            The ciphertexts do not have the agreed layout (``n_features`` times the chunks of
            ``n`` rows, each with its slot count): nothing is decrypted.
        """
        self._require_secret()
        chunks = chunk_count(n)
        if len(enc) != n_features * chunks:
            raise CodecError(
                f"masked products must be {n_features} features x {chunks} chunks; "
                f"got {len(enc)} ciphertexts (layout refused)"
            )
        sizes = [min(SLOTS, n - i * SLOTS) for i in range(chunks)]
        vecs = [self._load(c, expect_size=sizes[k % chunks]) for k, c in enumerate(enc)]
        sums = np.zeros(n_features)
        for k, vec in enumerate(vecs):
            sums[k // chunks] += float(np.sum(vec.decrypt()))
        flooded = sums + csprng_normal(n_features, FLOOD_SIGMA)
        return np.asarray(np.round(flooded / ROUND_STEP) * ROUND_STEP, dtype=np.float64)


class PairwiseMasks:
    """Zero-sum masks among the hosts, from pairwise X25519 agreements.

    Host ``k`` adds ``z_k = sum over peers j of ±PRG(seed_kj, label)`` (``+`` towards a peer whose
    name sorts after its own, ``-`` otherwise) to the partial scores it encrypts under the guest's
    key, so the masks cancel in the coordinator's sum and a single host's ciphertext holds only a
    masked score: even a coordinator that hands it to the guest reveals nothing beyond the sum.
    The keystream is ChaCha20 keyed by HKDF-SHA256 of the shared secret.
    """

    def __init__(
        self, name: str, own: X25519PrivateKey, peers: Mapping[str, X25519PublicKey]
    ) -> None:
        self._name = name
        self._seeds = {
            peer: HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None, info=b"fedrisk.vertical.pairwise/1"
            ).derive(own.exchange(pub))
            for peer, pub in peers.items()
            if peer != name
        }

    def mask(self, n: int, *, label: str) -> FloatVector:
        """This host's share of the zero-sum mask for ``n`` values of the step ``label``."""
        total = np.zeros(n)
        nonce = hashlib.sha256(label.encode()).digest()[:16]
        for peer, seed in sorted(self._seeds.items()):
            stream = Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor()
            raw = np.frombuffer(stream.update(b"\0" * (8 * n)), dtype=np.uint64) >> np.uint64(11)
            values = (2.0 * raw.astype(np.float64) / float(2**53) - 1.0) * MASK_BOUND
            total += values if self._name < peer else -values
        return total


def generate_x25519() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as raw (private, public) bytes."""
    key = X25519PrivateKey.generate()
    return (
        key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
        key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
    )


def pairwise_masks(name: str, own_private: bytes, peers: Mapping[str, bytes]) -> PairwiseMasks:
    """:class:`PairwiseMasks` from raw key bytes."""
    try:
        return PairwiseMasks(
            name,
            X25519PrivateKey.from_private_bytes(own_private),
            {p: X25519PublicKey.from_public_bytes(b) for p, b in peers.items()},
        )
    except ValueError as e:
        raise CodecError(f"X25519 keys must be 32 raw bytes; got {e}") from e
