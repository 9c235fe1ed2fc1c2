"""A party's enrolment request: its name and PUBLIC keys, signed with the keys it claims to hold.

A party creates its own key pairs on its own machine (``fedrisk party init``, in
:mod:`clients.enrollment`) and hands the coordinator only this request. The coordinator verifies
the self-signatures (:meth:`PartyRequest.verify`) and puts the public keys in the manifest; it
never generates or sees a party's private key.

Proof of possession: the Ed25519 signing key and the ECDSA SuperNode-auth key each sign the same
canonical payload (name and all three public keys). X25519 cannot sign; its public key is bound
into the payload that the Ed25519 key signs, and a party that lacks its private half only hurts
itself (it cannot open the secret sealed to it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
from collections.abc import Sequence
from typing import Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from fedrisk.errors import IdentityError
from fedrisk.federation.roster import FederationManifest, PartyRecord, check_party_name
from fedrisk.release.identity import (
    key_id,
    receiving_key_id,
    receiving_public_key_from_pem,
    verify_key_from_pem,
)

REQUEST_FILE: Final = "request.json"
"""The public request ``party init`` writes into the party's folder."""

MANIFEST_SIGNATURE_FILE: Final = "manifest.sig"
"""The CA's ECDSA signature over ``manifest.json`` (raw DER bytes)."""

_PAYLOAD_LABEL: Final = b"fedrisk-party-request-v1\n"
FINGERPRINT_HEX_CHARS: Final = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, *, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise IdentityError(f"{what} must be base64; got {text[:20]!r}") from e


def auth_public_key_from_line(line: str, *, source: str) -> ec.EllipticCurvePublicKey:
    """Parse an OpenSSH ECDSA public line (what ``flwr supernode register`` takes)."""
    try:
        key = serialization.load_ssh_public_key(line.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm) as e:
        raise IdentityError(f"{source} must be an OpenSSH ECDSA public key; got {e}") from e
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise IdentityError(f"{source} must be an ECDSA key; got {type(key).__name__}")
    return key


class PartyRequest(BaseModel):
    """``request.json``: a party's name and public keys with two self-signatures.

    Nothing in here is secret; the coordinator receives it and may publish it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = 1
    party: str
    signing_public_key: str
    receiving_public_key: str
    auth_public_key: str
    signature: str
    """Ed25519 signature of :meth:`payload` by the signing key (base64)."""
    auth_signature: str
    """ECDSA-SHA256 signature of :meth:`payload` by the SuperNode auth key (base64 DER)."""

    @field_validator("party")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return check_party_name(value)

    def payload(self) -> bytes:
        """The canonical bytes both keys sign: the name and the three public keys."""
        return request_payload(
            self.party, self.signing_public_key, self.receiving_public_key, self.auth_public_key
        )

    def verify(self) -> PartyRecord:
        """Check both self-signatures and return the party's public record for the manifest.

        Raises
        ------
        IdentityError
            A key does not parse or a signature does not verify; the message names the party.
        """
        source = f"request of {self.party}"
        verify_key = verify_key_from_pem(self.signing_public_key, source=f"signing key in {source}")
        receiving = receiving_public_key_from_pem(
            self.receiving_public_key, source=f"receiving key in {source}"
        )
        auth = auth_public_key_from_line(self.auth_public_key, source=f"auth key in {source}")
        payload = self.payload()
        try:
            verify_key.verify(_unb64(self.signature, what=f"signature in {source}"), payload)
        except InvalidSignature as e:
            raise IdentityError(
                f"{source} must be signed by its own signing key; got a signature that does not "
                "verify (altered request, or the key is not the sender's)"
            ) from e
        try:
            auth.verify(
                _unb64(self.auth_signature, what=f"auth signature in {source}"),
                payload,
                ec.ECDSA(hashes.SHA256()),
            )
        except InvalidSignature as e:
            raise IdentityError(
                f"{source} must be signed by its own SuperNode auth key; got a signature that "
                "does not verify"
            ) from e
        auth_line = self.auth_public_key.strip()
        return PartyRecord(
            name=self.party,
            signing_public_key=self.signing_public_key,
            signing_key_id=key_id(verify_key),
            receiving_public_key=self.receiving_public_key,
            receiving_key_id=receiving_key_id(receiving),
            auth_public_key=auth_line,
            auth_key_sha256=hashlib.sha256(auth_line.encode("ascii")).hexdigest(),
        )

    def to_json(self) -> str:
        """Canonical JSON text of the request."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def request_payload(party: str, signing_pem: str, receiving_pem: str, auth_line: str) -> bytes:
    """The bytes a request's keys sign (a labelled JSON list, so fields cannot run together)."""
    body = json.dumps([party, signing_pem, receiving_pem, auth_line.strip()], sort_keys=True)
    return _PAYLOAD_LABEL + body.encode("utf-8")


def sign_request(
    party: str,
    *,
    signing_key: Ed25519PrivateKey,
    receiving_pem: str,
    auth_key: ec.EllipticCurvePrivateKey,
) -> PartyRequest:
    """Build a request signed with the party's own signing and auth keys."""
    signing_pem = (
        signing_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    auth_line = (
        auth_key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )
    payload = request_payload(party, signing_pem, receiving_pem, auth_line)
    return PartyRequest(
        party=party,
        signing_public_key=signing_pem,
        receiving_public_key=receiving_pem,
        auth_public_key=auth_line,
        signature=_b64(signing_key.sign(payload)),
        auth_signature=_b64(auth_key.sign(payload, ec.ECDSA(hashes.SHA256()))),
    )


def parse_request(text: str, *, source: str) -> PartyRequest:
    """Validate ``request.json`` text (shape only; call :meth:`PartyRequest.verify` for trust)."""
    try:
        return PartyRequest.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError) as e:
        raise IdentityError(f"{source} must be a party request (request.json); got {e}") from e


def party_fingerprint(record: PartyRecord) -> str:
    """A short fingerprint of a party's three public keys, compared out of band.

    Grouped in fours (``ab12 cd34 …``) so two people can read it to each other.
    """
    body = json.dumps(
        [
            record.name,
            record.signing_public_key.strip(),
            record.receiving_public_key.strip(),
            record.auth_public_key.strip(),
        ]
    )
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()[:FINGERPRINT_HEX_CHARS]
    return " ".join(digest[i : i + 4] for i in range(0, len(digest), 4))


def manifest_fingerprints(manifest: FederationManifest) -> dict[str, str]:
    """Every party's fingerprint, in manifest order."""
    return {record.name: party_fingerprint(record) for record in manifest.parties}


TLS_REQUEST_FILE: Final = "tls-request.json"
"""A party's request for its mutual-TLS certificate (``party tls-request``): public only."""

_TLS_PAYLOAD_LABEL: Final = b"fedrisk-tls-request-v1\n"


class TlsRequest(BaseModel):
    """A party's certificate signing request, signed with its provisioned Ed25519 key.

    The party generates the TLS key pair on its own machine and keeps the private half; the
    coordinator's CA signs the request (:func:`server.coordinator.provisioning.certify_party`)
    only when this signature verifies under the manifest's key of ``party``, so nobody else can
    obtain a certificate in a party's name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = 1
    party: str
    csr: str
    """The PEM certificate signing request (common name = ``party``)."""
    signature: str
    """Ed25519 signature of :meth:`payload` by the party's signing key (base64)."""

    def payload(self) -> bytes:
        """The bytes the party's signing key signs."""
        return _TLS_PAYLOAD_LABEL + json.dumps([self.party, self.csr]).encode("utf-8")

    def verify(self, manifest: FederationManifest) -> x509.CertificateSigningRequest:
        """The request's CSR, once the party's signature and the CSR's own signature verify and
        its common name is the party.

        Raises
        ------
        IdentityError
            Another party's, an unknown party's, or an altered request.
        """
        source = f"TLS request of {self.party}"
        if self.party not in manifest.party_names:
            raise IdentityError(
                f"{source} must come from a party of {list(manifest.party_names)}; got "
                f"{self.party!r}"
            )
        key = verify_key_from_pem(manifest.party(self.party).signing_public_key, source=source)
        try:
            key.verify(_unb64(self.signature, what=f"signature in {source}"), self.payload())
        except InvalidSignature as e:
            raise IdentityError(
                f"{source} must be signed by that party's provisioned signing key; got a "
                "signature that does not verify"
            ) from e
        try:
            csr = x509.load_pem_x509_csr(self.csr.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as e:
            raise IdentityError(f"{source} must carry a PEM CSR; got {e}") from e
        names = [a.value for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if not csr.is_signature_valid or names != [self.party]:
            raise IdentityError(
                f"{source} must carry a self-signed CSR for common name {self.party!r}; got "
                f"{names} (signature {'valid' if csr.is_signature_valid else 'invalid'})"
            )
        return csr


def subject_alt_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    """A certificate's names: IP addresses as such, anything else as a DNS name."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def sign_tls_request(
    party: str, csr: x509.CertificateSigningRequest, *, signing_key: Ed25519PrivateKey
) -> TlsRequest:
    """The party's :class:`TlsRequest` for ``csr``, signed with its Ed25519 key."""
    pem = csr.public_bytes(serialization.Encoding.PEM).decode("ascii")
    unsigned = TlsRequest(party=party, csr=pem, signature="")
    return unsigned.model_copy(update={"signature": _b64(signing_key.sign(unsigned.payload()))})
