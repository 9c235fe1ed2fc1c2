"""A private Flower simulation SuperLink on 127.0.0.1, started and stopped by PID.

``flwr run`` with the built-in "local" connection starts a detached SuperLink on fixed ports that
outlives the run. We start our own on free ports instead, in its own process group, with a
per-run ``FLWR_HOME``, and stop its whole tree (Ray included) when the context exits.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from fedrisk.federation.processes import (
    console_script,
    flower_environment,
    pick_free_port,
    stop_process_tree,
)
from server.coordinator.runs import RunFailedError
from server.coordinator.superlink import log_tail

CONNECTION = "fedrisk-sim"


class SimulationEngineError(RunFailedError):
    """The simulation SuperLink could not be started (so the run failed before it began)."""


@dataclass(frozen=True)
class SimulationLink:
    """A running simulation SuperLink: where it listens and how to reach it from ``flwr``."""

    pid: int
    port: int
    flwr_home: Path
    log_path: Path
    connection: str = CONNECTION


@contextmanager
def simulation_link(workdir: Path, *, startup_timeout: float = 60.0) -> Iterator[SimulationLink]:
    """Start ``flower-superlink --simulation`` on a free loopback port; stop it on exit."""
    flwr_home = workdir / "flwr-home"
    flwr_home.mkdir(parents=True, exist_ok=True)
    port = pick_free_port()
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n'
        f'[superlink.{CONNECTION}]\naddress = "127.0.0.1:{port}"\ninsecure = true\n',
        encoding="utf-8",
    )
    log_path = workdir / "superlink.log"
    cmd = [
        console_script("flower-superlink"),
        # Plain HTTP is acceptable only here: the simulation SuperLink serves loopback and every
        # party runs inside its process tree. Deployment always uses TLS
        # (server/coordinator/superlink.py).
        "--insecure",
        "--simulation",
        "--isolation",
        "subprocess",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
    ]
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            cmd,
            env=flower_environment(flwr_home),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(proc, port, log_path, timeout=startup_timeout)
        yield SimulationLink(pid=proc.pid, port=port, flwr_home=flwr_home, log_path=log_path)
    finally:
        # Ray's workers stay in the SuperLink's group after it exits; flower-superexec runs in a
        # session of its own. stop_process_tree finds both.
        stop_process_tree(proc.pid, process=proc, grace=10.0)
        proc.wait(timeout=30)


def _wait_ready(
    proc: subprocess.Popen[bytes], port: int, log_path: Path, *, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SimulationEngineError(
                f"flower-superlink exited with code {proc.returncode}; the end of {log_path}:\n"
                f"{log_tail(log_path, lines=15)}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SimulationEngineError(f"flower-superlink not ready within {timeout:.0f}s; see {log_path}")
