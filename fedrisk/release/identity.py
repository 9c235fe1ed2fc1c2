"""Party identities: Ed25519 signing keys (and X25519 receiving keys) stored as PEM files."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedrisk.errors import IdentityError
from fedrisk.files import write_atomic

KEY_ID_HEX_CHARS = 16


# --------------------------------------------------------------------------------------------------
# Key files
# --------------------------------------------------------------------------------------------------


def _read_key_bytes(path: Path, *, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise IdentityError(f"{what} file {path} cannot be read: {e.strerror or e}") from e


# --------------------------------------------------------------------------------------------------
# Ed25519 signing keys (artifact release, party authentication)
# --------------------------------------------------------------------------------------------------


_PrivateKey = TypeVar("_PrivateKey", Ed25519PrivateKey, X25519PrivateKey)
# mypy refuses an abstract class where type[T] is expected (python/mypy#4717); isinstance takes it
_ED25519_PRIVATE: type[Ed25519PrivateKey] = Ed25519PrivateKey  # type: ignore[type-abstract]
_X25519_PRIVATE: type[X25519PrivateKey] = X25519PrivateKey  # type: ignore[type-abstract]


def _private_pem(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _public_pem(pub: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return pub.public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )


def _raw_key_id(pub: Ed25519PublicKey | X25519PublicKey) -> str:
    raw = pub.public_bytes(
        encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
    )
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX_CHARS]


def _load_private_key(
    path: Path, *, what: str, kind: type[_PrivateKey], algorithm: str
) -> _PrivateKey:
    """Read an unencrypted PEM private key of ``kind``; ``what`` and ``algorithm`` name it."""
    data = _read_key_bytes(path, what=what)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise IdentityError(
            f"{what} file {path} must hold an unencrypted PEM private key; got unreadable "
            f"content ({e})"
        ) from e
    if not isinstance(key, kind):
        raise IdentityError(
            f"{what} file {path} must hold an {algorithm} private key; got {type(key).__name__}"
        )
    return key


def generate_signing_key() -> Ed25519PrivateKey:
    """Create a fresh Ed25519 signing key from the operating system's CSPRNG."""
    return Ed25519PrivateKey.generate()


def save_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write an Ed25519 private key as unencrypted PKCS#8 PEM, mode 0600, atomically.

    Parameters
    ----------
    key
        The signing key.
    path
        Destination file.

    Notes
    -----
    The file is protected by its mode only; keep it on an encrypted volume or under a secret store.
    """
    if not isinstance(key, Ed25519PrivateKey):
        raise IdentityError(f"key must be an Ed25519PrivateKey; got {type(key).__name__}")
    write_atomic(Path(path), _private_pem(key), private=True)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key written by ``save_private_key``.

    Raises
    ------
    IdentityError
        The file is missing, not PEM, encrypted, or holds another key type; the message names it.
    """
    return _load_private_key(path, what="signing key", kind=_ED25519_PRIVATE, algorithm="Ed25519")


def save_public_key(pub: Ed25519PublicKey, path: Path) -> None:
    """Write an Ed25519 public key as SubjectPublicKeyInfo PEM (mode 0644, atomically)."""
    if not isinstance(pub, Ed25519PublicKey):
        raise IdentityError(f"pub must be an Ed25519PublicKey; got {type(pub).__name__}")
    write_atomic(Path(path), _public_pem(pub), private=False)


def load_verify_key(path: Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key written by ``save_public_key``.

    Raises
    ------
    IdentityError
        The file is missing, not PEM, or holds another key type; the message names it.
    """
    data = _read_key_bytes(path, what="public key")
    key = _load_public_pem(data, source=f"public key file {path}")
    if not isinstance(key, Ed25519PublicKey):
        raise IdentityError(
            f"public key file {path} must hold an Ed25519 public key; got {type(key).__name__}"
        )
    return key


def key_id(pub: Ed25519PublicKey) -> str:
    """Short stable identifier of a public key: the first 16 hex chars of sha256(raw key bytes)."""
    return _raw_key_id(pub)


# --------------------------------------------------------------------------------------------------
# X25519 receiving keys and sealed secrets (key ceremony) — added by H6 below.
# --------------------------------------------------------------------------------------------------


RECEIVING_KEY_BYTES = 32
SEALED_MAGIC = b"FRSEAL01"
"""First bytes of every sealed file: format name and version."""

_SEAL_HKDF_INFO = b"fedrisk/sealed-secret/v1"
_SEAL_NONCE_BYTES = 12
_SIGNATURE_BYTES = 64
_HEADER_LENGTH_BYTES = 4
_MAX_HEADER_BYTES = 64 * 1024


def generate_receiving_key() -> X25519PrivateKey:
    """Create a fresh X25519 key a party uses to receive secrets (the CKKS secret context)."""
    return X25519PrivateKey.generate()


def save_receiving_key(key: X25519PrivateKey, path: Path) -> None:
    """Write an X25519 private key as unencrypted PKCS#8 PEM, mode 0600, atomically."""
    if not isinstance(key, X25519PrivateKey):
        raise IdentityError(f"key must be an X25519PrivateKey; got {type(key).__name__}")
    write_atomic(Path(path), _private_pem(key), private=True)


def load_receiving_key(path: Path) -> X25519PrivateKey:
    """Read an X25519 private key written by ``save_receiving_key``.

    Raises
    ------
    IdentityError
        The file is missing, not PEM, encrypted, or holds another key type; the message names it.
    """
    return _load_private_key(path, what="receiving key", kind=_X25519_PRIVATE, algorithm="X25519")


def receiving_public_key_pem(pub: X25519PublicKey) -> str:
    """An X25519 public key as SubjectPublicKeyInfo PEM text (for manifests and .pub files)."""
    if not isinstance(pub, X25519PublicKey):
        raise IdentityError(f"pub must be an X25519PublicKey; got {type(pub).__name__}")
    return _public_pem(pub).decode("ascii")


def verify_key_pem(pub: Ed25519PublicKey) -> str:
    """An Ed25519 public key as SubjectPublicKeyInfo PEM text (for manifests)."""
    if not isinstance(pub, Ed25519PublicKey):
        raise IdentityError(f"pub must be an Ed25519PublicKey; got {type(pub).__name__}")
    return _public_pem(pub).decode("ascii")


def save_receiving_public_key(pub: X25519PublicKey, path: Path) -> None:
    """Write an X25519 public key as SubjectPublicKeyInfo PEM (mode 0644, atomically)."""
    write_atomic(Path(path), receiving_public_key_pem(pub).encode("ascii"), private=False)


def _load_public_pem(data: bytes, *, source: str) -> object:
    try:
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise IdentityError(
            f"{source} must hold a PEM public key; got unreadable content ({e})"
        ) from e


def receiving_public_key_from_pem(text: str, *, source: str = "public key") -> X25519PublicKey:
    """Parse X25519 public key PEM text; ``source`` names it in errors."""
    key = _load_public_pem(text.encode("ascii", errors="replace"), source=source)
    if not isinstance(key, X25519PublicKey):
        raise IdentityError(f"{source} must be an X25519 public key; got {type(key).__name__}")
    return key


def verify_key_from_pem(text: str, *, source: str = "public key") -> Ed25519PublicKey:
    """Parse Ed25519 public key PEM text; ``source`` names it in errors."""
    key = _load_public_pem(text.encode("ascii", errors="replace"), source=source)
    if not isinstance(key, Ed25519PublicKey):
        raise IdentityError(f"{source} must be an Ed25519 public key; got {type(key).__name__}")
    return key


def load_receiving_public_key(path: Path) -> X25519PublicKey:
    """Read an X25519 public key written by ``save_receiving_public_key``."""
    data = _read_key_bytes(path, what="public key")
    return receiving_public_key_from_pem(
        data.decode("ascii", errors="replace"), source=f"public key file {path}"
    )


def receiving_key_id(pub: X25519PublicKey) -> str:
    """Short stable identifier of an X25519 public key: first 16 hex chars of sha256(raw bytes)."""
    return _raw_key_id(pub)


@dataclass(frozen=True)
class SealedHeader:
    """The signed, cleartext header of a sealed secret: who sent it, to whom, and what it is.

    Read with ``read_sealed_header`` to choose the keys for ``open_sealed``; it is authenticated
    only once ``open_sealed`` has verified the signature.
    """

    purpose: str
    sender: str
    recipient: str
    sender_key_id: str
    recipient_key_id: str
    created_at: str
    metadata: Mapping[str, str]
    ephemeral_public: bytes = field(repr=False)
    nonce: bytes = field(repr=False)


@dataclass(frozen=True)
class OpenedSecret:
    """A verified and decrypted sealed secret. The plaintext never appears in its repr."""

    header: SealedHeader
    plaintext: bytes = field(repr=False)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, *, name: str, size: int) -> bytes:
    if not isinstance(text, str):
        raise IdentityError(f"sealed header field {name} must be base64 text; got {text!r}")
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as e:
        raise IdentityError(f"sealed header field {name} must be base64 text; got {text!r}") from e
    if len(raw) != size:
        raise IdentityError(
            f"sealed header field {name} must decode to {size} bytes; got {len(raw)}"
        )
    return raw


def _seal_key(shared: bytes, ephemeral_raw: bytes, recipient_raw: bytes) -> bytes:
    # Both public keys go into the KDF so the key is bound to this exact exchange.
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=_SEAL_HKDF_INFO + ephemeral_raw + recipient_raw,
    ).derive(shared)


def _raw_x25519(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(
        encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
    )


def seal_for(
    recipient_pub: X25519PublicKey,
    plaintext: bytes,
    *,
    signer: Ed25519PrivateKey,
    sender: str,
    recipient: str,
    purpose: str,
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """Encrypt ``plaintext`` to one recipient's X25519 key and sign the result as ``sender``.

    Parameters
    ----------
    recipient_pub
        The recipient's X25519 public key (from the federation manifest).
    plaintext
        The secret, e.g. a serialized CKKS secret context.
    signer
        The sender's Ed25519 signing key.
    sender, recipient
        Party names; both are bound into the encryption (AAD) and the signature.
    purpose
        What the secret is for (e.g. ``"ckks-secret-context"``); a file sealed for one purpose is
        refused for another.
    metadata
        Extra public, signed string fields (parameters, fingerprints). Never put secrets here.

    Returns
    -------
    bytes
        ``SEALED_MAGIC | len(header) | header JSON | ciphertext | Ed25519 signature``.

    Notes
    -----
    ECIES-style: a fresh ephemeral X25519 key per file, HKDF-SHA256 over the shared secret and both
    public keys, ChaCha20-Poly1305 with the magic and the header (sender, recipient, purpose, key
    ids) as associated data. The signature covers every byte before it, so the recipient verifies
    who sent the file before it decrypts anything, and a file re-signed by anyone else no longer
    decrypts because the sender's name is in the AAD.
    """
    for name, value in (("sender", sender), ("recipient", recipient), ("purpose", purpose)):
        if not value:
            raise IdentityError(f"{name} must be a non-empty string; got {value!r}")
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = _raw_x25519(ephemeral.public_key())
    recipient_raw = _raw_x25519(recipient_pub)
    try:
        shared = ephemeral.exchange(recipient_pub)
    except ValueError as e:
        raise IdentityError(f"recipient key of {recipient} is unusable for X25519 ({e})") from e
    nonce = os.urandom(_SEAL_NONCE_BYTES)
    header = {
        "v": 1,
        "purpose": purpose,
        "sender": sender,
        "recipient": recipient,
        "sender_key_id": key_id(signer.public_key()),
        "recipient_key_id": receiving_key_id(recipient_pub),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "metadata": dict(metadata or {}),
        "ephemeral": _b64(ephemeral_raw),
        "nonce": _b64(nonce),
    }
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    prefix = SEALED_MAGIC + len(header_bytes).to_bytes(_HEADER_LENGTH_BYTES, "big") + header_bytes
    key = _seal_key(shared, ephemeral_raw, recipient_raw)
    ciphertext = ChaCha20Poly1305(key).encrypt(nonce, plaintext, SEALED_MAGIC + header_bytes)
    body = prefix + ciphertext
    return body + signer.sign(body)


def _split_sealed(sealed: bytes) -> tuple[SealedHeader, bytes, bytes, bytes, bytes]:
    """Parse ``sealed`` into (header, header bytes, signed body, ciphertext, signature)."""
    minimum = len(SEALED_MAGIC) + _HEADER_LENGTH_BYTES + _SIGNATURE_BYTES
    if len(sealed) < minimum or not sealed.startswith(SEALED_MAGIC):
        raise IdentityError(
            f"sealed file must start with {SEALED_MAGIC!r} and hold at least {minimum} bytes; "
            "got something else (not a fedrisk sealed secret, or truncated)"
        )
    start = len(SEALED_MAGIC) + _HEADER_LENGTH_BYTES
    header_len = int.from_bytes(sealed[len(SEALED_MAGIC) : start], "big")
    if header_len > _MAX_HEADER_BYTES or start + header_len + _SIGNATURE_BYTES > len(sealed):
        raise IdentityError(
            f"sealed file header length must fit the file (<= {_MAX_HEADER_BYTES} bytes); "
            f"got {header_len} (tampered or truncated)"
        )
    header_bytes = sealed[start : start + header_len]
    body = sealed[:-_SIGNATURE_BYTES]
    ciphertext = sealed[start + header_len : -_SIGNATURE_BYTES]
    signature = sealed[-_SIGNATURE_BYTES:]
    try:
        raw = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IdentityError(f"sealed file header must be JSON; got unreadable bytes ({e})") from e
    if not isinstance(raw, dict) or raw.get("v") != 1:
        raise IdentityError(
            "sealed file header must be a version 1 JSON object; got another format"
        )
    text_fields = (
        "purpose",
        "sender",
        "recipient",
        "sender_key_id",
        "recipient_key_id",
        "created_at",
    )
    for name in text_fields:
        if not isinstance(raw.get(name), str):
            raise IdentityError(f"sealed header field {name} must be text; got {raw.get(name)!r}")
    metadata = raw.get("metadata", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise IdentityError("sealed header field metadata must map text to text; got another type")
    header = SealedHeader(
        purpose=raw["purpose"],
        sender=raw["sender"],
        recipient=raw["recipient"],
        sender_key_id=raw["sender_key_id"],
        recipient_key_id=raw["recipient_key_id"],
        created_at=raw["created_at"],
        metadata=dict(metadata),
        ephemeral_public=_unb64(raw.get("ephemeral"), name="ephemeral", size=RECEIVING_KEY_BYTES),
        nonce=_unb64(raw.get("nonce"), name="nonce", size=_SEAL_NONCE_BYTES),
    )
    return header, header_bytes, body, ciphertext, signature


def read_sealed_header(sealed: bytes) -> SealedHeader:
    """Parse the header of a sealed file without verifying it (to pick keys for ``open_sealed``).

    Raises
    ------
    IdentityError
        The bytes are not a fedrisk sealed secret.
    """
    return _split_sealed(sealed)[0]


def open_sealed(
    sealed: bytes,
    *,
    recipient_key: X25519PrivateKey,
    sender_verify_key: Ed25519PublicKey,
    expected_sender: str,
    expected_recipient: str,
    purpose: str,
) -> OpenedSecret:
    """Verify who sealed ``sealed`` and for whom, then decrypt it.

    Parameters
    ----------
    sealed
        Output of ``seal_for``.
    recipient_key
        This party's X25519 private key.
    sender_verify_key
        The Ed25519 public key the sender must have signed with, taken from a trusted source
        (the provisioned manifest), never from the file.
    expected_sender, expected_recipient, purpose
        What the file must claim; anything else is refused before decryption.

    Raises
    ------
    IdentityError
        Wrong format, wrong sender / recipient / purpose, a signature that does not verify with
        ``sender_verify_key`` (tampered, or signed by another key), or a ciphertext that does not
        decrypt with ``recipient_key``.
    """
    header, header_bytes, body, ciphertext, signature = _split_sealed(sealed)
    if header.purpose != purpose:
        raise IdentityError(f"sealed file purpose must be {purpose!r}; got {header.purpose!r}")
    if header.sender != expected_sender:
        raise IdentityError(
            f"sealed file must come from {expected_sender!r}; got one from {header.sender!r}"
        )
    if header.recipient != expected_recipient:
        raise IdentityError(
            f"sealed file must be addressed to {expected_recipient!r}; "
            f"got one for {header.recipient!r}"
        )
    try:
        sender_verify_key.verify(signature, body)
    except InvalidSignature as e:
        raise IdentityError(
            f"sealed file signature must verify with {expected_sender}'s provisioned key "
            f"{key_id(sender_verify_key)}; it does not (the file was altered or signed by "
            f"another key, claimed key id {header.sender_key_id})"
        ) from e
    own_id = receiving_key_id(recipient_key.public_key())
    if header.recipient_key_id != own_id:
        raise IdentityError(
            f"sealed file must be encrypted to receiving key {own_id}; "
            f"got one for key {header.recipient_key_id}"
        )
    try:
        ephemeral_pub = X25519PublicKey.from_public_bytes(header.ephemeral_public)
        shared = recipient_key.exchange(ephemeral_pub)
        key = _seal_key(shared, header.ephemeral_public, _raw_x25519(recipient_key.public_key()))
        plaintext = ChaCha20Poly1305(key).decrypt(
            header.nonce, ciphertext, SEALED_MAGIC + header_bytes
        )
    except (InvalidTag, ValueError) as e:
        raise IdentityError(
            "sealed file must decrypt with this party's receiving key; it does not "
            "(corrupted, or sealed to another key)"
        ) from e
    return OpenedSecret(header=header, plaintext=plaintext)
