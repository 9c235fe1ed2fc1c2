"""Parties create their own keys: requests, provisioning from them, and ``party join`` checks.

The coordinator must never hold a party's private key: the search below looks through every file
the coordinator wrote or received for any party's private key, in every encoding we can think of.
"""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from clients.cli import register as register_party_commands
from clients.enrollment import init_party, join_federation, request_path
from fedrisk.errors import IdentityError
from fedrisk.federation.enrollment import (
    MANIFEST_SIGNATURE_FILE,
    PartyRequest,
    manifest_fingerprints,
    parse_request,
)
from fedrisk.federation.roster import BundleLayout
from server.coordinator.cli import register as register_server_commands
from server.coordinator.provisioning import ProvisionResult, provision_workspace
from simulations.enrollment import enroll_parties
from tests.support.federation import PARTIES

PEM_PRIVATE = b"PRIVATE KEY-----"
OPENSSH_PRIVATE = b"OPENSSH PRIVATE KEY"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _raw_private_forms(party_dir: Path) -> dict[str, bytes]:
    """Every private key of a party as raw bytes, hex and base64 (what a leak could look like)."""
    layout = BundleLayout(party_dir)
    raws: dict[str, bytes] = {}
    for label, path in (("signing", layout.signing_key), ("receiving", layout.receiving_key)):
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        raws[label] = key.private_bytes(  # type: ignore[union-attr]
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    auth = serialization.load_ssh_private_key(layout.auth_private_key.read_bytes(), password=None)
    assert isinstance(auth, ec.EllipticCurvePrivateKey)
    raws["auth"] = auth.private_numbers().private_value.to_bytes(48, "big")
    forms: dict[str, bytes] = {}
    for label, raw in raws.items():
        forms[f"{label} raw"] = raw
        forms[f"{label} hex"] = raw.hex().encode()
        forms[f"{label} base64"] = base64.b64encode(raw).rstrip(b"=")
        forms[f"{label} file"] = (
            layout.signing_key
            if label == "signing"
            else layout.receiving_key
            if label == "receiving"
            else layout.auth_private_key
        ).read_bytes()
    return forms


def test_party_init_writes_private_keys_owner_only_and_a_verifiable_request(
    tmp_path: Path,
) -> None:
    request = init_party("bank_a", tmp_path / "bank_a")
    layout = BundleLayout(tmp_path / "bank_a")

    for private in (layout.signing_key, layout.receiving_key, layout.auth_private_key):
        assert _mode(private) == 0o600
    for folder in (layout.root, layout.signing_key.parent, layout.auth_private_key.parent):
        assert _mode(folder) == 0o700
    on_disk = parse_request(request_path(layout.root).read_text(), source="test")
    assert on_disk == request
    record = on_disk.verify()
    assert record.name == "bank_a"
    assert PEM_PRIVATE not in request_path(layout.root).read_bytes()


def test_party_init_refuses_a_bad_name_or_a_folder_with_keys(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="party name"):
        init_party("Bank A", tmp_path / "x")
    init_party("bank_a", tmp_path / "bank_a")
    before = (tmp_path / "bank_a" / "identity" / "signing.key").read_bytes()

    with pytest.raises(IdentityError, match="never overwritten"):
        init_party("bank_a", tmp_path / "bank_a")

    assert (tmp_path / "bank_a" / "identity" / "signing.key").read_bytes() == before


@pytest.mark.parametrize("field", ["signing_public_key", "receiving_public_key", "party"])
def test_a_request_whose_keys_were_swapped_is_refused(tmp_path: Path, field: str) -> None:
    mine = init_party("bank_a", tmp_path / "bank_a")
    other = init_party("bank_b", tmp_path / "bank_b")
    forged = PartyRequest.model_validate({**mine.model_dump(), field: other.model_dump()[field]})
    path = tmp_path / "forged.json"
    path.write_text(forged.to_json())

    with pytest.raises(IdentityError, match="must be signed by its own signing key"):
        provision_workspace(tmp_path / "ws", requests=[path])

    assert not (tmp_path / "ws" / "manifest.json").exists()


def test_a_request_with_another_auth_key_is_refused(tmp_path: Path) -> None:
    mine = init_party("bank_a", tmp_path / "bank_a")
    other = init_party("bank_b", tmp_path / "bank_b")
    forged = mine.model_copy(
        update={"auth_public_key": other.auth_public_key, "signature": mine.signature}
    )

    # The signing key signed other keys than these: either signature check must refuse it.
    with pytest.raises(IdentityError, match="must be signed by its own"):
        provision_workspace(tmp_path / "ws", requests=[forged])


def test_coordinator_never_holds_any_partys_private_key(tmp_path: Path) -> None:
    federation = enroll_parties(
        tmp_path / "coordinator",
        parties=PARTIES,
        parties_dir=tmp_path / "machines",
        bundles_dir=tmp_path / "outbox",
    )
    ws = federation.workspace
    coordinator_files = [
        p for root in (ws.root, tmp_path / "outbox") for p in sorted(root.rglob("*")) if p.is_file()
    ]
    received = [request_path(tmp_path / "machines" / name) for name in PARTIES]
    assert received and len(coordinator_files) > 10
    own_secrets = set(ws.coordinator_secret_files)
    leaks: list[str] = []
    forms = {
        f"{name} {label}": value
        for name in PARTIES
        for label, value in _raw_private_forms(tmp_path / "machines" / name).items()
    }
    for path in [*coordinator_files, *received]:
        data = path.read_bytes()
        if path not in own_secrets and (PEM_PRIVATE in data or OPENSSH_PRIVATE in data):
            leaks.append(f"{path}: private key block")
        leaks += [f"{path}: {label}" for label, value in forms.items() if value in data]

    assert leaks == []
    # ...while each party's own folder does hold its keys (the search is not vacuous).
    for name in PARTIES:
        own = b"".join(p.read_bytes() for p in (tmp_path / "machines" / name).rglob("*.key"))
        assert forms[f"{name} signing file"] in own


def test_public_bundle_holds_public_files_only(federation: ProvisionResult) -> None:
    outbox = federation.workspace.root.parent / f"{federation.workspace.root.name}-bundles"

    for name in PARTIES:
        names = sorted(p.name for p in (outbox / name).iterdir())
        assert names == sorted(
            ["bundle.json", "ca.crt", "manifest.json", MANIFEST_SIGNATURE_FILE, "schema.toml"]
        )


def test_join_refuses_a_manifest_with_other_keys_for_this_party(tmp_path: Path) -> None:
    honest = init_party("bank_a", tmp_path / "bank_a")
    init_party("bank_b", tmp_path / "bank_b")
    # A coordinator that swaps in keys of its own for bank_a (to impersonate it later).
    impostor = init_party("bank_a", tmp_path / "impostor")
    result = provision_workspace(
        tmp_path / "ws",
        requests=[
            impostor,
            parse_request(request_path(tmp_path / "bank_b").read_text(), source=""),
        ],
        bundles_dir=tmp_path / "outbox",
    )

    with pytest.raises(IdentityError, match="this party's own public keys"):
        join_federation(tmp_path / "bank_a", result.bundles["bank_a"])

    assert not (tmp_path / "bank_a" / "manifest.json").exists()
    assert honest.verify().signing_key_id not in result.workspace.manifest.read_text()


def test_join_refuses_a_manifest_not_signed_by_the_ca(tmp_path: Path) -> None:
    init_party("bank_a", tmp_path / "bank_a")
    result = provision_workspace(
        tmp_path / "ws", requests=[request_path(tmp_path / "bank_a")], bundles_dir=tmp_path / "o"
    )
    manifest = result.bundles["bank_a"] / "manifest.json"
    edited = json.loads(manifest.read_text())
    edited["superlink_hosts"] = [*edited["superlink_hosts"], "evil.example.org"]
    manifest.write_text(json.dumps(edited, indent=2, sort_keys=True) + "\n")

    with pytest.raises(IdentityError, match="signed by the federation CA"):
        join_federation(tmp_path / "bank_a", result.bundles["bank_a"])


def test_join_refuses_a_bundle_carrying_a_private_key(tmp_path: Path) -> None:
    init_party("bank_a", tmp_path / "bank_a")
    result = provision_workspace(
        tmp_path / "ws", requests=[request_path(tmp_path / "bank_a")], bundles_dir=tmp_path / "o"
    )
    (result.bundles["bank_a"] / "signing.key").write_text("planted")

    with pytest.raises(IdentityError, match="only public files"):
        join_federation(tmp_path / "bank_a", result.bundles["bank_a"])


def test_role_commands_in_order_show_the_same_fingerprints_everywhere(tmp_path: Path) -> None:
    party_cli, server_cli = typer.Typer(), typer.Typer()
    register_party_commands(party_cli)
    register_server_commands(server_cli)
    runner = CliRunner()
    names = ["bank_a", "bank_b", "telco_c"]

    inits = {
        n: runner.invoke(party_cli, ["party", "init", "--name", n, "--out", str(tmp_path / n)])
        for n in names
    }
    args = ["provision", "-w", str(tmp_path / "ws"), "--bundles-dir", str(tmp_path / "out")]
    for n in names:
        args += ["--request", str(request_path(tmp_path / n))]
    provisioned = runner.invoke(server_cli, args)
    joins = {
        n: runner.invoke(
            party_cli,
            ["party", "join", "--dir", str(tmp_path / n), "--bundle", str(tmp_path / "out" / n)],
        )
        for n in names
    }

    for result in (*inits.values(), provisioned, *joins.values()):
        assert result.exit_code == 0, result.output
    joined = join_federation(tmp_path / "bank_a", tmp_path / "out" / "bank_a")
    fingerprints = manifest_fingerprints(joined.bundle.manifest)
    for n in names:
        assert fingerprints[n] in inits[n].output
        assert fingerprints[n] in provisioned.output
        for other in names:
            assert fingerprints[other] in joins[n].output
