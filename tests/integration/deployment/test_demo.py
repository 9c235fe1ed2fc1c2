"""``run_demo`` end to end on the real runtime: TLS SuperLink, three SuperNodes, an encrypted round,
a signed release, the scoring service's decisions, the vertical federation scored through live
host services, and every process it started stopped."""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from fedrisk.federation.processes import descendants, is_alive
from fedrisk.release.artifact import load_trusted_keys, read_artifact
from simulations.demo import PARTY_NAMES, run_demo
from tests.support.processes import stop_pid

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class ProcessSampler:
    """Every descendant of this process seen while it runs, sampled every 0.1 s.

    The demo's long-lived processes (SuperLink, SuperExec, SuperNodes, ClientApps, the scoring
    service) live for seconds at least, so the sampler sees each one; a process too short-lived to
    be sampled has ended on its own.
    """

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.1):
            self.seen.update(descendants(os.getpid()))

    def __enter__(self) -> ProcessSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()


@pytest.fixture
def sampler() -> Iterator[ProcessSampler]:
    """A sampler whose leftover processes, if any, are stopped by PID at teardown."""
    sampler = ProcessSampler()
    try:
        yield sampler
    finally:
        for pid in sampler.seen:
            if is_alive(pid):
                stop_pid(pid)


def test_the_demo_trains_releases_scores_and_stops_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sampler: ProcessSampler
) -> None:
    # arrange: the synthetic parties, one round, the vertical step, everything under tmp_path
    monkeypatch.delenv("FEDRISK_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    output = io.StringIO()
    console = Console(file=output, width=200)
    out = tmp_path / "demo-out"
    before = set(descendants(os.getpid()))

    # act
    with sampler:
        run_demo(console=console, out=out, rounds=1, vertical=True)

    # assert: the federation ran with three parties and released a model
    text = output.getvalue()
    supernode_pids = {
        name: int(pid) for name, pid in re.findall(r"SuperNode (\w+): pid (\d+)", text)
    }
    assert sorted(supernode_pids) == sorted(PARTY_NAMES)
    assert "round 1/1: 3 parties, federated AUC" in text
    # the parties reached the SuperLink only through the Fleet-API proxy, on its own address
    addresses = dict(re.findall(r"(coordinator's|parties') address .*?: https://(\S+)", text))
    assert set(addresses) == {"coordinator's", "parties'"}
    assert addresses["coordinator's"] != addresses["parties'"]
    released = re.search(r"released (\S+) \(signed by (\w+)\)", text)
    assert released is not None and released.group(2) in PARTY_NAMES

    # the artifact on disk verifies against the parties' trusted keys
    signed = re.search(r"signed model:\s+(\S+)", text)
    assert signed is not None
    artifact_dir = Path(signed.group(1))
    assert artifact_dir.name == released.group(1)
    registry = artifact_dir.parent
    artifact = read_artifact(
        artifact_dir, trusted_keys=load_trusted_keys(registry / "trusted_keys")
    )
    assert artifact.model_id == released.group(1)
    assert sorted(artifact.lineage.parties) == sorted(PARTY_NAMES)

    # the scoring service's decisions were printed, fraud ring and review queue included
    assert "A-card decisions from the scoring service" in text
    for label in ("low risk", "typical", "high risk", "ring member 6"):
        assert label in text
    assert re.search(r"\b(approve|review|decline)\b", text)
    assert "possible ring: 6 linked applications" in text
    queue = re.search(r"review queue now holds (\d+) items", text)
    assert queue is not None and int(queue.group(1)) >= 1
    assert (out / "scoring.db").is_file()

    # the demo's own decisions and their generated outcomes raised the drifted region's
    # alerts against the signed artifact's reference: score PSI, income CSI, delinquency
    booked = re.search(r"(\d+) applications decided by the service, (\d+) approved loans", text)
    assert booked is not None and int(booked.group(2)) > 100
    assert re.search(r"alert psi \(critical\)", text)
    assert re.search(r"alert csi \(critical\): .*income", text)
    assert re.search(r"alert segment_delinquency \(warning\): .*region=capital", text)
    assert re.search(r"dashboard:\s+http://127\.0\.0\.1:\d+/dashboard", text)

    # the vertical step: PSI, encrypted training, then decisions through the lender's real
    # /v1/applications/decision with two live host services, then one host stopped
    assert "private set intersection over X25519" in text
    assert re.search(r"ecommerce knows \d+% of the bank's customers", text)
    host_pids = {
        name: int(pid) for name, pid in re.findall(r"(\w+): fedrisk party serve, pid (\d+)", text)
    }
    assert sorted(host_pids) == ["ecommerce", "telecom"]
    lender = re.search(r"the lender's scoring service \(pid (\d+)\)", text)
    assert lender is not None
    assert "Vertical A-card decisions" in text
    table = text[text.index("Vertical A-card decisions") :]
    live = [line for line in table.splitlines() if "known to both hosts " in line]
    assert live and re.search(r"│ (approve|manual_review|decline) .*│ none", live[0])
    assert re.search(r"(ecommerce|telecom)\.\w+: \w", table)  # a host's coded reason and text
    assert "telecom: unknown" in table  # a customer the operator does not know
    stopped = [line for line in table.splitlines() if "telecom stopped" in line]
    assert len(stopped) == 3
    assert all("ecommerce: masks-incomplete, telecom: down" in line for line in stopped)
    assert "host services and the vertical scoring service stopped" in text
    parts = re.search(r"vertical model parts: (\S+)", text)
    assert parts is not None and Path(parts.group(1)).is_dir()

    # every process it started is stopped: none left alive, none left as our children
    started = sampler.seen - before
    assert set(supernode_pids.values()) <= started
    assert {*host_pids.values(), int(lender.group(1))} <= started
    assert len(started) >= 1 + len(PARTY_NAMES) + 1  # SuperLink, SuperNodes, scoring service
    assert [pid for pid in started if is_alive(pid)] == []
    assert [pid for pid in descendants(os.getpid()) if is_alive(pid)] == []
    assert "Done: everything stopped" in text
