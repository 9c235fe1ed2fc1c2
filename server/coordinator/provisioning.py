"""Coordinator provisioning: the federation CA, the SuperLink TLS identity, one bundle per party.

Workspace (the coordinator's own directory)::

    WORKSPACE/manifest.json                 parties and their PUBLIC keys, the lead, CA fingerprint
    WORKSPACE/ca/ca.crt, ca/ca.key          the federation's private CA (key mode 0600)
    WORKSPACE/superlink/superlink.crt|.key  the SuperLink's TLS identity (key mode 0600)
    WORKSPACE/auth/<party>.pub              SuperNode auth public keys, registered at server start
    WORKSPACE/ckks/ckks.public.ctx          the CKKS public context, after the key ceremony

    WORKSPACE/requests/<party>.json         the public requests the parties sent (``party init``)

Parties create their own keys (``fedrisk party init``) and send only a public request (name,
public keys, self-signatures). Bundles (``WORKSPACE-bundles/<party>/`` by default) hold public
files only: ``bundle.json``, the CA certificate, the manifest and the CA's signature of it, the
schema. The coordinator never generates or sees a party's private key, nor any CKKS secret key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedrisk.data.schema import load_schema
from fedrisk.errors import ConfigError, IdentityError
from fedrisk.federation.enrollment import (
    MANIFEST_SIGNATURE_FILE,
    PartyRequest,
    TlsRequest,
    parse_request,
    subject_alt_names,
)
from fedrisk.federation.roster import (
    PUBLIC_CONTEXT_FILE,
    PUBLIC_SIGNATURE_FILE,
    BundleInfo,
    BundleLayout,
    FederationManifest,
    PartyRecord,
    check_party_name,
    load_manifest,
)
from fedrisk.files import write_atomic
from secure_agg.ceremony import verify_public_context

DEFAULT_HOSTS: Final = ("127.0.0.1", "localhost")
"""Names the SuperLink certificate is always valid for (besides ``--host`` names)."""

CA_VALIDITY_DAYS: Final = 3650
_DNS_LABEL = r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_DNS_NAME = re.compile(rf"^(?=.{{1,253}}$){_DNS_LABEL}(\.{_DNS_LABEL})*$")
_PRIVATE_DIR_MODE: Final = 0o700


@dataclass(frozen=True)
class WorkspaceLayout:
    """Where each file of the coordinator's workspace lives."""

    root: Path

    @property
    def manifest(self) -> Path:
        """The federation manifest (public keys only)."""
        return self.root / "manifest.json"

    @property
    def ca_certificate(self) -> Path:
        """The federation CA certificate."""
        return self.root / "ca" / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The CA private key (mode 0600): the coordinator's own secret."""
        return self.root / "ca" / "ca.key"

    @property
    def superlink_dir(self) -> Path:
        """SuperLink TLS identity and runtime state (database, log, pid file)."""
        return self.root / "superlink"

    @property
    def superlink_certificate(self) -> Path:
        """The SuperLink's TLS certificate, signed by the CA."""
        return self.superlink_dir / "superlink.crt"

    @property
    def superlink_key(self) -> Path:
        """The SuperLink's TLS private key (mode 0600): the coordinator's own secret."""
        return self.superlink_dir / "superlink.key"

    @property
    def database(self) -> Path:
        """The SuperLink's link state (SQLite, on disk so nodes and runs survive a restart)."""
        return self.superlink_dir / "linkstate.db"

    @property
    def flwr_home(self) -> Path:
        """``FLWR_HOME`` of every flwr command run for this workspace."""
        return self.root / "flwr-home"

    @property
    def schema(self) -> Path:
        """The federation's dataset schema, when one was provisioned."""
        return self.root / "schema.toml"

    def request(self, party: str) -> Path:
        """The public request ``party`` sent (kept as the record of what was provisioned)."""
        return self.root / "requests" / f"{party}.json"

    def auth_public_key(self, party: str) -> Path:
        """The OpenSSH public key of ``party``'s SuperNode."""
        return self.root / "auth" / f"{party}.pub"

    @property
    def ckks_dir(self) -> Path:
        """The CKKS public context, installed after the key ceremony."""
        return self.root / "ckks"

    @property
    def public_context(self) -> Path:
        """The CKKS public context the ServerApp aggregates with."""
        return self.ckks_dir / PUBLIC_CONTEXT_FILE

    @property
    def coordinator_secret_files(self) -> tuple[Path, ...]:
        """The only private keys the coordinator may hold: its CA and TLS keys."""
        return (self.ca_key, self.superlink_key)


@dataclass(frozen=True)
class ProvisionResult:
    """What ``provision_workspace`` produced (or found, when re-run with the same arguments)."""

    workspace: WorkspaceLayout
    manifest: FederationManifest
    bundles: dict[str, Path]
    created: bool


def default_bundles_dir(workspace: Path) -> Path:
    """``WORKSPACE-bundles`` beside the workspace: the public bundles to send to the parties."""
    workspace = Path(workspace).resolve()
    return workspace.parent / f"{workspace.name}-bundles"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def check_host(host: str, *, name: str = "host") -> str:
    """``host`` without surrounding blanks; a ``ConfigError`` unless it is an IP or a DNS name."""
    host = host.strip()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _DNS_NAME.fullmatch(host):
            raise ConfigError(
                f"{name} must be an IP address or a DNS name (no wildcards); got {host!r}"
            ) from None
    return host


def _check_hosts(hosts: Sequence[str]) -> tuple[str, ...]:
    result: list[str] = []
    for host in (*DEFAULT_HOSTS, *hosts):
        host = check_host(host)
        if host not in result:
            result.append(host)
    return tuple(result)


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    return subject_alt_names(hosts)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def create_ca(
    federation: str, *, validity_days: int = CA_VALIDITY_DAYS
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed ECDSA P-384 CA that may sign end-entity certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fedrisk {federation} CA")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def issue_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    hosts: Sequence[str],
    validity_days: int,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A TLS server certificate for the SuperLink, valid for ``hosts`` (IP or DNS SANs)."""
    return _issue(
        ca_key,
        ca_cert,
        common_name="fedrisk-superlink",
        hosts=hosts,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        validity_days=validity_days,
    )


def issue_party_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    party: str,
    hosts: Sequence[str],
    validity_days: int,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A party's mutual-TLS certificate (server and client use, common name = the party), for
    online scoring between parties: a host's feature service and the lender calling it."""
    return _issue(
        ca_key,
        ca_cert,
        common_name=party,
        hosts=hosts,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        validity_days=validity_days,
    )


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    common_name: str,
    hosts: Sequence[str],
    usages: list[x509.ObjectIdentifier],
    validity_days: int,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = _certificate(
        ca_key,
        ca_cert,
        key.public_key(),
        common_name=common_name,
        hosts=hosts,
        usages=usages,
        validity_days=validity_days,
    )
    return key, cert


def _certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    *,
    common_name: str,
    hosts: Sequence[str],
    usages: list[x509.ObjectIdentifier],
    validity_days: int,
) -> x509.Certificate:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=validity_days))
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA384())
    )


def certify_party(workspace: Path, request: TlsRequest, *, validity_days: int = 365) -> bytes:
    """The federation CA's mutual-TLS certificate (PEM) for a party's own key.

    The party generated the key and sent only a CSR signed with its provisioned Ed25519 key
    (:class:`~fedrisk.federation.enrollment.TlsRequest`): the coordinator never holds the
    private key. The certificate serves both ways (a host's ``fedrisk party serve`` and the
    lender's client side), common name = the party, names = the CSR's subject alternative names.

    Raises
    ------
    IdentityError
        The request is not signed by a party of the manifest, or its CSR is not that party's.
    ConfigError
        A requested host name is not an IP address or DNS name.
    """
    layout = WorkspaceLayout(Path(workspace))
    csr = request.verify(load_manifest(layout.manifest))
    try:
        alt = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        hosts = [str(h) for h in alt.get_values_for_type(x509.DNSName)]
        hosts += [str(ip) for ip in alt.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        hosts = []
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise IdentityError(
            f"TLS request of {request.party} must carry an ECDSA key; got "
            f"{type(public_key).__name__}"
        )
    ca_key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise IdentityError(f"CA key {layout.ca_key} must be an ECDSA key")
    ca_cert = x509.load_pem_x509_certificate(layout.ca_certificate.read_bytes())
    cert = _certificate(
        ca_key,
        ca_cert,
        public_key,
        common_name=request.party,
        hosts=_check_hosts(hosts),
        usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        validity_days=validity_days,
    )
    return _pem_cert(cert)


def _pem_private(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_new(path: Path, data: bytes, *, private: bool) -> None:
    """Create ``path`` (never replace one), with mode 0600 for private files."""
    if path.exists():
        raise ConfigError(f"file must not exist yet (keys are never overwritten); got {path}")
    path.parent.mkdir(parents=True, exist_ok=True, mode=_PRIVATE_DIR_MODE if private else 0o755)
    write_atomic(path, data, private=private)


def _is_empty_dir(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _same_request(
    manifest: FederationManifest,
    records: Sequence[PartyRecord],
    hosts: Sequence[str],
    lead: str,
) -> bool:
    return (
        sorted(manifest.parties, key=lambda r: r.name) == sorted(records, key=lambda r: r.name)
        and manifest.lead == lead
        and set(manifest.superlink_hosts) == set(hosts)
    )


def _write_public_bundle(
    layout: BundleLayout,
    *,
    info: BundleInfo,
    ca_pem: bytes,
    schema_bytes: bytes | None,
) -> None:
    """Write one party's bundle: public files only (the manifest and its signature come last)."""
    layout.root.mkdir(parents=True)
    _write_new(layout.info, (info.model_dump_json(indent=2) + "\n").encode(), private=False)
    _write_new(layout.ca_certificate, ca_pem, private=False)
    if schema_bytes is not None:
        _write_new(layout.schema, schema_bytes, private=False)


def read_requests(requests: Sequence[Path | PartyRequest]) -> list[PartyRequest]:
    """Parse request files (or take parsed requests) and verify every self-signature.

    Raises
    ------
    IdentityError
        A file is unreadable or not a request, or a signature does not verify.
    """
    parsed: list[PartyRequest] = []
    for item in requests:
        if isinstance(item, PartyRequest):
            request = item
        else:
            path = Path(item)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise IdentityError(f"party request {path} must be readable; got {e}") from e
            request = parse_request(text, source=f"party request {path}")
        request.verify()
        parsed.append(request)
    return parsed


@dataclass(frozen=True)
class _Request:
    """A checked provisioning request: who the parties are and where their files go."""

    layout: WorkspaceLayout
    requests: list[PartyRequest]
    records: list[PartyRecord]
    lead: str
    hosts: tuple[str, ...]
    bundles_root: Path
    validity_days: int

    @property
    def parties(self) -> list[str]:
        """Party names in request order."""
        return [r.party for r in self.requests]


def _check_request(
    workspace: Path,
    *,
    requests: Sequence[Path | PartyRequest],
    hosts: Sequence[str],
    lead: str | None,
    bundles_dir: Path | None,
    validity_days: int,
) -> _Request:
    """Validate every argument before anything is read or written."""
    layout = WorkspaceLayout(Path(workspace).resolve())
    parsed = read_requests(requests)
    names = [r.party for r in parsed]
    if not names:
        raise ConfigError("requests must hold at least one party's request; got none")
    if len(set(names)) != len(names):
        raise ConfigError(f"parties must be unique; got {names}")
    lead_name = check_party_name(lead) if lead else names[0]
    if lead_name not in names:
        raise ConfigError(f"lead must be one of the parties {names}; got {lead_name!r}")
    all_hosts = _check_hosts(hosts)
    if validity_days < 1:
        raise ConfigError(f"validity_days must be >= 1; got {validity_days}")
    bundles_root = Path(bundles_dir).resolve() if bundles_dir else default_bundles_dir(layout.root)
    if bundles_root == layout.root or layout.root in bundles_root.parents:
        raise ConfigError(
            "bundles directory must be outside the workspace (each party's files go to that "
            f"party only); got {bundles_root}"
        )
    records = [r.verify() for r in parsed]
    for attr in ("signing_key_id", "receiving_key_id", "auth_key_sha256"):
        values = [getattr(r, attr) for r in records]
        if len(set(values)) != len(values):
            raise ConfigError(f"party requests must not share keys; got a repeated {attr}")
    return _Request(layout, parsed, records, lead_name, all_hosts, bundles_root, validity_days)


def _existing_provision(request: _Request) -> ProvisionResult | None:
    """The result of an identical earlier run; refuse a workspace or bundles dir in the way."""
    layout = request.layout
    if layout.manifest.exists():
        manifest = load_manifest(layout.manifest)
        if _same_request(manifest, request.records, request.hosts, request.lead):
            return ProvisionResult(layout, manifest, {}, created=False)
        raise ConfigError(
            f"workspace {layout.root} is already provisioned for parties {manifest.party_names} "
            f"(lead {manifest.lead}, hosts {list(manifest.superlink_hosts)}); refusing to replace "
            f"its keys with parties {request.parties} (lead {request.lead}, hosts "
            f"{list(request.hosts)}). Use a new workspace."
        )
    if not _is_empty_dir(layout.root):
        raise ConfigError(
            f"workspace must be a new or empty directory; got {layout.root} with files but no "
            "manifest.json (an interrupted provisioning?): remove it and run again"
        )
    if not _is_empty_dir(request.bundles_root):
        raise ConfigError(f"bundles directory must be new or empty; got {request.bundles_root}")
    return None


def _read_schema(schema_file: Path | None) -> bytes | None:
    """The schema file's bytes, refused if invalid before anything is written."""
    if schema_file is None:
        return None
    load_schema(Path(schema_file))
    return Path(schema_file).read_bytes()


def _write_coordinator_identity(
    request: _Request, *, schema_bytes: bytes | None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Create the CA and the SuperLink's TLS identity in the workspace; returns the CA."""
    layout = request.layout
    ca_key, ca_cert = create_ca(layout.root.name)
    server_key, server_cert = issue_server_certificate(
        ca_key, ca_cert, hosts=request.hosts, validity_days=request.validity_days
    )
    layout.root.mkdir(parents=True, exist_ok=True, mode=_PRIVATE_DIR_MODE)
    _write_new(layout.ca_certificate, _pem_cert(ca_cert), private=False)
    _write_new(layout.ca_key, _pem_private(ca_key), private=True)
    _write_new(layout.superlink_certificate, _pem_cert(server_cert), private=False)
    _write_new(layout.superlink_key, _pem_private(server_key), private=True)
    if schema_bytes is not None:
        _write_new(layout.schema, schema_bytes, private=False)
    return ca_key, ca_cert


def _write_bundles(
    request: _Request, *, ca_pem: bytes, schema_bytes: bytes | None, created_at: str
) -> dict[str, Path]:
    """One public bundle per party; its request and SuperNode auth key kept in the workspace."""
    request.bundles_root.mkdir(parents=True, exist_ok=True)
    bundles: dict[str, Path] = {}
    for party, record in zip(request.requests, request.records, strict=True):
        bundle = BundleLayout(request.bundles_root / party.party)
        info = BundleInfo(
            party=party.party,
            federation=request.layout.root.name,
            lead=request.lead,
            superlink_hosts=request.hosts,
            created_at=created_at,
        )
        _write_public_bundle(bundle, info=info, ca_pem=ca_pem, schema_bytes=schema_bytes)
        _write_new(request.layout.request(party.party), party.to_json().encode(), private=False)
        _write_new(
            request.layout.auth_public_key(party.party),
            (record.auth_public_key + "\n").encode(),
            private=False,
        )
        bundles[party.party] = bundle.root
    return bundles


def _sign_manifest(ca_key: ec.EllipticCurvePrivateKey, manifest_bytes: bytes) -> bytes:
    """The CA's signature over the manifest: parties check it at ``party join``."""
    return ca_key.sign(manifest_bytes, ec.ECDSA(hashes.SHA384()))


def _write_manifests(
    request: _Request,
    *,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    bundles: dict[str, Path],
    created_at: str,
) -> FederationManifest:
    """Write the signed public manifest into every bundle, then into the workspace (last)."""
    manifest = FederationManifest(
        federation=request.layout.root.name,
        created_at=created_at,
        lead=request.lead,
        ca_certificate_sha256=hashlib.sha256(
            ca_cert.public_bytes(serialization.Encoding.DER)
        ).hexdigest(),
        superlink_hosts=request.hosts,
        parties=tuple(request.records),
    )
    manifest_bytes = manifest.to_json().encode()
    signature = _sign_manifest(ca_key, manifest_bytes)
    for name in request.parties:
        layout = BundleLayout(bundles[name])
        _write_new(layout.manifest, manifest_bytes, private=False)
        _write_new(layout.root / MANIFEST_SIGNATURE_FILE, signature, private=False)
    _write_new(request.layout.root / MANIFEST_SIGNATURE_FILE, signature, private=False)
    # Its presence marks a finished run: an interrupted one leaves none (see provision_workspace).
    _write_new(request.layout.manifest, manifest_bytes, private=False)
    return manifest


def provision_workspace(
    workspace: Path,
    *,
    requests: Sequence[Path | PartyRequest],
    hosts: Sequence[str] = (),
    lead: str | None = None,
    bundles_dir: Path | None = None,
    schema_file: Path | None = None,
    validity_days: int = 365,
) -> ProvisionResult:
    """Create the federation's CA, the SuperLink's TLS identity and the signed manifest of the
    parties' public keys, from the parties' own requests.

    Parameters
    ----------
    workspace
        The coordinator's directory; must be new or empty (or already provisioned identically).
    requests
        Each party's ``request.json`` from ``fedrisk party init`` (or the parsed request); every
        self-signature is verified before anything is written.
    hosts
        Extra names or IPs the SuperLink certificate must be valid for; ``127.0.0.1`` and
        ``localhost`` are always included.
    lead
        The party that runs the CKKS key ceremony; defaults to the first request's party.
    bundles_dir
        Where the per-party public bundles go; default ``WORKSPACE-bundles`` beside the workspace.
    schema_file
        Optional dataset schema (TOML) copied into every bundle and the workspace.
    validity_days
        Lifetime of the SuperLink certificate.

    Returns
    -------
    ProvisionResult
        ``created`` is false when the workspace was already provisioned with the same parties and
        keys, lead and hosts: nothing is written then.

    Raises
    ------
    IdentityError
        A request is unreadable or its self-signature does not verify.
    ConfigError
        Invalid names, two requests sharing a key, a workspace provisioned differently, a
        non-empty workspace without a manifest (an interrupted run), or a non-empty bundles
        directory. Keys are never overwritten.

    Notes
    -----
    The coordinator never generates, receives or writes a party's private key: a bundle holds
    ``bundle.json``, the CA certificate, the manifest, the CA's signature of it and the schema,
    all public. The party merges it into its own folder with ``fedrisk party join``. The
    manifest is written last, so an interrupted run leaves no manifest and a re-run refuses
    instead of mixing old and new keys.
    """
    request = _check_request(
        workspace,
        requests=requests,
        hosts=hosts,
        lead=lead,
        bundles_dir=bundles_dir,
        validity_days=validity_days,
    )
    existing = _existing_provision(request)
    if existing is not None:
        return existing
    schema_bytes = _read_schema(schema_file)
    ca_key, ca_cert = _write_coordinator_identity(request, schema_bytes=schema_bytes)
    created_at = _now().isoformat(timespec="seconds")
    bundles = _write_bundles(
        request, ca_pem=_pem_cert(ca_cert), schema_bytes=schema_bytes, created_at=created_at
    )
    manifest = _write_manifests(
        request, ca_key=ca_key, ca_cert=ca_cert, bundles=bundles, created_at=created_at
    )
    return ProvisionResult(request.layout, manifest, bundles, created=True)


def install_public_context(
    workspace: Path, *, context_file: Path, signature_file: Path | None = None
) -> Path:
    """Install the lead's CKKS public context into the workspace after checking its signature.

    Parameters
    ----------
    workspace
        A provisioned workspace.
    context_file
        ``coordinator/ckks.public.ctx`` from the key ceremony's output.
    signature_file
        Its ``.sig.json`` statement; default: next to ``context_file``.

    Returns
    -------
    Path
        The installed public context (``WORKSPACE/ckks/ckks.public.ctx``).

    Raises
    ------
    IdentityError
        Not signed by the manifest's lead, or altered.
    SecretContextRefusedError
        The file holds a secret key: the coordinator refuses to store it.
    ConfigError
        A different public context is already installed.
    """
    layout = WorkspaceLayout(Path(workspace).resolve())
    manifest = load_manifest(layout.manifest)
    context_file = Path(context_file)
    signature_file = (
        Path(signature_file) if signature_file else context_file.with_name(PUBLIC_SIGNATURE_FILE)
    )
    verified = verify_public_context(context_file, signature_file, manifest=manifest)
    target = layout.public_context
    if target.exists():
        if target.read_bytes() == verified.data:
            return target
        raise ConfigError(
            f"public context must not be replaced once installed (parties hold the matching "
            f"secret); got a different one than {target}"
        )
    layout.ckks_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(target, verified.data, private=False)
    shutil.copyfile(signature_file, layout.ckks_dir / PUBLIC_SIGNATURE_FILE)
    return target


def workspace_private_key_files(workspace: Path) -> list[Path]:
    """Every file under ``workspace`` that contains a PEM/OpenSSH private key marker."""
    found: list[Path] = []
    for path in sorted(Path(workspace).rglob("*")):
        if path.is_file() and not path.is_symlink():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            if b"PRIVATE KEY-----" in data:
                found.append(path)
    return found
