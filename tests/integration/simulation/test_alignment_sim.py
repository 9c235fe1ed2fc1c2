"""The ``align`` phase in Flower's simulation engine: real ClientApp processes, real messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedrisk.federation.run_config import parse_run_config
from server.coordinator.runs import submit_run, wait_for_run
from simulations.engine import simulation_link
from tests.support.alignment import canonical, spelled, write_alignment_workspace
from tests.support.flower_apps import write_flower_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTIES = ("bank", "telecom", "shop")

SERVER = '''\
"""Probe: the coordinator's align phase alone, then the sizes it learnt."""

import json
import time
from dataclasses import asdict

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedrisk.federation.run_config import parse_run_config
from server.coordinator.alignment import AlignmentSettings, align_parties
from server.coordinator.progress import ProgressLog

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = parse_run_config(dict(context.run_config))
    progress = ProgressLog(config.server_path / "progress.jsonl")
    try:
        deadline = time.monotonic() + 60
        while len(list(grid.get_node_ids())) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        sizes = align_parties(
            grid,
            AlignmentSettings(guest="bank", id_column="phone", id_kind="phone"),
            run_id=config.run_id,
            timeout=120,
            progress=progress,
        )
        (config.server_path / "sizes.json").write_text(json.dumps(asdict(sizes)))
    except Exception as e:
        progress.emit("failed", reason=f"{type(e).__name__}: {e}")
        raise
    progress.emit("finished")
'''

CLIENT = """\
from clients import clientapp

app = clientapp.app
"""


def test_alignment_runs_in_the_simulation_engine(tmp_path: Path) -> None:
    # arrange: the bank's 120 customers; the telecom knows 80 % of them, the shop 60 %
    rng = np.random.default_rng(11)
    bank = [int(i) for i in rng.permutation(120)]
    telecom = [*bank[:96], *range(500, 530)]
    shop = [*bank[48:120], *range(900, 910)]
    rng.shuffle(telecom)
    columns = {
        "bank": [spelled(i, 0) for i in bank],
        "telecom": [spelled(i, 1) for i in telecom],
        "shop": [spelled(i, 2) for i in shop],
    }
    workspace = write_alignment_workspace(tmp_path / "ws", columns, order=PARTIES)
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    defaults = parse_run_config(
        {
            "run-id": "align-sim",
            "min-parties": 2,
            "allow-fewer-parties": True,
            "sim-workspace": str(workspace),
            "server-dir": str(server_dir),
        }
    ).to_run_config()
    app = write_flower_app(
        tmp_path / "app",
        name="alignprobe",
        modules={"server": SERVER, "client": CLIENT},
        serverapp="server:app",
        clientapp="client:app",
        config="\n".join(f"{k} = {json.dumps(v)}" for k, v in defaults.items()),
    )

    # act: the probe's ServerApp with the project's ClientApp on three simulated SuperNodes
    with simulation_link(tmp_path / "link") as link:
        run_id = submit_run(
            connection=link.connection,
            flwr_home=link.flwr_home,
            run_config={},
            federation_config={"num-supernodes": 3, "client-resources-num-cpus": 1},
            app_dir=app,
        )
        outcome = wait_for_run(
            connection=link.connection,
            flwr_home=link.flwr_home,
            run_id=run_id,
            progress_path=server_dir / "progress.jsonl",
            timeout=300,
        )

    # assert: the coordinator learnt the set and intersection sizes of a plain intersection
    sizes = json.loads((server_dir / "sizes.json").read_text())
    guest = set(canonical(columns["bank"]))
    assert sizes["guest_rows"] == 120
    assert sizes["host_rows"] == {"telecom": 126, "shop": 82}
    assert sizes["shared"] == {
        host: len(guest & set(canonical(columns[host]))) for host in ("telecom", "shop")
    }
    assert sizes["shared"] == {"telecom": 96, "shop": 72}
    assert [e["event"] for e in outcome.events][-1] == "finished"
