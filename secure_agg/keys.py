"""CKKS contexts and their key files: generation, secret/public split, loading with kind checks."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, NoReturn

import numpy as np
import numpy.typing as npt
import tenseal as ts
import tenseal.sealapi as sealapi
import zstandard

from fedrisk.federation.roster import PUBLIC_SUFFIX, SECRET_SUFFIX
from fedrisk.files import write_atomic
from secure_agg.errors import (
    CodecError,
    KeyFileError,
    PublicContextError,
    SecretContextRefusedError,
)
from secure_agg.params import HEParams

ContextKind = Literal["secret", "public"]
FloatVector = npt.NDArray[np.float64]
MaskResidues = npt.NDArray[np.uint64]
ChunkMaskSource = Callable[[int, Sequence[int], int], MaskResidues]
"""Where ciphertext chunk masks come from: (chunk index, ring moduli, degree) → residues."""


_SERVER_RULE: Final = (
    "the aggregation server must never hold the CKKS secret key: with it, it could decrypt every "
    "party's update; give it the public context instead"
)


# --------------------------------------------------------------------------------------------------
# The TenSEAL adapter: the only code in the project that holds TenSEAL objects (typed Any).
# --------------------------------------------------------------------------------------------------


CHUNK_MAGIC: Final = b"FRCK"
CHUNK_VERSION: Final = 1
_CHUNK_HEADER = struct.Struct("<4sBxxxI32s")  # magic, version, pad, values held, SHA-256 of body
SUM_HEADROOM_BITS: Final = 10
"""A fresh value may use all but this many of the level's bits: room for sums of 1024 parties."""


class CkksContext:
    """A CKKS context, either *secret* (a party: encrypts and decrypts) or *public* (the server).

    Obtain one from ``generate_context``, ``load_secret_context``, ``load_public_context`` or
    ``context_from_bytes``; do not build it directly. Ciphertexts cross this boundary as ``bytes``.

    Notes
    -----
    The repr never shows key material, and the object refuses to be pickled so a secret key cannot
    leave the process by accident (e.g. through a Ray or multiprocessing queue). Serialize
    explicitly with ``public_context_bytes`` or ``secret_context_bytes``.

    How values become ciphertexts (the protocol only ever adds them):

    - *Complex packing*: a CKKS slot is a complex number, so one ciphertext carries ``N`` real
      values, the first ``N / 2`` as real parts and the rest as imaginary parts. Addition works
      on both parts alike; it halves the ciphertexts per vector.
    - *Level*: fresh ciphertexts sit at the level of the first two coefficient primes (100 bits
      for the default ``[60, 40, 40, 60]``), not at the top of the chain. Addition needs no
      level; the lower one is smaller and faster, and keeps one rescale in hand. Values hold
      ``first + second prime - scale`` bits there (60 for the default), of which
      ``SUM_HEADROOM_BITS`` are left free so sums of up to 1024 parties cannot overflow.
    - *Symmetric encryption*: a party holds the secret key, so it encrypts with it, which SEAL
      does about twice as fast as with the public key, and saves the ciphertext *seeded*: its
      uniformly random half is sent as the seed that regenerates it, halving the bytes. The
      server loads and adds these with its public context exactly like public-key ciphertexts.
      A public context (e.g. the server's) still encrypts, with the public key.
    - *Wire format*: each ciphertext is SEAL's own serialization behind a 44-byte header:
      ``b"FRCK"``, a version byte, the number of values held and the SHA-256 of the SEAL bytes,
      so truncated, padded or flipped bytes are refused before SEAL parses them.

    TenSEAL provides the context, its keys and the key files; the ciphertexts go through
    ``tenseal.sealapi``, TenSEAL's bindings of the SEAL library underneath, because TenSEAL's
    own vectors encode real values only, at the top level, and encrypt symmetrically only under
    a freshly generated key.
    """

    __slots__ = ("_raw", "_seal")

    def __init__(self, raw: Any) -> None:
        self._raw: Any = raw
        self._seal: _Seal | None = None

    @property
    def kind(self) -> ContextKind:
        """``"secret"`` when the context holds the secret key, else ``"public"``."""
        return "secret" if self.has_secret_key else "public"

    @property
    def has_secret_key(self) -> bool:
        """Whether this context can decrypt."""
        return bool(self._raw.is_private()) or bool(self._raw.has_secret_key())

    @property
    def has_galois_keys(self) -> bool:
        """Whether Galois (rotation) keys are loaded; never needed for aggregation."""
        return bool(self._raw.has_galois_keys())

    @property
    def poly_modulus_degree(self) -> int:
        """Ring dimension N."""
        return int(self._raw.seal_context().data.key_context_data().parms().poly_modulus_degree())

    @property
    def slots(self) -> int:
        """Real values per ciphertext: N (two per complex CKKS slot)."""
        return self.poly_modulus_degree

    @property
    def global_scale(self) -> float:
        """The CKKS scale new ciphertexts are encoded at."""
        return float(self._raw.global_scale)

    @property
    def ring_moduli(self) -> tuple[int, ...]:
        """The coefficient primes of the level fresh ciphertexts sit at: a mask is one residue
        per prime and ring coefficient (see ``encrypt``'s ``mask``)."""
        return self._backend().moduli

    @property
    def max_abs_value(self) -> float:
        """Largest magnitude one encrypted value may have (see the class notes)."""
        return self._backend().max_abs

    def __repr__(self) -> str:
        return f"CkksContext(kind={self.kind!r}, poly_modulus_degree={self.poly_modulus_degree})"

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "CkksContext is not picklable (it may hold a secret key); "
            "serialize it explicitly with public_context_bytes() or secret_context_bytes()"
        )

    def to_bytes(self, *, include_secret_key: bool = False) -> bytes:
        """Serialize parameters and public key (and the secret key only when asked). No Galois or
        relinearization keys: adding ciphertexts needs neither."""
        if include_secret_key and not self.has_secret_key:
            raise PublicContextError("this context is public; there is no secret key to serialize")
        return bytes(
            self._raw.serialize(
                save_public_key=True,
                save_secret_key=include_secret_key,
                save_galois_keys=False,
                save_relin_keys=False,
            )
        )

    def encrypt(self, values: FloatVector, *, mask: MaskResidues | None = None) -> bytes:
        """Encrypt at most ``slots`` finite floats into one serialized ciphertext.

        ``mask``, shaped ``(len(ring_moduli), poly_modulus_degree)`` with row ``i`` below prime
        ``i``, is added to the encoded plaintext modulo each prime before encryption (pairwise
        masking, :mod:`secure_agg.masking`); masks that sum to zero cancel exactly in a sum.
        """
        if not 0 < values.size <= self.slots:
            raise CodecError(f"values must hold 1..{self.slots} floats; got {values.size}")
        seal = self._backend()
        peak = float(np.max(np.abs(values)))
        if not peak < seal.max_abs:
            raise CodecError(
                f"values must be below {seal.max_abs:.3g} in magnitude to be summed under CKKS "
                f"at this level; got {peak:.3g}"
            )
        half = self.slots // 2
        packed = values[:half].astype(np.complex128)
        if values.size > half:
            packed[: values.size - half] += 1j * values[half:]
        try:
            plain = sealapi.Plaintext()
            seal.encoder.encode(packed.tolist(), seal.parms_id, self.global_scale, plain)
            if mask is not None:
                plain = seal.plaintext(
                    seal.check_mask(mask) + seal.residues(plain), self.global_scale
                )
            if seal.decryptor is not None:  # a party: symmetric, saved seeded
                body = _save(seal.encryptor.encrypt_symmetric(plain))
            else:
                ciphertext = sealapi.Ciphertext()
                seal.encryptor.encrypt(plain, ciphertext)
                body = _save(ciphertext)
        except (ValueError, RuntimeError, TypeError) as e:
            raise CodecError(f"values cannot be encrypted: {e}") from e
        return _chunk(body, values.size)

    def decrypt(self, data: bytes, *, expected_size: int) -> FloatVector:
        """Decrypt one serialized ciphertext that must hold ``expected_size`` values."""
        if not self.has_secret_key:
            raise PublicContextError(
                "decrypt needs the secret CKKS context; this context is public (server side)"
            )
        seal = self._backend()
        _, ciphertext = self._load(data, expected_size=expected_size)
        assert seal.decryptor is not None
        try:
            plain = sealapi.Plaintext()
            seal.decryptor.decrypt(ciphertext, plain)
            slots = np.asarray(seal.encoder.decode_complex(plain), dtype=np.complex128)
        except (ValueError, RuntimeError, TypeError) as e:
            raise CodecError(f"ciphertext cannot be decrypted: {e}") from e
        return np.concatenate([slots.real, slots.imag])[:expected_size].astype(np.float64)

    def add(self, ciphertexts: Sequence[bytes], *, expected_size: int | None = None) -> bytes:
        """Sum serialized ciphertexts that each hold ``expected_size`` values (public key only).

        With ``expected_size=None`` every ciphertext must hold as many values as the first.
        """
        if not ciphertexts:
            raise CodecError("ciphertexts must be non-empty; got 0")
        seal = self._backend()
        size, total = self._load(ciphertexts[0], expected_size=expected_size)
        for data in ciphertexts[1:]:
            _, other = self._load(data, expected_size=size)
            try:
                seal.evaluator.add_inplace(total, other)
            except (ValueError, RuntimeError, TypeError) as e:
                raise CodecError(f"ciphertexts cannot be added (scale or level differ): {e}") from e
        return _chunk(_save(total), size)

    def add_mask(self, data: bytes, mask: MaskResidues) -> bytes:
        """Add a mask (residues as for ``encrypt``) to a serialized ciphertext (public key only):
        how the coordinator removes the masks a dropped party would have cancelled."""
        seal = self._backend()
        size, ciphertext = self._load(data, expected_size=None)
        try:
            seal.evaluator.add_plain_inplace(
                ciphertext, seal.plaintext(seal.check_mask(mask), self.global_scale)
            )
        except (ValueError, RuntimeError, TypeError) as e:
            raise CodecError(f"mask cannot be added to the ciphertext: {e}") from e
        return _chunk(_save(ciphertext), size)

    def _backend(self) -> _Seal:
        if self._seal is None:
            self._seal = _Seal(self._raw, secret=self.has_secret_key)
        return self._seal

    def _load(self, data: bytes, *, expected_size: int | None) -> tuple[int, Any]:
        """Check a chunk's header and digest, then parse its SEAL ciphertext.

        Returns the number of values it holds and the ciphertext.
        """
        size, body = _unchunk(data)
        if expected_size is not None and size != expected_size:
            raise CodecError(f"ciphertext must hold {expected_size} values; got {size}")
        seal = self._backend()
        try:
            ciphertext = _load_ciphertext(seal.context, body)
        except (ValueError, RuntimeError, TypeError) as e:
            # SEAL refuses bytes of another ring or parameter set, and coefficients out of range.
            raise CodecError(
                f"ciphertext bytes are corrupted, truncated or from other parameters ({e})"
            ) from e
        if ciphertext.parms_id() != seal.parms_id or ciphertext.size() != 2:
            raise CodecError(
                "ciphertext must be a fresh or summed one at the protocol's level with 2 "
                f"polynomials; got level {_level_of(seal.context, ciphertext)} with "
                f"{ciphertext.size()} polynomials"
            )
        if ciphertext.scale != self.global_scale:
            raise CodecError(
                f"ciphertext scale must be 2^{math.log2(self.global_scale):g}; got "
                f"{ciphertext.scale:g}"
            )
        return size, ciphertext


class _Seal:
    """The SEAL objects one context needs, built once (an encoder precomputes its FFT tables)."""

    def __init__(self, raw: Any, *, secret: bool) -> None:
        self.context: Any = raw.seal_context().data
        level = self.context.last_context_data().prev_context_data()
        self.parms_id: Any = level.parms_id()
        primes = [m.bit_count() for m in level.parms().coeff_modulus()]
        value_bits = sum(primes) - math.log2(float(raw.global_scale))
        self.max_abs: float = 2.0 ** (value_bits - 1 - SUM_HEADROOM_BITS)
        self.encoder: Any = sealapi.CKKSEncoder(self.context)
        self.evaluator: Any = sealapi.Evaluator(self.context)
        key = raw.secret_key().data if secret else raw.public_key().data
        self.encryptor: Any = sealapi.Encryptor(self.context, key)
        self.decryptor: Any = sealapi.Decryptor(self.context, key) if secret else None
        self.moduli: tuple[int, ...] = tuple(int(m.value()) for m in level.parms().coeff_modulus())
        self.degree = int(level.parms().poly_modulus_degree())
        probe = sealapi.Plaintext()
        self.encoder.encode([0.0], self.parms_id, float(raw.global_scale), probe)
        self._version = _save(probe)[2:5]  # SEAL's header bytes naming its format version

    def residues(self, plain: Any) -> MaskResidues:
        """An NTT-form plaintext's coefficients, one row per prime.

        Notes
        -----
        Read from SEAL's own serialization (decompressed), which is ~6x faster than one
        binding call per coefficient: header, parms_id, coefficient count, scale, then the
        coefficients as a DynArray behind its own header and size.
        """
        count = int(plain.coeff_count())
        members = _seal_members(_save(plain))
        (stored,) = struct.unpack_from("<Q", members, _PLAIN_COUNT_AT)
        if stored != count or len(members) < _PLAIN_DATA_AT + 8 * count:
            raise CodecError(f"plaintext must hold {count} coefficients; got {stored}")
        flat = np.frombuffer(members, dtype="<u8", offset=_PLAIN_DATA_AT, count=count)
        return flat.astype(np.uint64).reshape(len(self.moduli), self.degree)

    def check_mask(self, mask: MaskResidues) -> MaskResidues:
        """Refuse a mask of the wrong shape or with a residue not below its prime."""
        shape = (len(self.moduli), self.degree)
        moduli = np.array(self.moduli, dtype=np.uint64)[:, None]
        if mask.shape != shape or mask.dtype != np.uint64 or bool(np.any(mask >= moduli)):
            raise CodecError(
                f"mask must be uint64{list(shape)} with every row below its prime; got "
                f"{mask.dtype}{list(mask.shape)}"
            )
        return mask

    def plaintext(self, residues: MaskResidues, scale: float) -> Any:
        """An NTT-form plaintext at the fresh level from residues (reduced here modulo each
        prime: the sum of two residue arrays may be given).

        Notes
        -----
        TenSEAL exposes no setter for plaintext coefficients, so the plaintext is built from
        SEAL's own uncompressed serialization: header, parms_id, coefficient count, scale,
        then the coefficients as a DynArray with its own header.
        """
        moduli = np.array(self.moduli, dtype=np.uint64)[:, None]
        data = (np.asarray(residues, dtype=np.uint64) % moduli).astype("<u8").tobytes()
        count = len(self.moduli) * self.degree
        array = struct.pack("<Q", count) + data
        array = self._header(len(array)) + array
        body = struct.pack("<4QQd", *self.parms_id, count, scale) + array
        with _scratch_file() as (path, fd):
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._header(len(body)) + body, 0)
            plain = sealapi.Plaintext()
            plain.load(self.context, path)
        return plain

    def _header(self, body_size: int) -> bytes:
        # magic A15E, header size, version (major, minor), compression none, reserved, total size
        return struct.pack("<H", 0xA15E) + self._version + struct.pack("<BHQ", 0, 0, 16 + body_size)


_PLAIN_COUNT_AT: Final = 32
"""Offset of a serialized plaintext's coefficient count, after its parms_id (4 words)."""
_PLAIN_DATA_AT: Final = 32 + 8 + 8 + 16 + 8
"""Offset of its coefficients: parms_id, count, scale, then the DynArray's header and size."""


def _seal_members(saved: bytes) -> bytes:
    """The members of a SEAL object's serialization, decompressed (SEAL's header says how)."""
    mode = saved[5]
    body = saved[16:]
    if mode == 0:
        return body
    if mode == 1:
        return zlib.decompress(body)
    if mode == 2:
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    raise CodecError(f"SEAL compression mode must be none, zlib or zstd; got {mode}")


def _level_of(context: Any, ciphertext: Any) -> int | None:
    data = context.get_context_data(ciphertext.parms_id())
    return None if data is None else int(data.chain_index())


def _chunk(body: bytes, size: int) -> bytes:
    digest = hashlib.sha256(body).digest()
    return _CHUNK_HEADER.pack(CHUNK_MAGIC, CHUNK_VERSION, size, digest) + body


def _unchunk(data: bytes) -> tuple[int, bytes]:
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) == 0:
        raise CodecError("ciphertext must be non-empty bytes; got empty or non-bytes data")
    raw = bytes(data)
    if len(raw) <= _CHUNK_HEADER.size:
        raise CodecError(
            f"ciphertext must be longer than its {_CHUNK_HEADER.size}-byte header; got {len(raw)} "
            "bytes (truncated?)"
        )
    magic, version, size, digest = _CHUNK_HEADER.unpack_from(raw)
    if magic != CHUNK_MAGIC or version != CHUNK_VERSION:
        raise CodecError(
            f"ciphertext must start with {CHUNK_MAGIC!r} version {CHUNK_VERSION}; got "
            f"{magic!r} version {version} (not a fedrisk ciphertext, or corrupted)"
        )
    body = raw[_CHUNK_HEADER.size :]
    if hashlib.sha256(body).digest() != digest:
        raise CodecError(
            "ciphertext bytes are corrupted, truncated or padded: their SHA-256 does not match "
            "the header"
        )
    if size < 1:
        raise CodecError(f"ciphertext must hold at least 1 value; its header says {size}")
    return int(size), body


# SEAL's Python bindings save and load through file paths only. On Linux an anonymous in-memory
# file (memfd) stands in, so ciphertexts never touch a disk; elsewhere a private temp file does.


_MEMFD: Final = hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir()


@contextlib.contextmanager
def _scratch_file() -> Iterator[tuple[str, int]]:
    if _MEMFD:
        fd = os.memfd_create("fedrisk-ciphertext", os.MFD_CLOEXEC)
        try:
            yield f"/proc/self/fd/{fd}", fd
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="fedrisk-ct-")
    try:
        yield path, fd
    finally:
        os.close(fd)
        Path(path).unlink()


def _save(obj: Any) -> bytes:
    with _scratch_file() as (path, fd):
        obj.save(path)
        return os.pread(fd, os.fstat(fd).st_size, 0)


def _load_ciphertext(context: Any, body: bytes) -> Any:
    with _scratch_file() as (path, fd):
        os.ftruncate(fd, 0)
        os.pwrite(fd, body, 0)
        ciphertext = sealapi.Ciphertext()
        ciphertext.load(context, path)
        return ciphertext


def _wrap_checked(raw: Any, *, expect: ContextKind | None, source: str) -> CkksContext:
    ctx = CkksContext(raw)
    if expect == "secret" and not ctx.has_secret_key:
        raise KeyFileError(
            f"{source} must hold a secret CKKS context (a party's); got a public context"
        )
    if expect == "public":
        if ctx.has_secret_key:
            raise SecretContextRefusedError(f"{source} holds a CKKS secret key; {_SERVER_RULE}")
        if ctx.has_galois_keys:
            raise KeyFileError(
                f"{source} must be a public context without Galois keys (addition needs none); "
                "got one with Galois keys"
            )
    return ctx


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPaths:
    """Where ``write_atomics`` put the two context files."""

    secret: Path
    public: Path


def generate_context(params: HEParams) -> CkksContext:
    """Create a fresh secret CKKS context (secret key + public key) for ``params``.

    Notes
    -----
    TenSEAL also generates relinearization keys by default (no Galois keys); they are never
    serialized because the protocol only adds ciphertexts.
    """
    raw = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
    )
    raw.global_scale = params.global_scale
    return CkksContext(raw)


def secret_context_bytes(ctx: CkksContext) -> bytes:
    """Serialize a party's context *with* its secret key. Handle the result as a secret."""
    return ctx.to_bytes(include_secret_key=True)


def public_context_bytes(ctx: CkksContext) -> bytes:
    """Serialize parameters and public key only: what the aggregation server may hold."""
    return ctx.to_bytes(include_secret_key=False)


def public_context(ctx: CkksContext) -> CkksContext:
    """A public-only copy of ``ctx`` (round-trips through ``public_context_bytes``)."""
    return context_from_bytes(public_context_bytes(ctx), expect="public")


def context_from_bytes(
    data: bytes, *, expect: ContextKind, source: str = "context bytes"
) -> CkksContext:
    """Load a serialized context and check it is the kind the caller expects.

    Parameters
    ----------
    data
        Output of ``secret_context_bytes`` or ``public_context_bytes``.
    expect
        ``"secret"`` (a party) or ``"public"`` (the aggregation server).
    source
        What to call the bytes in error messages (a path, a message key).

    Raises
    ------
    KeyFileError
        Unparseable bytes, or a public context where a secret one is expected.
    SecretContextRefusedError
        A secret key where a public context is expected.
    """
    if expect not in ("secret", "public"):
        raise KeyFileError(f"expect must be 'secret' or 'public'; got {expect!r}")
    try:
        raw = ts.context_from(bytes(data))
    except (ValueError, RuntimeError, TypeError) as e:
        raise KeyFileError(
            f"{source} must be a serialized TenSEAL CKKS context; got unparseable data ({e})"
        ) from e
    return _wrap_checked(raw, expect=expect, source=source)


def _read_context_file(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"context file {path} cannot be read: {e.strerror or e}") from e


def load_secret_context(path: Path) -> CkksContext:
    """Load a party's secret context file; refuses a public one (it could not decrypt)."""
    return context_from_bytes(
        _read_context_file(path), expect="secret", source=f"context file {path}"
    )


def load_public_context(path: Path) -> CkksContext:
    """Load the server's public context file.

    Raises
    ------
    SecretContextRefusedError
        The file holds a secret key.

    Notes
    -----
    This is the server's start-up check from the threat model: the aggregation server holds the
    public context only, so it can add ciphertexts but never decrypt them.
    """
    return context_from_bytes(
        _read_context_file(path), expect="public", source=f"context file {path}"
    )


def write_context_files(
    ctx: CkksContext, directory: Path, *, stem: str = "ckks", overwrite: bool = False
) -> KeyPaths:
    """Write ``ctx`` as ``<stem>.secret.ctx`` (mode 0600) and ``<stem>.public.ctx`` (0644).

    Raises
    ------
    KeyFileError
        A file exists and ``overwrite`` is false (replacing a secret key would orphan every
        ciphertext made with it).
    """
    directory = Path(directory)
    paths = KeyPaths(
        secret=directory / f"{stem}{SECRET_SUFFIX}", public=directory / f"{stem}{PUBLIC_SUFFIX}"
    )
    if not overwrite:
        existing = [str(p) for p in (paths.secret, paths.public) if p.exists()]
        if existing:
            raise KeyFileError(
                f"context files must not exist already (pass overwrite=True to replace); "
                f"got {existing}"
            )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(paths.secret, secret_context_bytes(ctx), private=True)
        write_atomic(paths.public, public_context_bytes(ctx), private=False)
    except OSError as e:
        raise KeyFileError(f"context files cannot be written to {directory}: {e}") from e
    return paths


def write_atomics(
    params: HEParams, directory: Path, *, stem: str = "ckks", overwrite: bool = False
) -> KeyPaths:
    """Generate a fresh context for ``params`` and write its secret and public files.

    Returns
    -------
    KeyPaths
        ``secret`` (mode 0600, for parties) and ``public`` (for the aggregation server).
    """
    return write_context_files(generate_context(params), directory, stem=stem, overwrite=overwrite)
