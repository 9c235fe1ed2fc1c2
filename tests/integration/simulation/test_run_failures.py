"""A run that fails inside Flower says why: the ServerApp's or the ClientApps' own error message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedrisk.federation.protocol import REFUSAL_MARK
from server.coordinator.runs import RunFailedError, submit_run, wait_for_run
from simulations.engine import SimulationLink, simulation_link

pytestmark = [pytest.mark.slow, pytest.mark.integration]

PARTIES = 3


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulationLink]:
    with simulation_link(tmp_path_factory.mktemp("link")) as running:
        yield running


def _fail_run(link: SimulationLink, server_dir: Path, run_config: dict[str, object]) -> str:
    run_id = submit_run(
        connection=link.connection,
        flwr_home=link.flwr_home,
        run_config={"server-dir": str(server_dir), **run_config},
        federation_config={"num-supernodes": PARTIES, "client-resources-num-cpus": 1},
    )
    with pytest.raises(RunFailedError) as failed:
        wait_for_run(
            connection=link.connection,
            flwr_home=link.flwr_home,
            run_id=run_id,
            progress_path=server_dir / "progress.jsonl",
            timeout=600.0,
        )
    return str(failed.value)


def test_a_serverapp_that_fails_before_logging_is_explained_by_flowers_details(
    link: SimulationLink, tmp_path: Path
) -> None:
    # The ServerApp parses the run config before it can open its progress log: nothing but
    # Flower's status details can say why it stopped.
    message = _fail_run(link, tmp_path / "server", {"model": "foo"})

    assert "finished:failed" in message
    assert "model must be 'lr', 'mlp' or 'scorecard'; got 'foo'" in message
    assert "SuperLink log" not in message


def test_clientapps_that_refuse_are_quoted_next_to_the_servers_verdict(
    link: SimulationLink, tmp_path: Path
) -> None:
    # Only the ClientApps read sim-workspace (each party's config lives there).
    missing = tmp_path / "no-such-workspace"
    message = _fail_run(
        link,
        tmp_path / "server",
        {"sim-workspace": str(missing), "plaintext": True, "round-timeout": 120.0},
    )

    assert "finished:failed" in message
    assert REFUSAL_MARK in message
    assert str(missing / "parties") in message
