"""The federation's roster and bundle layout: parties, their public keys, and where a party's files
live.

Nothing here is secret or cryptographic beyond parsing public keys: it is shared by the coordinator
(which writes the manifest), the parties (which read it) and the key ceremony.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from fedrisk.errors import IdentityError
from fedrisk.release.identity import (
    OpenedSecret,
    key_id,
    open_sealed,
    receiving_key_id,
    receiving_public_key_from_pem,
    verify_key_from_pem,
)

SECRET_SUFFIX: Final = ".secret.ctx"  # noqa: S105 (a file suffix)
PUBLIC_SUFFIX: Final = ".public.ctx"
MANIFEST_FILE: Final = "manifest.json"
BUNDLE_FILE: Final = "bundle.json"
SECRET_CONTEXT_PURPOSE: Final = "ckks-secret-context"  # noqa: S105 (a label, not a secret)
PUBLIC_CONTEXT_PURPOSE: Final = "ckks-public-context"
CONTEXT_STEM: Final = "ckks"
SEALED_SUFFIX: Final = ".sealed"
PUBLIC_CONTEXT_FILE: Final = f"{CONTEXT_STEM}{PUBLIC_SUFFIX}"
PUBLIC_SIGNATURE_FILE: Final = f"{PUBLIC_CONTEXT_FILE}.sig.json"
COORDINATOR_DIR: Final = "coordinator"

PARTY_NAME_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
"""Party names: lowercase, start with a letter, at most 32 characters (they become file names)."""


def check_party_name(name: str) -> str:
    """Return ``name`` if it is a valid party name, else raise ``IdentityError``."""
    if not PARTY_NAME_PATTERN.fullmatch(name):
        raise IdentityError(
            "party name must be 1-32 characters of a-z, 0-9, '_' or '-', starting with a letter; "
            f"got {name!r}"
        )
    return name


# --------------------------------------------------------------------------------------------------
# The federation manifest: every party's PUBLIC keys, written by the coordinator at provisioning
# --------------------------------------------------------------------------------------------------


class PartyRecord(BaseModel):
    """One party's public identity as provisioned: nothing in here is secret.

    ``signing_public_key`` (Ed25519) verifies what the party signs, ``receiving_public_key``
    (X25519) is what secrets are sealed to, ``auth_public_key`` (OpenSSH ECDSA line) is what the
    SuperLink registers for the party's SuperNode.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    signing_public_key: str
    signing_key_id: str
    receiving_public_key: str
    receiving_key_id: str
    auth_public_key: str
    auth_key_sha256: str

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return check_party_name(value)

    @model_validator(mode="after")
    def _check_key_ids(self) -> PartyRecord:
        actual = key_id(self.verify_key())
        if actual != self.signing_key_id:
            raise ValueError(
                f"signing_key_id of {self.name} must match its key ({actual}); "
                f"got {self.signing_key_id}"
            )
        actual = receiving_key_id(self.receiving_key())
        if actual != self.receiving_key_id:
            raise ValueError(
                f"receiving_key_id of {self.name} must match its key ({actual}); "
                f"got {self.receiving_key_id}"
            )
        actual = hashlib.sha256(self.auth_public_key.strip().encode("ascii")).hexdigest()
        if actual != self.auth_key_sha256:
            raise ValueError(
                f"auth_key_sha256 of {self.name} must match its key ({actual}); "
                f"got {self.auth_key_sha256}"
            )
        return self

    def verify_key(self) -> Ed25519PublicKey:
        """The party's Ed25519 verify key."""
        return verify_key_from_pem(
            self.signing_public_key, source=f"signing key of {self.name} in the manifest"
        )

    def receiving_key(self) -> X25519PublicKey:
        """The party's X25519 receiving key."""
        return receiving_public_key_from_pem(
            self.receiving_public_key, source=f"receiving key of {self.name} in the manifest"
        )


class FederationManifest(BaseModel):
    """The federation's roster: parties, their public keys, the lead party and the CA fingerprint.

    Notes
    -----
    The coordinator writes it once at provisioning and hands a copy to every party inside its
    bundle, out of band. Trust in a sealed secret or a signed public context comes from this file,
    never from the keys a file carries about itself.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = 1
    federation: str
    created_at: str
    lead: str
    ca_certificate_sha256: str
    superlink_hosts: tuple[str, ...]
    parties: tuple[PartyRecord, ...]

    @model_validator(mode="after")
    def _check_roster(self) -> FederationManifest:
        names = [p.name for p in self.parties]
        if len(set(names)) != len(names):
            raise ValueError(f"parties must have unique names; got {names}")
        if self.lead not in names:
            raise ValueError(f"lead must be one of the parties {names}; got {self.lead!r}")
        for attr in ("signing_key_id", "receiving_key_id", "auth_key_sha256"):
            values = [getattr(p, attr) for p in self.parties]
            if len(set(values)) != len(values):
                raise ValueError(f"parties must not share keys; got a repeated {attr}")
        return self

    @property
    def party_names(self) -> list[str]:
        """Party names in provisioning order."""
        return [p.name for p in self.parties]

    def party(self, name: str) -> PartyRecord:
        """The record of party ``name``; ``IdentityError`` if it is not in the federation."""
        for record in self.parties:
            if record.name == name:
                return record
        raise IdentityError(f"party must be one of {self.party_names}; got {name!r}")

    def open_from_lead(
        self, sealed: bytes, *, recipient: str, receiving_key: X25519PrivateKey, purpose: str
    ) -> OpenedSecret:
        """Verify that ``sealed`` was sealed by this federation's lead for ``recipient`` and
        ``purpose``, then decrypt it with the recipient's X25519 key.

        Raises
        ------
        IdentityError
            As :func:`fedrisk.release.identity.open_sealed`.
        """
        return open_sealed(
            sealed,
            recipient_key=receiving_key,
            sender_verify_key=self.party(self.lead).verify_key(),
            expected_sender=self.lead,
            expected_recipient=recipient,
            purpose=purpose,
        )

    def to_json(self) -> str:
        """Canonical, human-readable JSON text of the manifest."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def load_manifest(path: Path) -> FederationManifest:
    """Read and validate a federation manifest.

    Raises
    ------
    IdentityError
        The file is missing, not JSON, or fails validation; the message lists every problem.
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IdentityError(f"manifest {path} must be readable JSON; got {e}") from e
    try:
        return FederationManifest.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'manifest'}: {err['msg']}"
            for err in e.errors()
        )
        raise IdentityError(f"manifest {path} is invalid: {problems}") from e


# --------------------------------------------------------------------------------------------------
# Party bundle layout (written by server.coordinator.provisioning, read by clients.bundle)
# --------------------------------------------------------------------------------------------------


class BundleInfo(BaseModel):
    """``bundle.json``: which party a bundle belongs to (public information only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = 1
    party: str
    federation: str
    lead: str
    superlink_hosts: tuple[str, ...]
    created_at: str


@dataclass(frozen=True)
class BundleLayout:
    """Where each file of a party bundle lives, relative to the bundle's root directory.

    Private files (mode 0600): ``auth_private_key``, ``signing_key``, ``receiving_key``,
    ``secret_context``. Everything else is public.
    """

    root: Path

    @property
    def info(self) -> Path:
        """``bundle.json``."""
        return self.root / BUNDLE_FILE

    @property
    def manifest(self) -> Path:
        """Copy of the federation manifest (public keys of every party)."""
        return self.root / MANIFEST_FILE

    @property
    def ca_certificate(self) -> Path:
        """The federation CA certificate: the only root the party trusts for the SuperLink."""
        return self.root / "ca.crt"

    @property
    def auth_private_key(self) -> Path:
        """SuperNode authentication key (ECDSA P-384, OpenSSH format, as flower-supernode reads)."""
        return self.root / "auth" / "supernode.key"

    @property
    def auth_public_key(self) -> Path:
        """The OpenSSH public line the SuperLink registers."""
        return self.root / "auth" / "supernode.pub"

    @property
    def signing_key(self) -> Path:
        """Ed25519 private key (PKCS#8 PEM)."""
        return self.root / "identity" / "signing.key"

    @property
    def signing_public_key(self) -> Path:
        """Ed25519 public key (PEM)."""
        return self.root / "identity" / "signing.pub"

    @property
    def receiving_key(self) -> Path:
        """X25519 private key (PKCS#8 PEM)."""
        return self.root / "identity" / "receiving.key"

    @property
    def receiving_public_key(self) -> Path:
        """X25519 public key (PEM)."""
        return self.root / "identity" / "receiving.pub"

    @property
    def schema(self) -> Path:
        """The federation's dataset schema (TOML), when the coordinator provided one."""
        return self.root / "schema.toml"

    @property
    def ckks_dir(self) -> Path:
        """Where the key ceremony puts the party's CKKS material."""
        return self.root / "ckks"

    @property
    def secret_context(self) -> Path:
        """The CKKS secret context (mode 0600), after ``keys init`` or ``keys accept``."""
        return self.ckks_dir / f"{CONTEXT_STEM}{SECRET_SUFFIX}"

    @property
    def he_params(self) -> Path:
        """The CKKS parameters of the secret context (JSON)."""
        return self.ckks_dir / "he_params.json"

    @property
    def state_dir(self) -> Path:
        """Runtime state of the party's SuperNode (logs, FLWR_HOME, party.toml)."""
        return self.root / "state"
