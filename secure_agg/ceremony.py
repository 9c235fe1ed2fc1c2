"""The CKKS key ceremony: the federation roster, party bundle layout and sealed secret contexts."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from fedrisk.errors import IdentityError
from fedrisk.identity import (
    key_id,
    open_sealed,
    read_sealed_header,
    receiving_key_id,
    receiving_public_key_from_pem,
    seal_for,
    verify_key_from_pem,
    write_key_file,
)
from secure_agg.errors import KeyFileError
from secure_agg.keys import (
    PUBLIC_SUFFIX,
    SECRET_SUFFIX,
    context_from_bytes,
    generate_context,
    public_context_bytes,
    secret_context_bytes,
)
from secure_agg.params import HEParams, parse_he_params

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
# Party bundle layout (written by server.provisioning, read by clients.bundle)
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


# --------------------------------------------------------------------------------------------------
# The ceremony
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CeremonyResult:
    """What ``run_key_ceremony`` wrote."""

    sealed: Mapping[str, Path]
    public_context: Path
    public_signature: Path
    own_secret_context: Path
    public_context_sha256: str


@dataclass(frozen=True)
class AcceptedContext:
    """What ``accept_sealed_context`` installed."""

    secret_context: Path
    sender: str
    he_params: HEParams
    public_context_sha256: str
    created_at: str


def _canonical(payload: Mapping[str, object]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _check_lead_key(
    manifest: FederationManifest, lead: str, signing_key: Ed25519PrivateKey
) -> None:
    if lead != manifest.lead:
        raise IdentityError(
            f"the key ceremony must be run by the lead party {manifest.lead!r}; got {lead!r}"
        )
    expected = manifest.party(lead).signing_key_id
    actual = key_id(signing_key.public_key())
    if actual != expected:
        raise IdentityError(
            f"signing key of {lead} must be the provisioned one ({expected}); got key {actual}"
        )


def _write_secret_context(path: Path, data: bytes, params: HEParams) -> None:
    if path.exists():
        if path.read_bytes() == data:
            return
        raise KeyFileError(
            f"secret context {path} must not exist already (replacing it would orphan every "
            "ciphertext made with the old key); got an existing, different file"
        )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_key_file(path, data, private=True)
    params_file = path.parent / "he_params.json"
    write_key_file(
        params_file,
        (json.dumps(params.model_dump(mode="json"), indent=2) + "\n").encode(),
        private=False,
    )


def run_key_ceremony(
    manifest: FederationManifest,
    *,
    lead: str,
    signing_key: Ed25519PrivateKey,
    own_ckks_dir: Path,
    out_dir: Path,
    params: HEParams,
) -> CeremonyResult:
    """Create the federation's CKKS context; seal it to each party, give the server the public part.

    Parameters
    ----------
    manifest
        The provisioned federation manifest.
    lead
        The party running the ceremony; must be the manifest's lead.
    signing_key
        The lead's Ed25519 key; must match the manifest.
    own_ckks_dir
        The lead's own key directory (its bundle's ``ckks/``): receives the secret context.
    out_dir
        New or empty directory for the hand-outs: ``<party>.sealed`` for every other party and
        ``coordinator/ckks.public.ctx`` (+ ``.sig.json``) for the aggregation server.
    params
        CKKS parameters.

    Raises
    ------
    IdentityError
        ``lead`` is not the manifest's lead, or ``signing_key`` is not its provisioned key.
    KeyFileError
        ``out_dir`` is not empty, or the lead already holds a different secret context.

    Notes
    -----
    Every other party receives the same secret context, sealed to its own X25519 key and signed
    by the lead (``fedrisk.identity.seal_for``). The coordinator's directory receives the public
    context only (no secret key, no Galois keys), signed by the lead so the server can check where
    it came from. Nothing secret is written to ``out_dir`` in the clear.
    """
    _check_lead_key(manifest, lead, signing_key)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise KeyFileError(f"ceremony output directory must be new or empty; got {out_dir}")
    own_secret = Path(own_ckks_dir) / f"{CONTEXT_STEM}{SECRET_SUFFIX}"
    if own_secret.exists():
        raise KeyFileError(
            f"the lead must not hold a CKKS secret context yet (a new ceremony would orphan every "
            f"ciphertext made with it); got {own_secret}"
        )

    ctx = generate_context(params)
    secret_bytes = secret_context_bytes(ctx)
    public_bytes = public_context_bytes(ctx)
    fingerprint = hashlib.sha256(public_bytes).hexdigest()
    params_json = json.dumps(params.model_dump(mode="json"), sort_keys=True)
    created_at = datetime.now(UTC).isoformat(timespec="seconds")

    out_dir.mkdir(parents=True, exist_ok=True)
    sealed: dict[str, Path] = {}
    for record in manifest.parties:
        if record.name == lead:
            continue
        blob = seal_for(
            record.receiving_key(),
            secret_bytes,
            signer=signing_key,
            sender=lead,
            recipient=record.name,
            purpose=SECRET_CONTEXT_PURPOSE,
            metadata={
                "federation": manifest.federation,
                "he_params": params_json,
                "public_context_sha256": fingerprint,
            },
        )
        path = out_dir / f"{record.name}{SEALED_SUFFIX}"
        write_key_file(path, blob, private=True)
        sealed[record.name] = path

    coordinator = out_dir / COORDINATOR_DIR
    coordinator.mkdir()
    public_path = coordinator / PUBLIC_CONTEXT_FILE
    write_key_file(public_path, public_bytes, private=False)
    statement: dict[str, object] = {
        "v": 1,
        "purpose": PUBLIC_CONTEXT_PURPOSE,
        "federation": manifest.federation,
        "signer": lead,
        "signer_key_id": key_id(signing_key.public_key()),
        "sha256": fingerprint,
        "he_params": params.model_dump(mode="json"),
        "created_at": created_at,
    }
    statement["signature"] = base64.b64encode(signing_key.sign(_canonical(statement))).decode()
    signature_path = coordinator / PUBLIC_SIGNATURE_FILE
    write_key_file(signature_path, (json.dumps(statement, indent=2) + "\n").encode(), private=False)

    _write_secret_context(own_secret, secret_bytes, params)
    return CeremonyResult(
        sealed=sealed,
        public_context=public_path,
        public_signature=signature_path,
        own_secret_context=own_secret,
        public_context_sha256=fingerprint,
    )


def accept_sealed_context(
    sealed: bytes,
    *,
    manifest: FederationManifest,
    recipient: str,
    receiving_key: X25519PrivateKey,
    own_ckks_dir: Path,
) -> AcceptedContext:
    """Verify a sealed secret context from the lead, decrypt it and install it for this party.

    Parameters
    ----------
    sealed
        The ``<party>.sealed`` file's bytes.
    manifest
        The party's provisioned manifest: the lead's Ed25519 key is taken from here.
    recipient
        This party's name.
    receiving_key
        This party's X25519 private key.
    own_ckks_dir
        The party's key directory (its bundle's ``ckks/``).

    Raises
    ------
    IdentityError
        Not from the manifest's lead, signed by another key, tampered with, or not for this party.
    KeyFileError
        The plaintext is not a secret CKKS context, does not match the announced public context,
        or the party already holds a different secret context.

    Notes
    -----
    The signature is checked before anything is decrypted; the secret is written only after every
    check passed.
    """
    header = read_sealed_header(sealed)
    if header.sender != manifest.lead:
        raise IdentityError(
            f"sealed secret context must come from the lead party {manifest.lead!r}; "
            f"got one from {header.sender!r}"
        )
    opened = open_sealed(
        sealed,
        recipient_key=receiving_key,
        sender_verify_key=manifest.party(manifest.lead).verify_key(),
        expected_sender=manifest.lead,
        expected_recipient=recipient,
        purpose=SECRET_CONTEXT_PURPOSE,
    )
    meta = opened.header.metadata
    ctx = context_from_bytes(opened.plaintext, expect="secret", source="sealed secret context")
    try:
        params = parse_he_params(json.loads(meta.get("he_params", "{}")))
    except json.JSONDecodeError as e:
        raise KeyFileError(f"sealed he_params must be JSON; got {meta.get('he_params')!r}") from e
    if ctx.poly_modulus_degree != params.poly_modulus_degree:
        raise KeyFileError(
            f"secret context must use poly_modulus_degree {params.poly_modulus_degree} as "
            f"announced; got {ctx.poly_modulus_degree}"
        )
    fingerprint = hashlib.sha256(public_context_bytes(ctx)).hexdigest()
    if fingerprint != meta.get("public_context_sha256"):
        raise KeyFileError(
            f"secret context must match the announced public context "
            f"{meta.get('public_context_sha256')}; got {fingerprint}"
        )
    path = Path(own_ckks_dir) / f"{CONTEXT_STEM}{SECRET_SUFFIX}"
    _write_secret_context(path, opened.plaintext, params)
    return AcceptedContext(
        secret_context=path,
        sender=opened.header.sender,
        he_params=params,
        public_context_sha256=fingerprint,
        created_at=opened.header.created_at,
    )


@dataclass(frozen=True)
class VerifiedPublicContext:
    """A public context whose lead signature checked out."""

    data: bytes
    sha256: str
    he_params: HEParams
    signer: str


def verify_public_context(
    context_file: Path, signature_file: Path, *, manifest: FederationManifest
) -> VerifiedPublicContext:
    """Check that a public context is the lead's, unaltered, and holds no secret key.

    Raises
    ------
    IdentityError
        Missing/unreadable statement, not signed by the manifest's lead, or a hash mismatch.
    SecretContextRefusedError
        The file holds a secret key (the server must never hold one).
    """
    try:
        data = Path(context_file).read_bytes()
        statement = json.loads(Path(signature_file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IdentityError(f"public context and its signature must be readable; got {e}") from e
    if not isinstance(statement, dict) or statement.get("purpose") != PUBLIC_CONTEXT_PURPOSE:
        raise IdentityError(
            f"signature file {signature_file} must be a {PUBLIC_CONTEXT_PURPOSE} statement; "
            "got something else"
        )
    if statement.get("signer") != manifest.lead:
        raise IdentityError(
            f"public context must be signed by the lead {manifest.lead!r}; "
            f"got {statement.get('signer')!r}"
        )
    signature_text = statement.pop("signature", None)
    try:
        signature = base64.b64decode(str(signature_text), validate=True)
        manifest.party(manifest.lead).verify_key().verify(signature, _canonical(statement))
    except (InvalidSignature, ValueError, binascii.Error) as e:
        raise IdentityError(
            f"public context statement {signature_file} must carry a valid signature of the lead "
            f"{manifest.lead!r}; it does not (altered, or signed by another key)"
        ) from e
    fingerprint = hashlib.sha256(data).hexdigest()
    if fingerprint != statement.get("sha256"):
        raise IdentityError(
            f"public context {context_file} must hash to the signed {statement.get('sha256')}; "
            f"got {fingerprint} (the file was altered)"
        )
    context_from_bytes(data, expect="public", source=f"public context {context_file}")
    raw_params = statement.get("he_params")
    if not isinstance(raw_params, dict):
        raise IdentityError(f"public context statement must carry he_params; got {raw_params!r}")
    return VerifiedPublicContext(
        data=data,
        sha256=fingerprint,
        he_params=parse_he_params(raw_params),
        signer=manifest.lead,
    )
