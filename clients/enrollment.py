"""The party's side of enrolment: create its own keys, then merge the coordinator's public bundle.

``fedrisk party init`` calls :func:`init_party` on the party's machine: the private keys are born
there (mode 0600 in 0700 folders) and only ``request.json`` (public keys + self-signatures) leaves.
``fedrisk party join`` calls :func:`join_federation` with the coordinator's bundle, which holds
public material only (``bundle.json``, ``ca.crt``, ``manifest.json``, ``manifest.sig``, the schema):
it checks that the manifest lists this party's own public keys, that the CA signed the manifest,
and copies the files into the party's folder, which then loads with
:func:`clients.bundle.load_bundle`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from clients.bundle import PartyBundle, load_bundle
from fedrisk.errors import IdentityError
from fedrisk.federation.enrollment import (
    MANIFEST_SIGNATURE_FILE,
    REQUEST_FILE,
    TLS_REQUEST_FILE,
    PartyRequest,
    manifest_fingerprints,
    parse_request,
    sign_request,
    sign_tls_request,
    subject_alt_names,
)
from fedrisk.federation.roster import BundleInfo, BundleLayout, check_party_name, load_manifest
from fedrisk.files import write_atomic
from fedrisk.release.identity import (
    generate_receiving_key,
    generate_signing_key,
    receiving_public_key_pem,
    save_private_key,
    save_public_key,
    save_receiving_key,
    save_receiving_public_key,
)

AUTH_CURVE: Final = ec.SECP384R1()
"""SuperNode auth keys: NIST P-384, what ``flwr supernode register`` documents (any NIST curve)."""

PRIVATE_DIR_MODE: Final = 0o700
PUBLIC_BUNDLE_FILES: Final = ("bundle.json", "ca.crt", "manifest.json", MANIFEST_SIGNATURE_FILE)
"""What the coordinator hands a party (plus ``schema.toml`` when it provisioned one)."""


def request_path(party_dir: Path) -> Path:
    """Where ``party init`` writes the public request."""
    return Path(party_dir) / REQUEST_FILE


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    path.chmod(PRIVATE_DIR_MODE)  # an existing empty folder given as --out keeps its own mode


def init_party(name: str, out: Path) -> PartyRequest:
    """Create a party's signing, receiving and SuperNode-auth key pairs in a new folder ``out``.

    Returns
    -------
    PartyRequest
        The public request, also written to ``out/request.json`` for the coordinator.

    Raises
    ------
    IdentityError
        An invalid name, or ``out`` exists and is not empty (keys are never overwritten).
    """
    check_party_name(name)
    out = Path(out).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise IdentityError(
            f"party folder must be new or empty (keys are never overwritten); got {out}"
        )
    layout = BundleLayout(out)
    _private_dir(out)
    _private_dir(layout.signing_key.parent)
    _private_dir(layout.auth_private_key.parent)
    signing = generate_signing_key()
    receiving = generate_receiving_key()
    auth = ec.generate_private_key(AUTH_CURVE)
    save_private_key(signing, layout.signing_key)
    save_public_key(signing.public_key(), layout.signing_public_key)
    save_receiving_key(receiving, layout.receiving_key)
    save_receiving_public_key(receiving.public_key(), layout.receiving_public_key)
    write_atomic(
        layout.auth_private_key,
        auth.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
        private=True,
    )
    auth_line = auth.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    write_atomic(layout.auth_public_key, auth_line + b"\n", private=False)
    request = sign_request(
        name,
        signing_key=signing,
        receiving_pem=receiving_public_key_pem(receiving.public_key()),
        auth_key=auth,
    )
    write_atomic(request_path(out), request.to_json(), private=False)
    return request


@dataclass(frozen=True)
class JoinResult:
    """A party folder that now holds the federation's public files next to its own keys."""

    bundle: PartyBundle
    fingerprints: dict[str, str]
    """Every party's public-key fingerprint, to compare out of band."""
    ca_certificate_sha256: str


def _verify_manifest_signature(bundle_dir: Path) -> None:
    ca_file = bundle_dir / "ca.crt"
    try:
        ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
        signature = (bundle_dir / MANIFEST_SIGNATURE_FILE).read_bytes()
        manifest_bytes = (bundle_dir / "manifest.json").read_bytes()
    except (OSError, ValueError) as e:
        raise IdentityError(
            f"coordinator bundle {bundle_dir} must hold ca.crt, manifest.json and "
            f"{MANIFEST_SIGNATURE_FILE}; got {e}"
        ) from e
    public = ca.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise IdentityError(f"CA certificate {ca_file} must hold an ECDSA key")
    try:
        public.verify(signature, manifest_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as e:
        raise IdentityError(
            f"manifest in {bundle_dir} must be signed by the federation CA; got a signature that "
            "does not verify"
        ) from e


def join_federation(party_dir: Path, coordinator_bundle: Path) -> JoinResult:
    """Check the coordinator's public bundle against this party's own keys and merge it in.

    Parameters
    ----------
    party_dir
        The folder ``init_party`` created (holds the private keys and ``request.json``).
    coordinator_bundle
        The folder the coordinator handed over for this party (public files only).

    Raises
    ------
    IdentityError
        The bundle is for another party, lists other public keys for this party than the ones it
        holds, carries a private key, or its manifest is not signed by its CA.
    """
    party_dir = Path(party_dir).resolve()
    source = Path(coordinator_bundle).resolve()
    own = parse_request(
        request_path(party_dir).read_text(encoding="utf-8"), source=str(request_path(party_dir))
    )
    try:
        info = BundleInfo.model_validate(json.loads((source / "bundle.json").read_text("utf-8")))
    except (OSError, ValueError, ValidationError) as e:
        raise IdentityError(f"coordinator bundle {source} must hold a valid bundle.json") from e
    if info.party != own.party:
        raise IdentityError(
            f"coordinator bundle must be for this party {own.party!r}; got one for {info.party!r}"
        )
    extra = sorted(
        p.name for p in source.iterdir() if p.name not in (*PUBLIC_BUNDLE_FILES, "schema.toml")
    )
    if extra:
        raise IdentityError(
            f"coordinator bundle must hold only public files {list(PUBLIC_BUNDLE_FILES)}; "
            f"got also {extra}"
        )
    _verify_manifest_signature(source)
    manifest = load_manifest(source / "manifest.json")
    record = manifest.party(own.party)
    if record != own.verify():
        raise IdentityError(
            f"manifest must list this party's own public keys for {own.party!r}; got different "
            "keys (do not use this bundle: report it to the other parties)"
        )
    names = [*PUBLIC_BUNDLE_FILES, *(["schema.toml"] if (source / "schema.toml").exists() else [])]
    for name in names:
        shutil.copyfile(source / name, party_dir / name)
    bundle = load_bundle(party_dir)
    ca_sha = hashlib.sha256(
        x509.load_pem_x509_certificate(bundle.layout.ca_certificate.read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
    ).hexdigest()
    return JoinResult(bundle, manifest_fingerprints(manifest), ca_sha)


TLS_DIR: Final = "tls"
PARTY_TLS_KEY: Final = "party.key"
PARTY_TLS_CERTIFICATE: Final = "party.crt"


def create_tls_request(party_dir: Path, *, hosts: Sequence[str] = ()) -> Path:
    """Generate this party's mutual-TLS key (mode 0600, it stays here) and write the request
    the coordinator's CA signs: a CSR for common name = the party and ``hosts``, signed with
    the party's provisioned Ed25519 key. Returns the request file (public).

    Raises
    ------
    IdentityError
        The folder holds no joined bundle, or a TLS key already (a new key is a new request:
        remove the old one first, on purpose).
    """
    bundle = load_bundle(Path(party_dir))
    folder = Path(party_dir) / TLS_DIR
    key_path = folder / PARTY_TLS_KEY
    if key_path.exists():
        raise IdentityError(f"TLS key {key_path} must not exist yet; got one (remove it first)")
    _private_dir(folder)
    key = ec.generate_private_key(ec.SECP384R1())
    write_atomic(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        private=True,
    )
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, bundle.name)])
    )
    if hosts:
        builder = builder.add_extension(subject_alt_names(hosts), critical=False)
    request = sign_tls_request(
        bundle.name, builder.sign(key, hashes.SHA384()), signing_key=bundle.signing_key()
    )
    target = Path(party_dir) / TLS_REQUEST_FILE
    write_atomic(target, request.model_dump_json(indent=1), private=False)
    return target


def install_party_certificate(party_dir: Path, certificate: Path) -> Path:
    """Check the CA's certificate against this party's own TLS key and CA, then keep it.

    Raises
    ------
    IdentityError
        Not issued by the federation's CA, not for this party's key, or not for its name.
    """
    bundle = load_bundle(Path(party_dir))
    folder = Path(party_dir) / TLS_DIR
    try:
        cert = x509.load_pem_x509_certificate(Path(certificate).read_bytes())
        key = serialization.load_pem_private_key(
            (folder / PARTY_TLS_KEY).read_bytes(), password=None
        )
        ca = x509.load_pem_x509_certificate(bundle.layout.ca_certificate.read_bytes())
        cert.verify_directly_issued_by(ca)
    except (OSError, ValueError, TypeError, InvalidSignature) as e:
        raise IdentityError(
            f"certificate {certificate} must be issued by the federation CA for this party's "
            f"TLS key ({folder / PARTY_TLS_KEY}); got {e or type(e).__name__}"
        ) from e
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cert.public_key() != key.public_key() or names != [bundle.name]:
        raise IdentityError(
            f"certificate {certificate} must be for {bundle.name}'s own TLS key; got one for "
            f"{names} with {'its' if cert.public_key() == key.public_key() else 'another'} key"
        )
    target = folder / PARTY_TLS_CERTIFICATE
    write_atomic(target, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return target
