"""The attack of issue 18 on the real runtime: foreign Flower apps submitted to the federation.

One local federation for the module (TLS SuperLink with node authentication, three SuperNodes
each with its warm executor, the pin signed by the lead and installed by every party). A foreign
app, whose ClientApp would mark its import and its run in a marker folder and read every file
``node_config`` points to, is submitted with ``flwr run``:

- by someone holding only a party's ``ca.crt`` (the Control API shares the Fleet API's port);
- by the coordinator, with its own credentials.

No party may execute any of it, each refusal must reach the coordinator with its reason, and the
federation's own pinned app must still run afterwards. The coordinator submitting the pinned app
with a run config the pin forbids (``plaintext = true``) is refused the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fedrisk.data.datasets import load_dataset
from fedrisk.data.partitions import parse_partition, partition_frame
from server.coordinator.runs import RunFailedError, RunState, run_state, submit_run
from server.coordinator.superlink import CONNECTION_NAME, write_flwr_connection
from simulations.deployment import LocalDeployment, running_federation
from tests.support.flower_apps import write_flower_app

pytestmark = [pytest.mark.slow, pytest.mark.integration]

RUN_WAIT = 180.0

CLIENT = '''\
"""Foreign ClientApp: marks its import, then its run, and reads what node_config points to."""

import os
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

MARKERS = Path({markers!r})
(MARKERS / f"imported-{{os.getpid()}}").write_text("foreign code imported at a party")

app = ClientApp()


@app.query()
def query(msg: Message, context: Context) -> Message:
    (MARKERS / f"ran-{{context.node_id}}").write_text("foreign code ran at a party")
    loot = {{}}
    for key, value in context.node_config.items():
        path = Path(str(value))
        loot[key] = path.read_text()[:200] if path.is_file() else str(value)
    return Message(RecordDict({{"loot": ConfigRecord(loot)}}), reply_to=msg)
'''

SERVER = '''\
"""Foreign ServerApp: asks every SuperNode, then fails with what came back (`flwr ls` shows it)."""

import time

from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    deadline = time.monotonic() + 60
    nodes = []
    while len(nodes) < int(context.run_config["parties"]) and time.monotonic() < deadline:
        nodes = list(grid.get_node_ids())
        time.sleep(0.5)
    messages = [Message(RecordDict(), dst_node_id=n, message_type="query") for n in nodes]
    replies = list(grid.send_and_receive(messages, timeout=90))
    loot = [dict(r.content["loot"]) for r in replies if r.has_content()]
    errors = sorted(r.error.reason for r in replies if r.has_error())
    raise RuntimeError(f"{{len(nodes)}} nodes; loot={{loot}}; errors=" + " || ".join(errors))
'''


def _foreign_app(root: Path, markers: Path) -> Path:
    return write_flower_app(
        root,
        name="harvest",
        modules={"client": CLIENT.format(markers=str(markers)), "server": SERVER.format()},
        serverapp="server:app",
        clientapp="client:app",
        config="parties = 3",
        publisher="mallory",
        description="A foreign app: it would read every party's files",
    )


def _finished(fed: LocalDeployment, run_id: str) -> RunState:
    """The run's final state, as the coordinator's own ``flwr ls`` reports it."""
    flwr_home = fed.workspace / "flwr-home"
    deadline = time.monotonic() + RUN_WAIT
    gap = 1.0
    while time.monotonic() < deadline:
        state = run_state(connection=CONNECTION_NAME, flwr_home=flwr_home, run_id=run_id)
        if state.status.startswith("finished"):
            return state
        time.sleep(gap)
        gap = min(2 * gap, 4.0)
    raise TimeoutError(f"run {run_id} did not finish within {RUN_WAIT:.0f}s")


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDeployment]:
    rng = np.random.default_rng(5)
    dataset = load_dataset("synthetic", rng=rng, n_rows=3000)
    parties = partition_frame(
        dataset.frame, dataset.schema, parse_partition("by:segment"), n_parties=3, rng=rng
    )
    root = tmp_path_factory.mktemp("foreign")
    with running_federation(root / "fed", schema=dataset.schema, parties=parties) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def markers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="module")
def foreign_app(tmp_path_factory: pytest.TempPathFactory, markers: Path) -> Path:
    return _foreign_app(tmp_path_factory.mktemp("mallory") / "harvest-app", markers)


def _assert_refused_by_every_party(
    fed: LocalDeployment, run_id: str, state: RunState, *, reason: str
) -> None:
    assert state.status == "finished:failed", state
    assert "3 nodes" in state.details and "loot=[]" in state.details, state.details
    for party in fed.bundles:
        # the coordinator sees who refused and why...
        assert f"run refused by party {party} ({reason})" in state.details, state.details
        # ...and the party logged the run id and the reason
        log = fed.bundle(party).layout.state_dir / "supernode.log"
        assert f"run {run_id} refused ({reason})" in log.read_text(errors="replace"), party


@dataclass(frozen=True)
class Attempts:
    """What the coordinator saw of the three refused runs, submitted at once and awaited together.

    ``foreign``: the foreign app's Flower run id and final state, for ``party-ca`` (someone
    holding only a party's ``ca.crt``: any party, or whoever copied it) and ``coordinator`` (the
    coordinator's own connection and credentials). ``forbidden_events`` and
    ``forbidden_error``: fedrisk's own pinned app submitted by ``fedrisk run`` with
    ``plaintext = true``, which the pin forbids.
    """

    foreign: dict[str, tuple[str, RunState]]
    forbidden_events: list[dict[str, object]]
    forbidden_error: RunFailedError | None


@pytest.fixture(scope="module")
def attempts(
    fed: LocalDeployment, foreign_app: Path, tmp_path_factory: pytest.TempPathFactory
) -> Attempts:
    assert fed.superlink is not None
    attacker_home = tmp_path_factory.mktemp("attacker") / "flwr-home"
    write_flwr_connection(
        attacker_home,
        address=fed.superlink.address,
        root_certificates=fed.bundle(list(fed.bundles)[-1]).layout.ca_certificate,
        name="target",
    )
    events: list[dict[str, object]] = []
    error: RunFailedError | None = None
    fed.plaintext = True
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            forbidden = pool.submit(
                fed.run, rounds=1, on_event=events.append, round_timeout=60.0, timeout=RUN_WAIT
            )
            submitted = {
                "party-ca": submit_run(
                    connection="target", flwr_home=attacker_home, run_config={}, app_dir=foreign_app
                ),
                "coordinator": submit_run(
                    connection=CONNECTION_NAME,
                    flwr_home=fed.workspace / "flwr-home",
                    run_config={},
                    app_dir=foreign_app,
                ),
            }
            foreign = {who: (run_id, _finished(fed, run_id)) for who, run_id in submitted.items()}
            try:
                forbidden.result()
            except RunFailedError as e:
                error = e
    finally:
        fed.plaintext = False
    return Attempts(foreign=foreign, forbidden_events=events, forbidden_error=error)


@pytest.mark.parametrize(
    "submitter",
    [
        pytest.param("party-ca", id="submitted-with-only-a-partys-ca-certificate"),
        pytest.param("coordinator", id="submitted-with-the-coordinators-credentials"),
    ],
)
def test_a_foreign_app_runs_at_no_party(
    fed: LocalDeployment, attempts: Attempts, markers: Path, submitter: str
) -> None:
    run_id, state = attempts.foreign[submitter]

    _assert_refused_by_every_party(fed, run_id, state, reason="foreign-app")
    assert sorted(markers.iterdir()) == []


def test_the_pinned_app_with_a_forbidden_run_config_is_refused_with_its_reason(
    fed: LocalDeployment, attempts: Attempts
) -> None:
    errors = [
        str(e["reason"]) for e in attempts.forbidden_events if e.get("event") == "party-error"
    ]

    assert attempts.forbidden_error is not None, "a run the pin forbids must fail"
    assert "config-value" in str(attempts.forbidden_error)
    # The error carries what a diagnosis needs when the workspace is gone: every log's end.
    assert "superlink's log" in str(attempts.forbidden_error)
    for party in fed.bundles:
        assert f"{party} (pid " in str(attempts.forbidden_error)
    assert len(errors) == 3, attempts.forbidden_events
    for party in fed.bundles:
        assert any(f"run refused by party {party} (config-value)" in e for e in errors), errors
    assert all("plaintext must be False; got True" in e for e in errors), errors


def test_the_federations_own_run_still_completes_after_the_refusals(
    fed: LocalDeployment, attempts: Attempts, markers: Path
) -> None:
    events: list[dict[str, object]] = []

    _, outcome = fed.run(rounds=1, on_event=events.append, round_timeout=60.0, timeout=RUN_WAIT)

    assert outcome.status == "finished:completed"
    rounds = [e for e in events if e["event"] == "round"]
    assert len(rounds) == 1 and len(rounds[0]["train_parties"]) == 3  # type: ignore[arg-type]
    assert any(e["event"] == "released" for e in events)
    assert sorted(markers.iterdir()) == []
