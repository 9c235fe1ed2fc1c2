"""Only the coordinator submits runs: a real federation behind the Fleet-API proxy (nginx).

One module-scoped federation (TLS SuperLink with node authentication on a coordinator-only
loopback port, nginx on the parties' port, three authenticated SuperNodes) trains one encrypted
round through the proxy. Then a party, holding only its bundle's CA certificate, aims ``flwr ls``
and ``flwr run`` at the parties' address and is refused by the proxy with 403 before Flower's
Control API sees the request; the same commands on the coordinator's address work.
"""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fedrisk.data.datasets import load_dataset
from fedrisk.data.partitions import parse_partition, partition_frame
from fedrisk.federation.processes import console_script, descendants, flower_environment, is_alive
from server.coordinator.deployed_runs import DeployedRun
from server.coordinator.fleet_proxy import FLEET_PATH_PREFIX, REFUSAL, FleetProxyError, find_nginx
from server.coordinator.provisioning import WorkspaceLayout
from server.coordinator.runs import FLOWER_APP_DIR, RunOutcome
from server.coordinator.superlink import CONNECTION_NAME, write_flwr_connection
from simulations.deployment import LocalDeployment, running_federation

pytestmark = [pytest.mark.slow, pytest.mark.integration]

try:
    find_nginx()
except FleetProxyError as missing:  # pragma: no cover - CI installs it (make test)
    pytestmark.append(pytest.mark.skip(reason=str(missing)))

PARTY_CONNECTION = "party-view"
FLWR_TIMEOUT = 120.0


@dataclass
class Proxied:
    fed: LocalDeployment
    deployed: DeployedRun
    outcome: RunOutcome
    party_flwr_home: Path
    events: list[dict[str, object]]


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    root = tmp_path_factory.mktemp("proxied")
    rng = np.random.default_rng(5)
    dataset = load_dataset("synthetic", rng=rng, n_rows=1500)
    parties = partition_frame(
        dataset.frame, dataset.schema, parse_partition("by:segment"), n_parties=3, rng=rng
    )
    events: list[dict[str, object]] = []
    with running_federation(
        root / "fed", schema=dataset.schema, parties=parties, fleet_proxy=True
    ) as fed:
        link = fed.superlink
        assert link is not None and link.proxy is not None
        tree = [link.pid, *descendants(link.pid), link.proxy.pid, *descendants(link.proxy.pid)]
        deployed, outcome = fed.run(rounds=1, on_event=events.append)
        # A party's own flwr configuration: the address it was given, its bundle's CA.
        party_home = root / "party-flwr-home"
        write_flwr_connection(
            party_home,
            address=link.fleet_address,
            root_certificates=fed.bundle(fed.lead).layout.ca_certificate,
            name=PARTY_CONNECTION,
        )
        yield Proxied(fed, deployed, outcome, party_home, events)
    assert not [pid for pid in tree if is_alive(pid)], "SuperLink or proxy outlived the stop"


def _flwr(flwr_home: Path, cwd: Path, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [console_script("flwr"), *args, "--format", "json"],
        cwd=cwd,
        env=flower_environment(flwr_home),
        capture_output=True,
        timeout=FLWR_TIMEOUT,
        check=False,
    )
    stdout = done.stdout.decode()
    payload = json.loads(stdout[stdout.index("{") :])
    assert isinstance(payload, dict), stdout
    return payload


def _post(address: str, path: str, ca: Path) -> tuple[int, bytes]:
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection(host, int(port), timeout=10, context=context)
    try:
        # http.client sends the path byte for byte: no client-side normalisation of ../ or %2e.
        conn.request("POST", path, body=b"", headers={"Content-Type": "application/protobuf"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_supernodes_train_a_run_through_the_proxy(proxied: Proxied) -> None:
    link = proxied.fed.superlink
    assert link is not None and link.proxy is not None

    rounds = [e for e in proxied.events if e["event"] == "round"]

    assert proxied.outcome.status == "finished:completed"
    assert len(rounds) == 1 and len(rounds[0]["train_parties"]) == 3  # type: ignore[arg-type]
    assert link.fleet_address != link.address
    for node in proxied.fed.supernodes.values():
        cmdline = Path(f"/proc/{node.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[cmdline.index(b"--superlink") + 1] == link.fleet_address.encode()
    # The SuperNodes' Fleet traffic (node-authenticated, over TLS both sides) went through nginx.
    access = (link.proxy.prefix / "access.log").read_text()
    assert f'"POST {FLEET_PATH_PREFIX}pull-messages HTTP/1.1" 200' in access
    assert f'"POST {FLEET_PATH_PREFIX}push-messages HTTP/1.1" 200' in access


def test_flwr_ls_and_run_from_the_parties_address_are_refused(proxied: Proxied) -> None:
    fed = proxied.fed
    link = fed.superlink
    assert link is not None

    listed = _flwr(proxied.party_flwr_home, fed.root, "ls", PARTY_CONNECTION)
    submitted = _flwr(
        proxied.party_flwr_home, fed.root, "run", str(FLOWER_APP_DIR), PARTY_CONNECTION
    )

    assert listed["success"] is False
    assert (
        f"Client error '403 Forbidden' for url 'https://{link.fleet_address}/v1/control/list-runs'"
        in str(listed["error-message"])
    )
    assert submitted["success"] is False
    assert (
        f"Client error '403 Forbidden' for url 'https://{link.fleet_address}/v1/control/start-run'"
        in str(submitted["error-message"])
    )


def test_flwr_ls_and_run_from_the_coordinators_address_work(proxied: Proxied) -> None:
    fed = proxied.fed
    home = WorkspaceLayout(fed.workspace).flwr_home

    listed = _flwr(home, fed.root, "ls", CONNECTION_NAME)

    assert listed["success"] is True
    runs = listed["runs"]
    assert isinstance(runs, list)
    # Exactly the run `flwr run` submitted through the coordinator's connection (fed.run): the
    # party's refused submission left nothing behind.
    assert [str(r["run-id"]) for r in runs] == [proxied.outcome.run_id]
    assert runs[0]["status"] == "finished:completed"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/control/list-runs",
        "/v1/control/register-node",
        "/v1/runtime/get-nodes",
        "/v1/fleet/../control/list-runs",
        "/v1/fleet/%2e%2e/control/list-runs",
        "/v1/fleet/pull-messages/../../control/list-runs",
        "/v1/fleet/pull-messages?x=/v1/control/list-runs",
        "/docs",
    ],
)
def test_the_proxy_refuses_every_path_but_the_fleet_api(proxied: Proxied, path: str) -> None:
    link = proxied.fed.superlink
    assert link is not None
    ca = proxied.fed.bundle(proxied.fed.lead).layout.ca_certificate

    status, body = _post(link.fleet_address, path, ca)

    assert (status, body.decode().strip()) == (403, REFUSAL)


def test_fleet_calls_without_node_signature_reach_flower_and_are_refused_there(
    proxied: Proxied,
) -> None:
    link = proxied.fed.superlink
    assert link is not None
    ca = proxied.fed.bundle(proxied.fed.lead).layout.ca_certificate

    status, body = _post(link.fleet_address, f"{FLEET_PATH_PREFIX}pull-messages", ca)

    # Forwarded (not the proxy's refusal) and refused by Flower's node authentication.
    assert status == http.client.UNAUTHORIZED
    assert b"Invalid SuperNode authentication" in body
