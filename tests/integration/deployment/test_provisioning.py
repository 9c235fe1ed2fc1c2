"""Provisioning from party requests: CA and SuperLink certificate, public bundles, manifest,
refusal to overwrite."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from pathlib import Path

import pytest
import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.supercore.primitives.asymmetric import uses_nist_ec_curve
from typer.testing import CliRunner

from clients.bundle import load_bundle
from clients.enrollment import init_party, request_path
from fedrisk.errors import ConfigError, IdentityError
from fedrisk.federation.roster import BundleLayout, load_manifest
from server.coordinator.cli import register
from server.coordinator.provisioning import (
    ProvisionResult,
    WorkspaceLayout,
    provision_workspace,
    workspace_private_key_files,
)
from tests.support.federation import PARTIES

PRIVATE_MARKER = b"PRIVATE KEY-----"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _private_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and PRIVATE_MARKER in p.read_bytes()]


def _requests(root: Path, names: list[str]) -> list[Path]:
    """Each party's ``party init`` on its own (simulated) machine under ``root``."""
    paths = []
    for name in names:
        folder = root / name
        if not request_path(folder).exists():
            init_party(name, folder)
        paths.append(request_path(folder))
    return paths


def _federation_requests(federation: ProvisionResult) -> list[Path]:
    return [request_path(root) for root in federation.bundles.values()]


def test_superlink_certificate_is_signed_by_the_ca_and_covers_local_names(
    federation: ProvisionResult,
) -> None:
    ws = federation.workspace
    ca = x509.load_pem_x509_certificate(ws.ca_certificate.read_bytes())
    cert = x509.load_pem_x509_certificate(ws.superlink_certificate.read_bytes())

    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    key = serialization.load_pem_private_key(ws.superlink_key.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()


def test_extra_hosts_go_into_the_certificate(tmp_path: Path) -> None:
    result = provision_workspace(
        tmp_path / "ws",
        requests=_requests(tmp_path / "machines", ["bank_a"]),
        hosts=["link.example.org", "10.1.2.3"],
    )

    cert = x509.load_pem_x509_certificate(result.workspace.superlink_certificate.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "link.example.org" in san.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("10.1.2.3") in san.get_values_for_type(x509.IPAddress)
    assert "link.example.org" in result.manifest.superlink_hosts


def test_private_key_files_are_mode_0600(federation: ProvisionResult) -> None:
    ws = federation.workspace
    private = [ws.ca_key, ws.superlink_key]
    for bundle_root in federation.bundles.values():
        b = BundleLayout(bundle_root)
        private += [b.auth_private_key, b.signing_key, b.receiving_key]

    assert {_mode(p) for p in private} == {0o600}
    for bundle_root in federation.bundles.values():
        assert _mode(bundle_root) == 0o700


def test_auth_keys_are_what_flower_accepts(federation: ProvisionResult) -> None:
    for name, bundle_root in federation.bundles.items():
        b = BundleLayout(bundle_root)
        # flower-supernode: load_ssh_private_key + EllipticCurvePrivateKey
        private = serialization.load_ssh_private_key(b.auth_private_key.read_bytes(), None)
        # flwr supernode register: load_ssh_public_key + NIST curve
        public = serialization.load_ssh_public_key(b.auth_public_key.read_bytes())
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert uses_nist_ec_curve(public)
        assert private.public_key() == public
        assert federation.workspace.auth_public_key(name).read_bytes() == (
            b.auth_public_key.read_bytes()
        )


def test_manifest_lists_public_keys_only(federation: ProvisionResult) -> None:
    ws = federation.workspace
    text = ws.manifest.read_bytes()
    manifest = load_manifest(ws.manifest)

    assert PRIVATE_MARKER not in text
    assert manifest.party_names == list(PARTIES)
    assert manifest.lead == "bank_a"
    for record in manifest.parties:
        assert record.signing_public_key.startswith("-----BEGIN PUBLIC KEY-----")
        assert record.receiving_public_key.startswith("-----BEGIN PUBLIC KEY-----")
        assert record.auth_public_key.startswith("ecdsa-sha2-nistp384 ")


def test_nothing_in_a_bundle_belongs_to_another_party(federation: ProvisionResult) -> None:
    secrets_by_party = {
        name: {p.read_bytes() for p in _private_files(root)}
        for name, root in federation.bundles.items()
    }

    for name, root in federation.bundles.items():
        bundle = load_bundle(root)  # checks own keys against the manifest
        assert bundle.name == name
        own = secrets_by_party[name]
        assert len(own) == 3
        others = set().union(*(s for n, s in secrets_by_party.items() if n != name))
        assert not own & others
        all_bytes = b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())
        for secret in others:
            assert secret not in all_bytes


def test_coordinator_workspace_holds_only_its_own_private_keys(
    federation: ProvisionResult,
) -> None:
    ws = federation.workspace

    found = workspace_private_key_files(ws.root)

    assert sorted(found) == sorted(ws.coordinator_secret_files)
    for bundle_root in federation.bundles.values():
        assert ws.root not in bundle_root.parents


def test_rerun_with_same_arguments_is_a_no_op(
    federation: ProvisionResult, schema_file: Path
) -> None:
    ws = federation.workspace
    before = {p: p.read_bytes() for p in ws.root.rglob("*") if p.is_file()}

    again = provision_workspace(
        ws.root, requests=list(reversed(_federation_requests(federation))), lead="bank_a"
    )

    assert not again.created
    assert again.manifest == federation.manifest
    assert {p: p.read_bytes() for p in ws.root.rglob("*") if p.is_file()} == before


def test_rerun_with_other_parties_is_refused_and_changes_nothing(
    federation: ProvisionResult,
) -> None:
    ws = federation.workspace
    before = {p: p.read_bytes() for p in ws.root.rglob("*") if p.is_file()}

    with pytest.raises(ConfigError, match="already provisioned"):
        provision_workspace(ws.root, requests=_federation_requests(federation)[:2])

    assert {p: p.read_bytes() for p in ws.root.rglob("*") if p.is_file()} == before


def test_interrupted_workspace_without_manifest_is_refused(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "ca").mkdir(parents=True)
    (ws / "ca" / "ca.key").write_text("half-written")

    with pytest.raises(ConfigError, match="new or empty"):
        provision_workspace(ws, requests=_requests(tmp_path / "machines", ["bank_a"]))


@pytest.mark.parametrize(
    ("parties", "lead", "message"),
    [
        (["bank_a", "bank_a"], None, "unique"),
        (["bank_a"], "bank_b", "lead"),
        ([], None, "at least one"),
    ],
)
def test_bad_party_lists_are_refused(
    tmp_path: Path, parties: list[str], lead: str | None, message: str
) -> None:
    requests = _requests(tmp_path / "machines", parties)

    with pytest.raises((ConfigError, IdentityError), match=message):
        provision_workspace(tmp_path / "ws", requests=requests, lead=lead)

    assert not (tmp_path / "ws" / "manifest.json").exists()


def test_bundles_inside_the_workspace_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="outside the workspace"):
        provision_workspace(
            tmp_path / "ws",
            requests=_requests(tmp_path / "machines", ["bank_a"]),
            bundles_dir=tmp_path / "ws" / "bundles",
        )


def test_bundle_with_readable_private_key_is_refused(federation: ProvisionResult) -> None:
    layout = BundleLayout(federation.bundles["bank_b"])
    os.chmod(layout.signing_key, 0o644)

    with pytest.raises(IdentityError, match="must be mode 0600"):
        load_bundle(layout.root)


def test_bundle_with_another_partys_key_is_refused(federation: ProvisionResult) -> None:
    mine = BundleLayout(federation.bundles["bank_b"])
    theirs = BundleLayout(federation.bundles["telco_c"])
    mine.receiving_key.write_bytes(theirs.receiving_key.read_bytes())

    with pytest.raises(IdentityError, match="receiving key does not match"):
        load_bundle(mine.root)


def test_provision_command_creates_then_refuses(tmp_path: Path) -> None:
    cli = typer.Typer()
    register(cli)
    runner = CliRunner()
    ws = tmp_path / "ws"
    requests = _requests(tmp_path / "machines", ["bank_a", "bank_b", "telco_c"])
    args = ["provision", "--workspace", str(ws)]
    for path in requests:
        args += ["--request", str(path)]

    first = runner.invoke(cli, args)
    same = runner.invoke(cli, args)
    other = runner.invoke(cli, args[:-2])

    assert first.exit_code == 0, first.output
    assert "bank_b" in first.output and "public files only" in first.output
    assert "Party fingerprints" in first.output
    assert same.exit_code == 0 and "nothing was written" in same.output
    assert other.exit_code == 1
    assert "already provisioned" in other.output
    manifest = json.loads((ws / "manifest.json").read_text())
    assert [p["name"] for p in manifest["parties"]] == ["bank_a", "bank_b", "telco_c"]
    assert WorkspaceLayout(ws).ca_key.exists()
