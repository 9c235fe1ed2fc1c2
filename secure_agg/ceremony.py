"""The CKKS key ceremony: sealed secret contexts and the signed public context."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedrisk.errors import IdentityError
from fedrisk.federation.roster import (
    CONTEXT_STEM,
    COORDINATOR_DIR,
    PUBLIC_CONTEXT_FILE,
    PUBLIC_CONTEXT_PURPOSE,
    PUBLIC_SIGNATURE_FILE,
    SEALED_SUFFIX,
    SECRET_CONTEXT_PURPOSE,
    SECRET_SUFFIX,
    FederationManifest,
)
from fedrisk.files import write_atomic
from fedrisk.release.identity import (
    key_id,
    read_sealed_header,
    seal_for,
)
from secure_agg.errors import KeyFileError
from secure_agg.keys import (
    context_from_bytes,
    generate_context,
    public_context_bytes,
    secret_context_bytes,
)
from secure_agg.params import HEParams, parse_he_params

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
    write_atomic(path, data, private=True)
    params_file = path.parent / "he_params.json"
    write_atomic(
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
    by the lead (``fedrisk.release.identity.seal_for``). The coordinator's directory receives the
    public
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
        write_atomic(path, blob, private=True)
        sealed[record.name] = path

    coordinator = out_dir / COORDINATOR_DIR
    coordinator.mkdir()
    public_path = coordinator / PUBLIC_CONTEXT_FILE
    write_atomic(public_path, public_bytes, private=False)
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
    write_atomic(signature_path, (json.dumps(statement, indent=2) + "\n").encode(), private=False)

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
    opened = manifest.open_from_lead(
        sealed, recipient=recipient, receiving_key=receiving_key, purpose=SECRET_CONTEXT_PURPOSE
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
