"""Sealed secrets (fedrisk.release.identity): X25519 + HKDF + ChaCha20-Poly1305, signed with
Ed25519."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.errors import IdentityError
from fedrisk.release.identity import (
    generate_receiving_key,
    generate_signing_key,
    load_receiving_key,
    load_receiving_public_key,
    open_sealed,
    read_sealed_header,
    receiving_key_id,
    save_public_key,
    save_receiving_key,
    save_receiving_public_key,
    seal_for,
)

SENDER = generate_signing_key()
RECIPIENT = generate_receiving_key()


def _seal(plaintext: bytes = b"secret context", **overrides: object) -> bytes:
    kwargs: dict[str, object] = {
        "signer": SENDER,
        "sender": "bank_a",
        "recipient": "bank_b",
        "purpose": "ckks-secret-context",
    }
    kwargs.update(overrides)
    return seal_for(RECIPIENT.public_key(), plaintext, **kwargs)  # type: ignore[arg-type]


def _open(sealed: bytes, **overrides: object) -> bytes:
    kwargs: dict[str, object] = {
        "recipient_key": RECIPIENT,
        "sender_verify_key": SENDER.public_key(),
        "expected_sender": "bank_a",
        "expected_recipient": "bank_b",
        "purpose": "ckks-secret-context",
    }
    kwargs.update(overrides)
    return open_sealed(sealed, **kwargs).plaintext  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=4096))
def test_round_trip(plaintext: bytes) -> None:
    assert _open(_seal(plaintext)) == plaintext


def test_plaintext_is_not_visible_in_the_file_or_repr() -> None:
    secret = b"THE-SECRET-KEY-MATERIAL" * 4
    sealed = _seal(secret)

    opened = open_sealed(
        sealed,
        recipient_key=RECIPIENT,
        sender_verify_key=SENDER.public_key(),
        expected_sender="bank_a",
        expected_recipient="bank_b",
        purpose="ckks-secret-context",
    )

    assert b"THE-SECRET" not in sealed
    assert "THE-SECRET" not in repr(opened)
    assert read_sealed_header(sealed).recipient_key_id == receiving_key_id(RECIPIENT.public_key())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"recipient_key": generate_receiving_key()}, "receiving key"),
        ({"sender_verify_key": generate_signing_key().public_key()}, "signature must verify"),
        ({"expected_sender": "bank_z"}, "must come from 'bank_z'"),
        ({"expected_recipient": "telco_c"}, "addressed to 'telco_c'"),
        ({"purpose": "something-else"}, "purpose"),
    ],
)
def test_wrong_expectations_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(IdentityError, match=message):
        _open(_seal(), **overrides)


def test_every_single_byte_flip_is_refused() -> None:
    sealed = _seal(b"x" * 64)

    for offset in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[offset] ^= 0x80
        with pytest.raises(IdentityError):
            _open(bytes(tampered))


@pytest.mark.parametrize("cut", [0, 5, 12, 100, -1])
def test_truncated_files_are_refused(cut: int) -> None:
    sealed = _seal()

    with pytest.raises(IdentityError):
        _open(sealed[:cut])


def test_receiving_keys_round_trip_through_files(tmp_path: Path) -> None:
    key = generate_receiving_key()
    save_receiving_key(key, tmp_path / "r.key")
    save_receiving_public_key(key.public_key(), tmp_path / "r.pub")

    loaded = load_receiving_key(tmp_path / "r.key")
    pub = load_receiving_public_key(tmp_path / "r.pub")

    assert (tmp_path / "r.key").stat().st_mode & 0o777 == 0o600
    assert receiving_key_id(loaded.public_key()) == receiving_key_id(key.public_key())
    assert receiving_key_id(pub) == receiving_key_id(key.public_key())
    save_public_key(generate_signing_key().public_key(), tmp_path / "ed.pub")
    with pytest.raises(IdentityError, match="must be an X25519 public key"):
        load_receiving_public_key(tmp_path / "ed.pub")
    with pytest.raises(IdentityError, match="PEM public key"):
        load_receiving_public_key(tmp_path / "r.key")
