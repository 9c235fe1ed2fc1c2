"""The lead hands the identifier key to every party, sealed; nobody else can open it."""

from __future__ import annotations

import pytest

from clients.bundle import PartyBundle, load_bundle
from fedrisk.data.schema import write_schema
from fedrisk.errors import IdentityError
from fedrisk.federation.identifier_sealing import (
    new_identifier_key,
    open_identifier_key,
    seal_identifier_key,
)
from simulations.enrollment import enroll_parties
from tests.support.federation import PARTIES, SCHEMA


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PartyBundle]:
    root = tmp_path_factory.mktemp("federation")
    write_schema(SCHEMA, root / "schema.toml")
    federation = enroll_parties(
        root / "coordinator", parties=PARTIES, schema_file=root / "schema.toml"
    )
    return {name: load_bundle(path) for name, path in federation.bundles.items()}


def test_every_party_opens_the_same_key(bundles: dict[str, PartyBundle]) -> None:
    # arrange
    lead = next(b for b in bundles.values() if b.is_lead)
    key = new_identifier_key(lead.manifest.federation)

    # act
    sealed = seal_identifier_key(key, lead.manifest, lead=lead.name, signing_key=lead.signing_key())
    opened = {
        name: open_identifier_key(
            blob,
            manifest=bundles[name].manifest,
            recipient=name,
            receiving_key=bundles[name].receiving_key(),
        )
        for name, blob in sealed.items()
    }

    # assert: the same key everywhere, never in the sealed bytes
    assert sorted(sealed) == sorted(n for n in PARTIES if n != lead.name)
    assert all(k == key for k in opened.values())
    assert all(key.secret not in blob for blob in sealed.values())


def test_a_tampered_or_misdirected_key_is_refused(bundles: dict[str, PartyBundle]) -> None:
    lead = next(b for b in bundles.values() if b.is_lead)
    first, second = (b for b in bundles.values() if not b.is_lead)
    sealed = seal_identifier_key(
        new_identifier_key("f"), lead.manifest, lead=lead.name, signing_key=lead.signing_key()
    )
    blob = sealed[first.name]
    tampered = blob[:-40] + bytes([blob[-40] ^ 1]) + blob[-39:]

    for data, who in [(tampered, first), (blob, second)]:
        with pytest.raises(IdentityError):
            open_identifier_key(
                data, manifest=who.manifest, recipient=who.name, receiving_key=who.receiving_key()
            )
    with pytest.raises(IdentityError, match="lead must be"):
        seal_identifier_key(
            new_identifier_key("f"),
            first.manifest,
            lead=first.name,
            signing_key=first.signing_key(),
        )
