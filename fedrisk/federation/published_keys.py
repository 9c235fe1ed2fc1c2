"""Signed public keys: what a party publishes through the coordinator, and how a receiver checks
it against the federation's roster.

A vertical run relays parties' public keys through the coordinator: each party's CKKS public
context and X25519 mask key (setup), the private set intersection's channel keys (alignment). The
coordinator must not be able to swap one for a key it holds, so each key travels with its owner's
Ed25519 signature over a statement binding the run id, the step, the owner's name and the key's
purpose; the receiver checks it with the owner's key from the roster it already trusts (the
provisioned, CA-pinned manifest in a deployment; the simulated trusted-key folder in the
simulation engine), never with a key the message carries.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedrisk.errors import IdentityError
from fedrisk.federation.roster import MANIFEST_FILE, load_manifest
from fedrisk.release.identity import verify_key_from_pem

CKKS_PUBLIC_CONTEXT: Final = "ckks-public-context"
X25519_MASK: Final = "x25519-mask"
PSI_CHANNEL: Final = "psi-channel"

CFG_ALIGN_CHANNEL_SIGNATURE: Final = "align-channel-sig"
"""Config key of the host's signature on its alignment channel key (offer, finish)."""
ALIGN_HOST_CHANNEL_SIGNATURE: Final = "channel_sig"
"""Key of a host's channel-key signature in the guest's match list (hex)."""


def align_channel_signature_key(slot: int) -> str:
    """The config key of the guest's signature on its channel key for host slot ``slot``."""
    return f"{CFG_ALIGN_CHANNEL_SIGNATURE}/{slot}"


_STATEMENT: Final = "fedrisk/published-key/v1"


class KeySignatureError(IdentityError):
    """A relayed public key is unsigned, or its signature is not its owner's for this run."""


def psi_channel_purpose(host: str) -> str:
    """The purpose of the guest's channel key for one host (one key per host)."""
    return f"{PSI_CHANNEL}/{host}"


@dataclass(frozen=True)
class KeyClaim:
    """Who publishes a key, in which run and step, and for what: what its signature binds."""

    run_id: str
    step: str
    party: str
    purpose: str

    def statement(self, key: bytes) -> bytes:
        """The bytes the owner signs for ``key``: canonical JSON of the claim and its SHA-256."""
        digest = hashlib.sha256(key).hexdigest()
        claim = [_STATEMENT, self.run_id, self.step, self.party, self.purpose, digest]
        return json.dumps(claim).encode("utf-8")

    def sign(self, signing_key: Ed25519PrivateKey, key: bytes) -> bytes:
        """The owner's Ed25519 signature of ``key`` under this claim."""
        return signing_key.sign(self.statement(key))

    def check(
        self,
        roster: Mapping[str, Ed25519PublicKey],
        signature: bytes | None,
        key: bytes,
        *,
        receiver: str,
    ) -> None:
        """Refuse ``key`` unless ``signature`` is the claimed owner's roster key's signature of
        it under this claim.

        Raises
        ------
        KeySignatureError
            Naming the receiver, the owner, the step and the purpose: the owner is not in the
            roster, the signature is missing, or it does not verify (a substituted key, or a
            signature replayed from another run, step, party or purpose).
        """
        party = self.party
        where = (
            f"{receiver} refuses {party}'s {self.purpose} key relayed at step {self.step!r} of "
            f"run {self.run_id!r}"
        )
        verify = roster.get(party)
        if verify is None:
            raise KeySignatureError(
                f"{where}: its owner must be in the roster {sorted(roster)}; got {party!r}"
            )
        if not signature:
            raise KeySignatureError(f"{where}: it must carry {party}'s signature; got none")
        try:
            verify.verify(signature, self.statement(key))
        except InvalidSignature as e:
            raise KeySignatureError(
                f"{where}: its signature must be {party}'s roster key's over this run, step and "
                "purpose; got an invalid one (a substituted key or a replayed signature)"
            ) from e


def roster_keys_of(party: str, roster: Path | None) -> dict[str, Ed25519PublicKey]:
    """The roster keys ``party`` checks relayed keys against (:func:`load_roster_keys`).

    Raises
    ------
    IdentityError
        The party names no roster, or it does not load.
    """
    if roster is None:
        raise IdentityError(
            f"party {party} must name its roster (the federation's verify keys) to check the "
            "keys the coordinator relays; got none"
        )
    return load_roster_keys(roster)


def load_roster_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """Every party's Ed25519 verify key by name: from the federation's manifest (a file, or a
    folder holding ``manifest.json``) or from a folder of ``<party>.pub`` PEM files (the
    simulation's trusted keys).

    Raises
    ------
    IdentityError
        The path is missing, or a manifest or key file does not parse (the message names it).
    """
    path = Path(path)
    manifest = path / MANIFEST_FILE if path.is_dir() else path
    if manifest.is_file():
        return {p.name: p.verify_key() for p in load_manifest(manifest).parties}
    if not path.is_dir():
        raise IdentityError(f"roster {path} must be a manifest or a folder of keys; got none")
    keys: dict[str, Ed25519PublicKey] = {}
    for pub in sorted(path.glob("*.pub")):
        try:
            text = pub.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as e:
            raise IdentityError(f"roster key {pub} must be readable PEM; got {e}") from e
        keys[pub.stem] = verify_key_from_pem(text, source=f"roster key {pub}")
    if not keys:
        raise IdentityError(f"roster {path} must hold at least one <party>.pub key; got none")
    return keys
