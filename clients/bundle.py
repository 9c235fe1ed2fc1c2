"""A party's provisioned bundle: its own keys, the federation manifest and CA, checked on load."""

from __future__ import annotations

import hashlib
import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pydantic import ValidationError

from fedrisk.errors import IdentityError
from fedrisk.federation.roster import (
    BundleInfo,
    BundleLayout,
    FederationManifest,
    PartyRecord,
    load_manifest,
)
from fedrisk.release.identity import key_id, load_receiving_key, load_signing_key, receiving_key_id

# The one node config key a deployed SuperNode passes to every ClientApp (``context.node_config``):
# the party's name. Paths never travel there (``clients.executor`` serves ``party.toml``).
NODE_CONFIG_PARTY: Final = "party"


@dataclass(frozen=True)
class PartyBundle:
    """A checked party bundle. Private keys are loaded on demand, never kept on the object."""

    layout: BundleLayout
    info: BundleInfo
    manifest: FederationManifest

    @property
    def name(self) -> str:
        """The party this bundle belongs to."""
        return self.info.party

    @property
    def record(self) -> PartyRecord:
        """This party's public record in the manifest."""
        return self.manifest.party(self.name)

    @property
    def is_lead(self) -> bool:
        """Whether this party runs the CKKS key ceremony."""
        return self.manifest.lead == self.name

    @property
    def has_secret_context(self) -> bool:
        """Whether the key ceremony has installed the CKKS secret context."""
        return self.layout.secret_context.is_file()

    def signing_key(self) -> Ed25519PrivateKey:
        """The party's Ed25519 signing key."""
        return load_signing_key(self.layout.signing_key)

    def receiving_key(self) -> X25519PrivateKey:
        """The party's X25519 receiving key."""
        return load_receiving_key(self.layout.receiving_key)


def check_private_file(path: Path) -> None:
    """Refuse a private key file that is missing, not a regular file, or readable by others.

    Notes
    -----
    Like ``ssh``, a key that group or others can read is treated as compromised-by-configuration
    and refused instead of used; ``chmod 600`` fixes it.
    """
    try:
        info = path.lstat()
    except OSError as e:
        raise IdentityError(f"private key file {path} must exist; got {e.strerror or e}") from e
    if not stat.S_ISREG(info.st_mode):
        raise IdentityError(f"private key file {path} must be a regular file; got another type")
    if info.st_mode & 0o077:
        raise IdentityError(
            f"private key file {path} must be mode 0600 (owner only); got "
            f"{oct(info.st_mode & 0o777)}: run `chmod 600 {path}`"
        )


def check_private_dir(path: Path) -> None:
    """Refuse a folder of the party's keys that group or others can enter or list.

    Notes
    -----
    A listing alone tells another local account which keys exist and where; ``chmod 700``
    fixes it.
    """
    mode = stat.S_IMODE(path.lstat().st_mode)
    if not path.is_dir() or path.is_symlink():
        raise IdentityError(f"party folder {path} must be a real directory; got another type")
    if mode & 0o077:
        raise IdentityError(
            f"party folder {path} must be mode 0700 (owner only); got {oct(mode)}: run "
            f"`chmod 700 {path}`"
        )


def _auth_public_line(path: Path) -> str:
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, UnsupportedAlgorithm) as e:
        raise IdentityError(
            f"SuperNode auth key {path} must be an unencrypted OpenSSH ECDSA private key; got {e}"
        ) from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityError(
            f"SuperNode auth key {path} must be an ECDSA (NIST curve) key; got {type(key).__name__}"
        )
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )


def load_bundle(path: Path) -> PartyBundle:
    """Load a party bundle and check it is whole, private, and matches its manifest.

    Parameters
    ----------
    path
        The bundle directory handed over by the coordinator.

    Returns
    -------
    PartyBundle
        The checked bundle.

    Raises
    ------
    IdentityError
        A file is missing or unreadable, a private key is readable by others, a key does not match
        the manifest's public record for this party, or the CA certificate is not the one the
        manifest names.
    """
    layout = BundleLayout(Path(path).resolve())
    try:
        info = BundleInfo.model_validate(json.loads(layout.info.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as e:
        raise IdentityError(
            f"bundle {layout.root} must hold a valid {layout.info.name}; got {e}"
        ) from e
    manifest = load_manifest(layout.manifest)
    record = manifest.party(info.party)

    for folder in (
        layout.root,
        layout.signing_key.parent,
        layout.auth_private_key.parent,
        layout.ckks_dir,
        layout.state_dir,
    ):
        if folder.exists():
            check_private_dir(folder)
    for private in (layout.auth_private_key, layout.signing_key, layout.receiving_key):
        check_private_file(private)
    if layout.secret_context.exists():
        check_private_file(layout.secret_context)

    problems: list[str] = []
    if key_id(load_signing_key(layout.signing_key).public_key()) != record.signing_key_id:
        problems.append("signing key does not match the manifest")
    if receiving_key_id(load_receiving_key(layout.receiving_key).public_key()) != (
        record.receiving_key_id
    ):
        problems.append("receiving key does not match the manifest")
    if _auth_public_line(layout.auth_private_key).strip() != record.auth_public_key.strip():
        problems.append("SuperNode auth key does not match the manifest")
    try:
        ca = x509.load_pem_x509_certificate(layout.ca_certificate.read_bytes())
    except (OSError, ValueError) as e:
        raise IdentityError(f"CA certificate {layout.ca_certificate} must be PEM; got {e}") from e
    fingerprint = hashlib.sha256(ca.public_bytes(serialization.Encoding.DER)).hexdigest()
    if fingerprint != manifest.ca_certificate_sha256:
        problems.append("CA certificate is not the one the manifest names")
    if problems:
        raise IdentityError(
            f"bundle {layout.root} of party {info.party} must match its manifest; got: "
            + "; ".join(problems)
        )
    return PartyBundle(layout=layout, info=info, manifest=manifest)
