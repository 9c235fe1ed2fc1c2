"""Ed25519 identity keys: PEM round trip, file modes, key ids, clear errors naming the file."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedrisk.errors import IdentityError
from fedrisk.files import write_atomic
from fedrisk.release.identity import (
    generate_signing_key,
    key_id,
    load_signing_key,
    load_verify_key,
    save_private_key,
    save_public_key,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_key_round_trip_with_owner_only_mode(tmp_path: Path) -> None:
    key = generate_signing_key()
    path = tmp_path / "party.key"

    save_private_key(key, path)
    loaded = load_signing_key(path)

    assert _mode(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert loaded.sign(b"m") == key.sign(b"m")  # Ed25519 signatures are deterministic


def test_public_key_round_trip_and_key_id(tmp_path: Path) -> None:
    key = generate_signing_key()
    path = tmp_path / "party.pub"

    save_public_key(key.public_key(), path)
    loaded = load_verify_key(path)

    assert _mode(path) == 0o644
    loaded.verify(key.sign(b"hello"), b"hello")
    assert key_id(loaded) == key_id(key.public_key())
    assert len(key_id(loaded)) == 16
    assert int(key_id(loaded), 16) >= 0
    assert key_id(generate_signing_key().public_key()) != key_id(loaded)


def test_private_mode_holds_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        save_private_key(generate_signing_key(), tmp_path / "k.pem")
    finally:
        os.umask(old)

    assert _mode(tmp_path / "k.pem") == 0o600


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a", b"one", private=True)
    write_atomic(tmp_path / "a", b"two", private=True)

    assert [p.name for p in tmp_path.iterdir()] == ["a"]
    assert (tmp_path / "a").read_bytes() == b"two"


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.pem"

    with pytest.raises(IdentityError, match=re.escape(str(path))):
        load_signing_key(path)
    with pytest.raises(IdentityError, match=re.escape(str(path))):
        load_verify_key(path)


def test_corrupted_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.pem"
    save_private_key(generate_signing_key(), path)
    path.write_bytes(path.read_bytes()[:40])

    with pytest.raises(IdentityError, match=re.escape(str(path))):
        load_signing_key(path)


def test_wrong_key_type_is_refused(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    private_path, public_path = tmp_path / "ec.key", tmp_path / "ec.pub"
    private_path.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_path.write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    with pytest.raises(IdentityError, match="must hold an Ed25519 private key; got"):
        load_signing_key(private_path)
    with pytest.raises(IdentityError, match="must hold an Ed25519 public key; got"):
        load_verify_key(public_path)


def test_public_key_file_is_not_a_signing_key(tmp_path: Path) -> None:
    path = tmp_path / "party.pub"
    save_public_key(generate_signing_key().public_key(), path)

    with pytest.raises(IdentityError, match=re.escape(str(path))):
        load_signing_key(path)


def test_save_refuses_non_ed25519_keys(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="key must be an Ed25519PrivateKey"):
        save_private_key(ec.generate_private_key(ec.SECP256R1()), tmp_path / "x")  # type: ignore[arg-type]
    assert isinstance(generate_signing_key(), Ed25519PrivateKey)
