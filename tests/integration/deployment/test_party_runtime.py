"""Party side before connecting: data validated against the schema, configs the ClientApp reads."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from clients.bundle import NODE_CONFIG_PARTY, load_bundle
from clients.cli import register as register_party_commands
from clients.party import load_party_config, mask_identity
from clients.pinning import create_pin, install_pin, pin_path
from clients.supernode import prepare_party_runtime, supernode_command
from fedrisk.errors import IdentityError, SchemaError
from secure_agg.ceremony import run_key_ceremony
from secure_agg.params import HEParams
from server.coordinator.provisioning import ProvisionResult
from tests.support.federation import write_party_data


@pytest.fixture
def lead_with_keys(federation: ProvisionResult, tmp_path: Path) -> Path:
    bundle = load_bundle(federation.bundles["bank_a"])
    run_key_ceremony(
        bundle.manifest,
        lead="bank_a",
        signing_key=bundle.signing_key(),
        own_ckks_dir=bundle.layout.ckks_dir,
        out_dir=tmp_path / "handout",
        params=HEParams(),
    )
    install_pin(bundle, create_pin(bundle))
    return bundle.layout.root


def test_runtime_config_is_what_the_clientapp_reads(lead_with_keys: Path, tmp_path: Path) -> None:
    bundle = load_bundle(lead_with_keys)
    train = write_party_data(tmp_path / "train.csv", rows=40, seed=1)
    test = write_party_data(tmp_path / "test.csv", rows=20, seed=2)

    runtime = prepare_party_runtime(bundle, train=train, test=test)
    node_config = tomllib.loads(runtime.node_config.read_text())
    config = load_party_config(runtime.party_config)  # served by the executor, in-process

    assert config.name == "bank_a"
    assert config.train == train.resolve() and config.test == test.resolve()
    assert config.secret_context == bundle.layout.secret_context
    assert config.signing_key == bundle.layout.signing_key
    assert config.schema_file == bundle.layout.schema
    assert node_config == {NODE_CONFIG_PARTY: "bank_a"}
    # Pairwise masks: the party's own X25519 key, and its peers' keys from the signed manifest.
    assert config.receiving_key == bundle.layout.receiving_key
    identity = mask_identity(config, "run|1")
    assert sorted(identity.peers) == sorted(bundle.manifest.party_names)
    assert all(
        identity.peers[p.name].public_bytes_raw() == p.receiving_key().public_bytes_raw()
        for p in bundle.manifest.parties
    )


def test_node_config_names_no_key_bundle_or_data_path(lead_with_keys: Path, tmp_path: Path) -> None:
    bundle = load_bundle(lead_with_keys)
    train = write_party_data(tmp_path / "train.csv", rows=40, seed=1)

    runtime = prepare_party_runtime(bundle, train=train, release_dir=tmp_path / "rel")
    node_config = tomllib.loads(runtime.node_config.read_text())
    values = [str(v) for v in node_config.values()]

    assert sorted(node_config) == [NODE_CONFIG_PARTY]
    for forbidden in (
        bundle.layout.signing_key,
        bundle.layout.receiving_key,
        bundle.layout.auth_private_key,
        bundle.layout.secret_context,
        train.resolve(),
        tmp_path / "rel",
        runtime.party_config,
        runtime.state_dir,
    ):
        assert all(str(forbidden) not in value for value in values)
    assert all(value != str(bundle.layout.root) for value in values)
    # party.toml names the key files for our own ClientApp: owner-only, like the keys
    assert stat.S_IMODE(runtime.party_config.stat().st_mode) == 0o600
    assert stat.S_IMODE(runtime.state_dir.stat().st_mode) == 0o700


@pytest.mark.parametrize("folder", ["root", "identity", "auth", "ckks"])
def test_a_party_folder_others_can_list_is_refused(lead_with_keys: Path, folder: str) -> None:
    layout = load_bundle(lead_with_keys).layout
    path = {
        "root": layout.root,
        "identity": layout.signing_key.parent,
        "auth": layout.auth_private_key.parent,
        "ckks": layout.ckks_dir,
    }[folder]
    path.chmod(0o755)

    with pytest.raises(IdentityError, match="must be mode 0700"):
        load_bundle(layout.root)


def test_data_violating_the_schema_is_refused_before_anything_starts(
    lead_with_keys: Path, tmp_path: Path
) -> None:
    bundle = load_bundle(lead_with_keys)
    bad = tmp_path / "bad.csv"
    frame = pd.read_csv(write_party_data(tmp_path / "ok.csv", rows=10, seed=1))
    frame.loc[3, "region"] = "atlantis"
    frame.to_csv(bad, index=False)

    with pytest.raises(SchemaError, match="region"):
        prepare_party_runtime(bundle, train=bad)

    assert not bundle.layout.state_dir.exists()


def test_party_without_the_secret_context_is_refused(
    federation: ProvisionResult, tmp_path: Path
) -> None:
    bundle = load_bundle(federation.bundles["bank_b"])

    with pytest.raises(IdentityError, match="keys accept"):
        prepare_party_runtime(bundle, train=write_party_data(tmp_path / "d.csv", rows=10, seed=1))


def test_supernode_command_uses_tls_auth_and_the_node_config_file(lead_with_keys: Path) -> None:
    bundle = load_bundle(lead_with_keys)
    node_config = bundle.layout.state_dir / "node-config.toml"

    argv = supernode_command(
        bundle, superlink="127.0.0.1:9000", node_config=node_config, runtime_port=9999
    )

    assert argv[argv.index("--root-certificates") + 1] == str(bundle.layout.ca_certificate)
    assert argv[argv.index("--auth-supernode-private-key") + 1] == str(
        bundle.layout.auth_private_key
    )
    assert argv[argv.index("--node-config") + 1] == str(node_config)
    assert argv[argv.index("--port") + 1] == "9999"
    assert "--insecure" not in argv


def test_party_start_command_stops_at_invalid_data(lead_with_keys: Path, tmp_path: Path) -> None:
    cli = typer.Typer()
    register_party_commands(cli)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,bad,income,region\nx,1,-5,north\n")

    result = CliRunner().invoke(
        cli,
        [
            "party",
            "start",
            "--bundle",
            str(lead_with_keys),
            "--data",
            str(bad),
            "--superlink",
            "127.0.0.1:1",
        ],
    )

    assert result.exit_code == 1
    assert "income" in result.output
    assert not (lead_with_keys / "state" / "supernode.json").exists()


def test_party_start_refuses_a_party_without_a_valid_app_pin(
    lead_with_keys: Path, tmp_path: Path
) -> None:
    cli = typer.Typer()
    register_party_commands(cli)
    pin_path(load_bundle(lead_with_keys)).unlink()
    data = write_party_data(tmp_path / "ok.csv", rows=10, seed=1)

    result = CliRunner().invoke(
        cli,
        [
            "party",
            "start",
            "--bundle",
            str(lead_with_keys),
            "--data",
            str(data),
            "--superlink",
            "127.0.0.1:1",
        ],
    )

    assert result.exit_code == 1
    assert "signed app pin" in result.output
    assert not (lead_with_keys / "state").exists()
