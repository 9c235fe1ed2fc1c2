"""Real flower-superlink / flower-supernode processes on 127.0.0.1: TLS and SuperNode auth hold.

Observables: the SuperLink's node list (``flwr supernode list --format json``) and the
SuperNode's early exit (code 1) with "Exit Code: 305" (refused) in its log. Every wait is bounded;
every process is stopped by pid (whole tree) even when a test fails.
"""

from __future__ import annotations

import os
import signal
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from clients.bundle import PartyBundle, load_bundle
from clients.supernode import (
    PartyRuntime,
    SuperNodeProcess,
    Trust,
    prepare_party_runtime,
    start_supernode,
)
from fedrisk.data.schema import write_schema
from fedrisk.errors import IdentityError
from fedrisk.federation.processes import console_script, descendants, flower_environment, is_alive
from secure_agg.ceremony import accept_sealed_context, run_key_ceremony
from secure_agg.params import HEParams
from server.coordinator.cli import register as register_server_commands
from server.coordinator.provisioning import ProvisionResult
from server.coordinator.superlink import (
    SuperLinkProcess,
    list_supernodes,
    register_supernodes,
    running_superlink,
    start_superlink,
    superlink_command,
)
from simulations.enrollment import enroll_parties
from tests.support.federation import PARTIES, SCHEMA, write_party_data
from tests.support.processes import ProcessRegistry, read_log, start_process, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAIT = 30.0
REGISTERED = ("bank_a", "bank_b")  # telco_c is provisioned but deliberately NOT registered


@dataclass
class Live:
    federation: ProvisionResult
    link: SuperLinkProcess
    node_ids: dict[str, str | None]
    data: Path
    root: Path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("live")
    schema = root / "schema.toml"
    write_schema(SCHEMA, schema)
    federation = enroll_parties(root / "coordinator", parties=PARTIES, schema_file=schema)
    lead = load_bundle(federation.bundles["bank_a"])
    handout = run_key_ceremony(
        lead.manifest,
        lead="bank_a",
        signing_key=lead.signing_key(),
        own_ckks_dir=lead.layout.ckks_dir,
        out_dir=root / "handout",
        params=HEParams(),
    )
    for name, sealed in handout.sealed.items():
        party = load_bundle(federation.bundles[name])
        accept_sealed_context(
            sealed.read_bytes(),
            manifest=party.manifest,
            recipient=name,
            receiving_key=party.receiving_key(),
            own_ckks_dir=party.layout.ckks_dir,
        )
    link = start_superlink(federation.workspace.root)
    try:
        node_ids = register_supernodes(federation.workspace.root, parties=REGISTERED)
        data = write_party_data(root / "bank.csv", rows=50, seed=1)
        yield Live(federation, link, node_ids, data, root)
    finally:
        tree = [link.pid, *descendants(link.pid)]
        link.stop()
        assert not [pid for pid in tree if is_alive(pid)]


def _runtime(live: Live, bundle: PartyBundle) -> PartyRuntime:
    # The auth/TLS checks do not depend on the data, so every party may use the same file here.
    return prepare_party_runtime(
        bundle, train=live.data, schema=live.root / "schema.toml", state_dir=live.root / bundle.name
    )


def _start(
    live: Live, registry: ProcessRegistry, party: str, *, trust: Trust = "bundle-ca", **kw: object
) -> SuperNodeProcess:
    bundle = load_bundle(live.federation.bundles[party])
    node = start_supernode(
        bundle,
        _runtime(live, bundle),
        superlink=live.link.address,
        trust=trust,
        **kw,  # type: ignore[arg-type]
    )
    registry.track(node.pid)
    return node


def _statuses(live: Live) -> dict[str, str]:
    return {str(n["node-id"]): str(n["status"]) for n in list_supernodes(live.link.workspace)}


def test_registered_party_supernode_comes_online_and_goes_offline(
    live: Live, process_registry: ProcessRegistry
) -> None:
    node_id = live.node_ids["bank_a"]
    assert node_id is not None

    node = _start(live, process_registry, "bank_a")
    wait_for(lambda: _statuses(live).get(node_id) == "online", timeout=WAIT, what="online")
    node.stop()
    wait_for(lambda: _statuses(live).get(node_id) == "offline", timeout=WAIT, what="offline")

    assert "SuperNode ID:" in read_log(node.log_path)


def test_unregistered_key_is_rejected(live: Live, process_registry: ProcessRegistry) -> None:
    before = _statuses(live)

    node = _start(live, process_registry, "telco_c")
    code = node.wait(timeout=WAIT)

    assert code == 1
    assert node.was_refused()
    assert "Failed to activate SuperNode" in read_log(node.log_path)
    after = _statuses(live)
    assert set(after) == set(before)  # no node appeared for the unregistered key
    assert "online" not in {after[n] for n in after if n not in before}


def test_supernode_without_the_federation_ca_cannot_connect(
    live: Live, process_registry: ProcessRegistry
) -> None:
    node_id = live.node_ids["bank_b"]

    node = _start(live, process_registry, "bank_b", trust="system")
    code = node.wait(timeout=WAIT)

    assert code == 1
    assert node.was_refused()
    assert "CERTIFICATE_VERIFY_FAILED" in read_log(node.log_path)
    assert _statuses(live).get(str(node_id)) != "online"


def test_supernode_trusting_another_ca_cannot_connect(
    live: Live, process_registry: ProcessRegistry, tmp_path: Path
) -> None:
    other = enroll_parties(tmp_path / "other", parties=["bank_b"])
    node_id = live.node_ids["bank_b"]

    node = _start(live, process_registry, "bank_b", trust=other.workspace.ca_certificate)
    code = node.wait(timeout=WAIT)

    assert code == 1
    assert node.was_refused()
    assert "CERTIFICATE_VERIFY_FAILED" in read_log(node.log_path)
    assert _statuses(live).get(str(node_id)) != "online"


def test_plaintext_supernode_cannot_join_the_tls_superlink(
    live: Live, process_registry: ProcessRegistry
) -> None:
    node_id = live.node_ids["bank_b"]

    node = _start(live, process_registry, "bank_b", insecure=True, max_retries=1, max_wait_time=10)
    code = node.wait(timeout=WAIT)

    assert code is not None and code != 0
    assert _statuses(live).get(str(node_id)) != "online"


def test_registration_is_idempotent_across_calls(live: Live) -> None:
    again = register_supernodes(live.link.workspace, parties=REGISTERED)

    assert again == {name: live.node_ids[name] for name in REGISTERED}


def test_flwr_connection_is_declared_with_tls(live: Live) -> None:
    config = tomllib.loads((live.federation.workspace.flwr_home / "config.toml").read_text())

    connection = config["superlink"]["fedrisk"]
    assert config["superlink"]["default"] == "fedrisk"
    assert connection["address"] == live.link.address
    assert connection["root-certificates"] == str(live.federation.workspace.ca_certificate)
    assert "insecure" not in connection


def test_superlink_runs_tls_with_node_auth_and_no_dependency_install(live: Live) -> None:
    argv = superlink_command(
        live.federation.workspace, host="127.0.0.1", port=live.link.port, insecure=False
    )
    cmdline = Path(f"/proc/{live.link.pid}/cmdline").read_bytes().split(b"\0")

    for flag in (
        "--ssl-ca-certfile",
        "--ssl-certfile",
        "--ssl-keyfile",
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--database",
    ):
        assert flag in argv
        assert flag.encode() in cmdline
    assert "--insecure" not in argv
    assert running_superlink(live.federation.workspace.root) is not None


def test_start_refuses_an_unprovisioned_workspace(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="manifest"):
        start_superlink(tmp_path / "nothing-here")


def test_insecure_start_warns_and_stop_by_pid_cleans_up(tmp_path: Path) -> None:
    federation = enroll_parties(tmp_path / "ws", parties=["bank_a"])
    ws = federation.workspace.root
    cli = typer.Typer()
    register_server_commands(cli)
    runner = CliRunner()
    handle = None
    try:
        started = runner.invoke(
            cli, ["server", "start", "--workspace", str(ws), "--insecure", "--detach"]
        )
        handle = running_superlink(ws)
        assert started.exit_code == 0, started.output
        assert "INSECURE" in started.output
        assert handle is not None
        # `server start` always puts the Fleet-API proxy (here plaintext) in front.
        assert handle.proxy is not None
        assert f"parties connect to 127.0.0.1:{handle.proxy.port}" in started.output
        tree = [
            handle.pid,
            *descendants(handle.pid),
            handle.proxy.pid,
            *descendants(handle.proxy.pid),
        ]
        config = tomllib.loads((federation.workspace.flwr_home / "config.toml").read_text())
        assert config["superlink"]["fedrisk"]["insecure"] is True

        stopped = runner.invoke(cli, ["server", "stop", "--workspace", str(ws)])

        assert stopped.exit_code == 0, stopped.output
        wait_for(lambda: not any(is_alive(p) for p in tree), timeout=WAIT, what="tree gone")
        assert running_superlink(ws) is None
    finally:
        if handle is not None and handle.is_running():
            handle.stop()


def test_foreground_start_ends_and_stops_the_superlink_when_its_proxy_dies(
    tmp_path: Path, process_registry: ProcessRegistry
) -> None:
    federation = enroll_parties(tmp_path / "ws", parties=["bank_a"])
    ws = federation.workspace.root
    command = start_process(
        [console_script("fedrisk"), "server", "start", "--workspace", str(ws), "--insecure"],
        log_path=tmp_path / "server-start.log",
        env=flower_environment(tmp_path / "flwr-home"),
    )
    process_registry.track(command.pid)
    wait_for(
        lambda: (handle := running_superlink(ws)) is not None and handle.proxy is not None,
        timeout=60.0,
        what="SuperLink and proxy recorded",
    )
    handle = running_superlink(ws)
    assert handle is not None and handle.proxy is not None
    process_registry.track(handle.pid)
    process_registry.track(handle.proxy.pid)

    os.kill(handle.proxy.pid, signal.SIGKILL)
    code = command.wait(timeout=60.0)

    assert code != 0
    assert "Fleet-API proxy exited" in read_log(tmp_path / "server-start.log")
    wait_for(lambda: not is_alive(handle.pid), timeout=WAIT, what="SuperLink stopped")
    assert running_superlink(ws) is None
