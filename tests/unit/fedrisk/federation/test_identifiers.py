"""Identifier normalisation, salted PSI digests and the federation's keyed hash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fedrisk.federation.identifiers import (
    IdentifierError,
    IdentifierKey,
    keyed_hashes,
    normalise_identifiers,
    normalise_national_id,
    normalise_phone,
    psi_digests,
)


@pytest.mark.parametrize(
    "raw",
    ["+86 138-0013-8000", "0086 13800138000", "13800138000", "(0)138.0013.8000", "+8613800138000"],
)
def test_spellings_of_one_phone_number_normalise_alike(raw: str) -> None:
    assert normalise_phone(raw, default_country_code="86") == "+8613800138000"


def test_a_national_number_takes_the_default_country_code() -> None:
    assert normalise_phone("020 7946 0958", default_country_code="44") == "+442079460958"
    assert normalise_phone("+44 20 7946 0958") == "+442079460958"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("138-0013-80OO", "must be digits"),
        ("+86 12", "8 to 15 digits"),
        ("+86 1380013800012345", "8 to 15 digits"),
        ("", "8 to 15 digits"),
    ],
)
def test_bad_phone_numbers_are_refused_with_the_rule(raw: str, says: str) -> None:
    with pytest.raises(IdentifierError, match=says):
        normalise_phone(raw)


def test_national_ids_fold_case_and_drop_separators_without_checksums() -> None:
    assert normalise_national_id(" 11010519491231002x ") == "11010519491231002X"
    assert normalise_national_id("AB-123.456/7") == "AB1234567"
    with pytest.raises(IdentifierError, match="ASCII letters and digits"):
        normalise_national_id("1101#0519")


def test_a_column_error_lists_every_bad_and_duplicate_row() -> None:
    values = ["13800138000", "+86 138 0013 8000", "hello", None, "13900139000"]

    with pytest.raises(IdentifierError) as caught:
        normalise_identifiers(values, "phone", source="bank.csv column 'phone'")

    message = str(caught.value)
    assert "bank.csv column 'phone': 3 of 5 phone identifiers" in message
    assert "row 1: phone is the same customer as row 0" in message
    assert "row 2: phone must be digits" in message
    assert "row 3: phone is missing" in message
    assert len(caught.value.problems) == 3


def test_unknown_kind_and_bad_country_code_are_refused() -> None:
    with pytest.raises(IdentifierError, match="kind must be one of"):
        normalise_identifiers(["1"], "email")  # type: ignore[arg-type]
    with pytest.raises(IdentifierError, match="default_country_code must be"):
        normalise_phone("13800138000", default_country_code="+86")


def test_psi_digests_depend_on_salt_and_kind() -> None:
    ids = ["+8613800138000", "+8613900139000"]

    one = psi_digests(ids, kind="phone", salt=b"federation-a")

    assert [len(d) for d in one] == [32, 32]
    assert one != psi_digests(ids, kind="phone", salt=b"federation-b")
    assert one != psi_digests(ids, kind="opaque", salt=b"federation-a")
    assert one == psi_digests(ids, kind="phone", salt=b"federation-a")


def test_keyed_hash_is_shared_by_parties_with_the_same_secret_and_hides_the_key() -> None:
    secret = bytes(range(64))
    bank = IdentifierKey.derive(secret, federation="f1")
    telecom = IdentifierKey.derive(secret, federation="f1")
    outsider = IdentifierKey.derive(bytes(64), federation="f1")

    ours = keyed_hashes(["+86 138 0013 8000"], "phone", key=bank)
    theirs = keyed_hashes(["13800138000"], "phone", key=telecom)

    assert ours == theirs
    assert ours != keyed_hashes(["13800138000"], "phone", key=outsider)
    assert "13800138000" not in ours[0]
    assert bank.secret.hex() not in repr(bank)
    assert IdentifierKey.derive(secret, federation="f2").secret != bank.secret
    with pytest.raises(IdentifierError, match="at least 32 bytes"):
        IdentifierKey.derive(b"short", federation="f1")


def test_the_identifier_key_is_stored_owner_only_and_read_back(tmp_path: Path) -> None:
    key = IdentifierKey.derive(bytes(range(64)), federation="f1")

    path = key.save(tmp_path / "identifier.key")

    assert os.stat(path).st_mode & 0o777 == 0o600
    loaded = IdentifierKey.load(path)
    assert loaded == key
    assert loaded.keyed_hash("+8613800138000", kind="phone") == key.keyed_hash(
        "+8613800138000", kind="phone"
    )
    path.chmod(0o644)
    with pytest.raises(IdentifierError, match="must be mode 0600"):
        IdentifierKey.load(path)
