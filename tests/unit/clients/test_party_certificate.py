"""A party's mutual-TLS certificate: the party's own key, a CSR signed with its provisioned key,
the federation CA's signature, and the party's checks before it keeps the certificate."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from clients.bundle import load_bundle
from clients.enrollment import (
    PARTY_TLS_CERTIFICATE,
    PARTY_TLS_KEY,
    TLS_DIR,
    create_tls_request,
    install_party_certificate,
)
from fedrisk.errors import IdentityError
from fedrisk.federation.enrollment import TlsRequest, sign_tls_request
from server.coordinator.provisioning import ProvisionResult, certify_party
from simulations.enrollment import enroll_parties


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> ProvisionResult:
    root = tmp_path_factory.mktemp("party-tls")
    return enroll_parties(root / "coordinator", parties=("bank", "telco", "shop"))


def _request(federation: ProvisionResult, party: str, *hosts: str) -> TlsRequest:
    folder = federation.bundles[party]
    shutil.rmtree(folder / TLS_DIR, ignore_errors=True)
    path = create_tls_request(folder, hosts=hosts)
    return TlsRequest.model_validate_json(path.read_text(encoding="utf-8"))


def test_party_keeps_its_key_and_gets_a_ca_certificate_for_it(
    federation: ProvisionResult, tmp_path: Path
) -> None:
    request = _request(federation, "telco", "telco.example", "127.0.0.1")
    folder = federation.bundles["telco"]

    pem = certify_party(federation.workspace.root, request)
    (tmp_path / "telco.crt").write_bytes(pem)
    installed = install_party_certificate(folder, tmp_path / "telco.crt")

    key_file = folder / TLS_DIR / PARTY_TLS_KEY
    assert key_file.stat().st_mode & 0o077 == 0
    assert "PRIVATE" not in request.model_dump_json()
    assert installed == folder / TLS_DIR / PARTY_TLS_CERTIFICATE
    cert = x509.load_pem_x509_certificate(pem)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "telco.example" in names.get_values_for_type(x509.DNSName)
    # What `party serve` loads: the pair matches and chains to the federation's CA.
    context = ssl.create_default_context(cafile=str(load_bundle(folder).layout.ca_certificate))
    context.load_cert_chain(installed, key_file)


def test_ca_refuses_a_request_not_signed_by_the_named_party(
    federation: ProvisionResult,
) -> None:
    own = _request(federation, "shop")
    csr = x509.load_pem_x509_csr(own.csr.encode("ascii"))
    # shop's CSR, but claimed for bank and signed with shop's key: the manifest says otherwise.
    forged = sign_tls_request(
        "bank", csr, signing_key=load_bundle(federation.bundles["shop"]).signing_key()
    )

    with pytest.raises(IdentityError, match="signed by that party"):
        certify_party(federation.workspace.root, forged)
    with pytest.raises(IdentityError, match="common name 'bank'"):
        certify_party(
            federation.workspace.root,
            sign_tls_request(
                "bank", csr, signing_key=load_bundle(federation.bundles["bank"]).signing_key()
            ),
        )


def test_party_refuses_a_certificate_for_another_key(
    federation: ProvisionResult, tmp_path: Path
) -> None:
    pem = certify_party(federation.workspace.root, _request(federation, "shop"))
    (tmp_path / "shop.crt").write_bytes(pem)
    _request(federation, "shop")  # a new key: the certificate is for the old one

    with pytest.raises(IdentityError, match="another key"):
        install_party_certificate(federation.bundles["shop"], tmp_path / "shop.crt")
    assert not (federation.bundles["shop"] / TLS_DIR / PARTY_TLS_CERTIFICATE).exists()
