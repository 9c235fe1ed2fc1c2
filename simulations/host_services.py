"""Running a vertical model's host feature services on one machine: the federation's CA and the
parties' certificates, ``fedrisk party serve`` on 127.0.0.1, waiting until every service
answers over mutual TLS, and the lender's ``FEDRISK_VERTICAL_*`` settings to reach them.

The one way the demo, the tests (``tests/support/feature_hosts.py``) and the benchmarks
(``benchmarks/vertical_hosts.py``) start host services. A real federation gets the same files
from provisioning (``server.coordinator.provisioning.issue_party_certificate``).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

from fedrisk.errors import FedRiskError
from fedrisk.federation.processes import console_script, pick_free_port, start_logged_process
from server.coordinator.provisioning import create_ca, issue_party_certificate


class HostServiceError(FedRiskError, RuntimeError):
    """A host feature service did not start or answer."""


@dataclass(frozen=True)
class LocalCa:
    """A federation CA on disk (``ca.pem``) that issues parties' certificates into ``root``."""

    root: Path
    key: EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def ca_file(self) -> Path:
        """The CA certificate every party trusts."""
        return self.root / "ca.pem"

    def issue(self, party: str, *, validity_days: int = 1) -> tuple[Path, Path]:
        """``party``'s certificate and private key (0600) for 127.0.0.1, server and client use."""
        key, cert = issue_party_certificate(
            self.key, self.cert, party=party, hosts=["127.0.0.1"], validity_days=validity_days
        )
        cert_file, key_file = self.root / f"{party}.crt", self.root / f"{party}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        key_file.chmod(0o600)
        return cert_file, key_file


def create_local_ca(root: Path, name: str) -> LocalCa:
    """A fresh federation CA named ``name``, its certificate written to ``root/ca.pem``."""
    root.mkdir(parents=True, exist_ok=True)
    key, cert = create_ca(name)
    ca = LocalCa(root, key, cert)
    ca.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca


def lender_tls(ca_file: Path, cert: tuple[Path, Path] | tuple[str, str]) -> ssl.SSLContext:
    """The lender's TLS context: the federation CA, and its own certificate to present."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


def start_feature_service(config: Path, *, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``fedrisk party serve --config CONFIG`` on a free port of 127.0.0.1, in its own session
    (stop it by PID); returns the process and its ``https://`` URL."""
    port = pick_free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = start_logged_process(
        [console_script("fedrisk"), "party", "serve", "--config", str(config), "--port", str(port)],
        log_path=log_path,
    )
    return proc, f"https://127.0.0.1:{port}"


def wait_until_serving(urls: dict[str, str], tls: ssl.SSLContext, *, timeout: float = 60.0) -> None:
    """Wait until every service's ``/healthz`` answers 200 over mutual TLS.

    Raises
    ------
    HostServiceError
        If one does not within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    pending = dict(urls)
    with httpx.Client(verify=tls, timeout=2.0) as client:
        while pending:
            for name, url in list(pending.items()):
                try:
                    if client.get(f"{url}/healthz").status_code == 200:
                        pending.pop(name)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                raise HostServiceError(
                    f"feature services {sorted(pending)} must answer within {timeout:.0f} s; "
                    "they did not (see their serve.log)"
                )
            if pending:
                time.sleep(0.2)


def lender_environment(
    urls: dict[str, str],
    *,
    client_cert: tuple[Path, Path] | tuple[str, str],
    ca_file: Path | str,
    identifier_key: Path,
    deadline: float,
) -> dict[str, str]:
    """The scoring service's ``FEDRISK_VERTICAL_*`` variables to reach the hosts at ``urls``."""
    return {
        "FEDRISK_VERTICAL_HOSTS": json.dumps(urls),
        "FEDRISK_VERTICAL_CLIENT_CERTIFICATE": str(client_cert[0]),
        "FEDRISK_VERTICAL_CLIENT_KEY": str(client_cert[1]),
        "FEDRISK_VERTICAL_CA_CERTIFICATE": str(ca_file),
        "FEDRISK_VERTICAL_IDENTIFIER_KEY_PATH": str(identifier_key),
        "FEDRISK_VERTICAL_DEADLINE_SECONDS": str(deadline),
    }
