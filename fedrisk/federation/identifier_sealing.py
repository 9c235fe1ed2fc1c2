"""Handing the federation's identifier key to every party: sealed by the lead, one file each.

A federation whose parties share a CKKS secret context derives its identifier key from it
(:meth:`fedrisk.federation.identifiers.IdentifierKey.derive`). A vertical federation where each
party holds its own CKKS key has no such shared secret, so the lead draws a fresh key and seals
it to each party's provisioned X25519 receiving key, signed with its Ed25519 key, exactly as the
key ceremony seals a secret context (:mod:`fedrisk.release.identity`). The coordinator relays the
sealed files and can read none of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedrisk.errors import IdentityError
from fedrisk.federation.identifiers import KEY_BYTES, IdentifierError, IdentifierKey
from fedrisk.federation.roster import FederationManifest
from fedrisk.release.identity import seal_for

IDENTIFIER_KEY_PURPOSE = "identifier-key"


def new_identifier_key(federation: str) -> IdentifierKey:
    """A fresh random identifier key (the operating system's CSPRNG)."""
    return IdentifierKey(os.urandom(KEY_BYTES), federation)


def seal_identifier_key(
    key: IdentifierKey,
    manifest: FederationManifest,
    *,
    lead: str,
    signing_key: Ed25519PrivateKey,
) -> dict[str, bytes]:
    """The key sealed for each party of ``manifest`` but the lead, by party name.

    Raises
    ------
    IdentityError
        If ``lead`` is not the manifest's lead.
    """
    if lead != manifest.lead:
        raise IdentityError(f"lead must be the manifest's lead {manifest.lead!r}; got {lead!r}")
    return {
        party.name: seal_for(
            party.receiving_key(),
            key.secret,
            signer=signing_key,
            sender=lead,
            recipient=party.name,
            purpose=IDENTIFIER_KEY_PURPOSE,
            metadata={"federation": key.federation},
        )
        for party in manifest.parties
        if party.name != lead
    }


def open_identifier_key(
    sealed: bytes,
    *,
    manifest: FederationManifest,
    recipient: str,
    receiving_key: X25519PrivateKey,
) -> IdentifierKey:
    """Verify the lead's sealed identifier key and open it.

    Raises
    ------
    IdentityError
        Not from the manifest's lead, tampered with, or not for ``recipient``.
    IdentifierError
        If the opened key is not 32 bytes.
    """
    opened = manifest.open_from_lead(
        sealed, recipient=recipient, receiving_key=receiving_key, purpose=IDENTIFIER_KEY_PURPOSE
    )
    meta: Mapping[str, str] = opened.header.metadata
    if len(opened.plaintext) != KEY_BYTES:
        raise IdentifierError(
            f"sealed identifier key must be {KEY_BYTES} bytes; got {len(opened.plaintext)}"
        )
    return IdentifierKey(opened.plaintext, meta.get("federation", manifest.federation))
