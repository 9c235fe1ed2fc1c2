"""CKKS contexts and their key files: generation, secret/public split, loading with kind checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, NoReturn

import numpy as np
import numpy.typing as npt
import tenseal as ts

from fedrisk.identity import write_key_file
from secure_agg.errors import (
    CodecError,
    KeyFileError,
    PublicContextError,
    SecretContextRefusedError,
)
from secure_agg.params import HEParams

ContextKind = Literal["secret", "public"]
FloatVector = npt.NDArray[np.float64]

SECRET_SUFFIX: Final = ".secret.ctx"  # noqa: S105 (a file suffix)
PUBLIC_SUFFIX: Final = ".public.ctx"

_SERVER_RULE: Final = (
    "the aggregation server must never hold the CKKS secret key: with it, it could decrypt every "
    "party's update; give it the public context instead"
)


# --------------------------------------------------------------------------------------------------
# The TenSEAL adapter: the only code in the project that holds TenSEAL objects (typed Any).
# --------------------------------------------------------------------------------------------------


class CkksContext:
    """A CKKS context, either *secret* (a party: encrypts and decrypts) or *public* (the server).

    Obtain one from ``generate_context``, ``load_secret_context``, ``load_public_context`` or
    ``context_from_bytes``; do not build it directly. Ciphertexts cross this boundary as ``bytes``.

    Notes
    -----
    The repr never shows key material, and the object refuses to be pickled so a secret key cannot
    leave the process by accident (e.g. through a Ray or multiprocessing queue). Serialize
    explicitly with ``public_context_bytes`` or ``secret_context_bytes``.
    """

    __slots__ = ("_raw",)

    def __init__(self, raw: Any) -> None:
        self._raw: Any = raw

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
        """Values per ciphertext (N / 2)."""
        return self.poly_modulus_degree // 2

    @property
    def global_scale(self) -> float:
        """The CKKS scale new ciphertexts are encoded at."""
        return float(self._raw.global_scale)

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

    def encrypt(self, values: FloatVector) -> bytes:
        """Encrypt at most ``slots`` finite floats into one serialized ciphertext."""
        if not 0 < values.size <= self.slots:
            raise CodecError(f"values must hold 1..{self.slots} floats; got {values.size}")
        try:
            return bytes(ts.ckks_vector(self._raw, values.tolist()).serialize())
        except (ValueError, RuntimeError, TypeError) as e:
            raise CodecError(f"values cannot be encrypted: {e}") from e

    def decrypt(self, data: bytes, *, expected_size: int) -> FloatVector:
        """Decrypt one serialized ciphertext that must hold ``expected_size`` values."""
        if not self.has_secret_key:
            raise PublicContextError(
                "decrypt needs the secret CKKS context; this context is public (server side)"
            )
        vector = self._load(data, expected_size=expected_size)
        try:
            plain = vector.decrypt()
        except (ValueError, RuntimeError) as e:
            raise CodecError(f"ciphertext cannot be decrypted: {e}") from e
        return np.asarray(plain, dtype=np.float64)

    def add(self, ciphertexts: Sequence[bytes], *, expected_size: int | None = None) -> bytes:
        """Sum serialized ciphertexts that each hold ``expected_size`` values (public key only).

        With ``expected_size=None`` every ciphertext must hold as many values as the first.
        """
        if not ciphertexts:
            raise CodecError("ciphertexts must be non-empty; got 0")
        total = self._load(ciphertexts[0], expected_size=expected_size)
        size = int(total.size())
        for data in ciphertexts[1:]:
            other = self._load(data, expected_size=size)
            try:
                total.add_(other)
            except (ValueError, RuntimeError, TypeError) as e:
                raise CodecError(f"ciphertexts cannot be added (scale or level differ): {e}") from e
        return bytes(total.serialize())

    def _load(self, data: bytes, *, expected_size: int | None) -> Any:
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) == 0:
            raise CodecError("ciphertext must be non-empty bytes; got empty or non-bytes data")
        try:
            vector = ts.ckks_vector_from(self._raw, bytes(data))
        except (ValueError, RuntimeError, TypeError) as e:
            # TenSEAL raises ValueError("failed to parse CKKS stream") for garbage and truncation,
            # RuntimeError for a failed checksum or parameters of another ring.
            raise CodecError(
                f"ciphertext bytes are corrupted, truncated or from other parameters ({e})"
            ) from e
        size = int(vector.size())
        if expected_size is not None and size != expected_size:
            raise CodecError(f"ciphertext must hold {expected_size} values; got {size}")
        return vector


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
    """Where ``write_key_files`` put the two context files."""

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
        write_key_file(paths.secret, secret_context_bytes(ctx), private=True)
        write_key_file(paths.public, public_context_bytes(ctx), private=False)
    except OSError as e:
        raise KeyFileError(f"context files cannot be written to {directory}: {e}") from e
    return paths


def write_key_files(
    params: HEParams, directory: Path, *, stem: str = "ckks", overwrite: bool = False
) -> KeyPaths:
    """Generate a fresh context for ``params`` and write its secret and public files.

    Returns
    -------
    KeyPaths
        ``secret`` (mode 0600, for parties) and ``public`` (for the aggregation server).
    """
    return write_context_files(generate_context(params), directory, stem=stem, overwrite=overwrite)
