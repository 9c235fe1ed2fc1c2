"""``flwr run`` against the TLS SuperLink: a tiny Flower app reaches an authenticated SuperNode.

This pins down the submission path the coordinator's ``fedrisk run`` uses: the connection that
``start_superlink`` writes to ``$FLWR_HOME/config.toml``, ``flwr run APP fedrisk --format json``
and the real outcome from ``flwr ls fedrisk --run-id ID --format json`` (``flwr run`` itself exits
0 even when the run fails). The party runs only pinned apps, so the lead pins the probe app (its
FAB hash and its two run-config keys) like any app the federation agreed to run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.bundle import PartyBundle, load_bundle
from clients.pinning import fab_sha256, install_pin
from clients.supernode import prepare_party_runtime, start_supernode
from fedrisk.data.schema import write_schema
from fedrisk.federation.pin import ChoiceRule, PatternRule, make_pin, sign_pin
from secure_agg.ceremony import run_key_ceremony
from secure_agg.params import HEParams
from server.coordinator.runs import run_status, submit_run
from server.coordinator.superlink import (
    CONNECTION_NAME,
    SuperLinkProcess,
    register_supernodes,
    start_superlink,
)
from simulations.enrollment import enroll_parties
from tests.support.federation import SCHEMA, write_party_data
from tests.support.flower_apps import write_flower_app
from tests.support.processes import ProcessRegistry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

APP = '''\
"""Probe: the ServerApp asks every SuperNode for its party name (from the node config)."""

import time

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

client = ClientApp()
server = ServerApp()


@client.query()
def query(msg: Message, context: Context) -> Message:
    party = str(context.node_config.get("party", ""))
    return Message(RecordDict({"r": ConfigRecord({"party": party})}), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    if context.run_config["fail"]:
        raise RuntimeError("probe asked to fail")
    deadline = time.monotonic() + 30
    nodes = []
    while not nodes and time.monotonic() < deadline:
        nodes = list(grid.get_node_ids())
        time.sleep(0.5)
    messages = [Message(RecordDict(), dst_node_id=n, message_type="query") for n in nodes]
    replies = list(grid.send_and_receive(messages, timeout=60))
    parties = sorted(str(r.content["r"]["party"]) for r in replies if r.has_content())
    if parties != [str(context.run_config["expect"])]:
        raise RuntimeError(f"unexpected replies {parties}")
'''


def _write_app(root: Path) -> Path:
    return write_flower_app(
        root,
        name="tlsprobe",
        modules={"app": APP},
        serverapp="app:server",
        clientapp="app:client",
        config='expect = ""\nfail = false',
        description="Probe app for the fedrisk deployment tests",
    )


def _finish(workspace: Path, run_id: str, *, timeout: float = 120.0) -> str:
    flwr_home = workspace / "flwr-home"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run_status(connection=CONNECTION_NAME, flwr_home=flwr_home, run_id=run_id)
        if status.startswith("finished"):
            return status
        time.sleep(1.0)
    raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f}s")


def _pin_probe(lead: PartyBundle, app: Path) -> None:
    """The lead signs a pin of the probe app and installs it (one party: it is the lead)."""
    pin = make_pin(
        lead.manifest,
        fab_sha256=fab_sha256(app),
        app="fedrisk/tlsprobe==1.0.0",
        issued_at="2026-01-01T00:00:00+00:00",
        rules={"expect": PatternRule(pattern="[a-z_]*"), "fail": ChoiceRule(values=(False, True))},
    )
    install_pin(lead, sign_pin(pin, lead.signing_key()))


@pytest.fixture
def link(tmp_path: Path, process_registry: ProcessRegistry) -> Iterator[SuperLinkProcess]:
    write_schema(SCHEMA, tmp_path / "schema.toml")
    federation = enroll_parties(
        tmp_path / "coordinator", parties=["bank_a", "bank_b"], schema_file=tmp_path / "schema.toml"
    )
    bundle = load_bundle(federation.bundles["bank_a"])
    run_key_ceremony(
        bundle.manifest,
        lead="bank_a",
        signing_key=bundle.signing_key(),
        own_ckks_dir=bundle.layout.ckks_dir,
        out_dir=tmp_path / "handout",
        params=HEParams(),
    )
    _pin_probe(bundle, _write_app(tmp_path / "app"))
    handle = start_superlink(federation.workspace.root)
    process_registry.track(handle.pid)
    register_supernodes(federation.workspace.root, parties=["bank_a"])
    runtime = prepare_party_runtime(
        bundle, train=write_party_data(tmp_path / "a.csv", rows=30, seed=3)
    )
    node = start_supernode(bundle, runtime, superlink=handle.address)
    process_registry.track(node.pid)
    yield handle


def test_flwr_run_reaches_the_authenticated_supernode_and_reports_real_status(
    link: SuperLinkProcess, tmp_path: Path
) -> None:
    app = tmp_path / "app"  # written and pinned by the fixture
    flwr_home = link.workspace / "flwr-home"

    ok = submit_run(
        connection=CONNECTION_NAME,
        flwr_home=flwr_home,
        run_config={"expect": "bank_a"},
        app_dir=app,
    )
    failing = submit_run(
        connection=CONNECTION_NAME,
        flwr_home=flwr_home,
        run_config={"fail": True},
        app_dir=app,
    )

    assert _finish(link.workspace, ok) == "finished:completed"
    assert _finish(link.workspace, failing) == "finished:failed"
