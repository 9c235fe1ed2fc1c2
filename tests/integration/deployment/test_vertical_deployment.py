"""A vertical run on the real TLS deployment: a bank (guest) and two hosts, each its own process.

One federation serves the module: provisioning and the key ceremony, a vertical app pin the lead
signs (each host accepts it knowing its own role), a TLS SuperLink with node authentication and
three SuperNodes, each serving only its own table and view. ``fedrisk run`` then aligns the
parties by private set intersection and trains LR under each party's own CKKS key; each party
writes its own signed part into its own folder.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from clients.bundle import load_bundle
from clients.enrollment import create_tls_request, install_party_certificate
from clients.feature_service import HostScorer, load_settings
from clients.serve_settings import write_serve_settings
from fedrisk.data.vertical import VerticalDataset, align_by_join, load_vertical
from fedrisk.federation.enrollment import TlsRequest
from fedrisk.federation.identifiers import keyed_hashes
from fedrisk.federation.online_scoring import ScoreRequest
from fedrisk.federation.processes import console_script
from fedrisk.ml.metrics import auc
from fedrisk.release.artifact import load_trusted_keys
from fedrisk.release.identity import verify_key_from_pem
from fedrisk.release.vertical import read_part
from server.coordinator.provisioning import WorkspaceLayout, certify_party
from server.coordinator.superlink import LOG_FILE as SUPERLINK_LOG_FILE
from simulations.deployment import LocalDeployment, running_vertical_federation
from simulations.vertical import lr_auc, party_matrices

pytestmark = [pytest.mark.slow, pytest.mark.integration]

EPOCHS = 1
"""Full-batch epochs (one mini-batch each: every exchange is a Flower message round); one is
enough for the bars below and halves the module's time (a second epoch never beat the first)."""


@pytest.fixture(scope="module")
def dataset() -> VerticalDataset:
    return load_vertical("synthetic-vertical", rng=np.random.default_rng(3), n_customers=2000)


@pytest.fixture(scope="module")
def fed(
    tmp_path_factory: pytest.TempPathFactory, dataset: VerticalDataset
) -> Iterator[LocalDeployment]:
    root = tmp_path_factory.mktemp("vertical-deployed") / "fed"
    with running_vertical_federation(root, dataset=dataset) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def run_dir(fed: LocalDeployment, dataset: VerticalDataset) -> Path:
    """``fedrisk run`` as the coordinator types it; the run folder it reports."""
    parties = ",".join([dataset.guest.name, *(h.name for h in dataset.hosts)])
    done = subprocess.run(
        [
            console_script("fedrisk"),
            "run",
            "--workspace",
            str(fed.workspace),
            "--rounds",
            str(EPOCHS),
            "--round-timeout",
            "120",
            "--vertical-guest",
            dataset.guest.name,
            "--vertical-parties",
            parties,
            "--vertical-id-column",
            dataset.guest.id_column,
            "--batch-size",
            "4096",
            "--learning-rate",
            "0.2",
        ],
        capture_output=True,
        text=True,
        timeout=480,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{fed.log_tails()}"
    assert "run completed" in done.stdout
    runs = sorted((fed.workspace / "runs").glob("run-*"))
    assert len(runs) == 1
    return runs[0]


def _events(run_dir: Path) -> list[dict[str, object]]:
    lines = (run_dir / "progress.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_vertical_run_beats_the_guest_alone(
    fed: LocalDeployment, dataset: VerticalDataset, run_dir: Path
) -> None:
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    guest_name = dataset.guest.name
    trusted = load_trusted_keys(fed.release_dir / "trusted_keys")
    # The guest's own split of its customers (it never left the guest) names the test rows.
    split = np.load(fed.bundle(guest_name).layout.state_dir / "vertical" / "split.npy")
    views = [
        dataclasses.replace(v, split=split)
        for v in align_by_join(dataset, rng=np.random.default_rng(0))
    ]
    scores = [
        read_part(Path(results["released"][v.name]), trusted_keys=trusted).partial_scores(
            v.features, v.known
        )
        for v in views
    ]
    guest = views[0]
    assert guest.labels is not None
    test, fit = guest.rows("test"), np.concatenate([guest.rows("train"), guest.rows("valid")])

    federated_auc = float(auc(guest.labels[test], sum(scores)[test]))
    guest_part_auc = float(auc(guest.labels[test], scores[0][test]))
    guest_only_auc = lr_auc(party_matrices([guest])[0], guest.labels, fit, test)
    print(
        f"federated {federated_auc:.4f} guest part {guest_part_auc:.4f} guest-only LR "
        f"{guest_only_auc:.4f}"
    )

    assert results["parties"] == {v.name: v.role for v in views}
    assert 1 <= len(results["history"]) <= EPOCHS
    # A few full-batch epochs: a real model, and the hosts' parts add what the guest lacks.
    assert federated_auc > 0.7
    assert federated_auc > guest_part_auc + 0.01
    assert federated_auc > guest_only_auc - 0.02


def test_coordinator_learns_only_set_sizes(
    fed: LocalDeployment, dataset: VerticalDataset, run_dir: Path
) -> None:
    events = _events(run_dir)
    aligned = [e for e in events if e["event"] in ("align", "aligned")]
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))

    assert [e["event"] for e in aligned] == ["align", "aligned"]
    for event in aligned:
        assert set(event) <= {"event", "time", "step", "rows", "guest_rows", "host_rows", "shared"}
    sizes = results["alignment"]
    assert sizes["guest_rows"] == len(dataset.guest.frame)
    assert sizes["host_rows"] == {h.name: len(h.frame) for h in dataset.hosts}
    guest_ids = set(dataset.guest.frame[dataset.guest.id_column])
    assert sizes["shared"] == {
        h.name: len(guest_ids & set(h.frame[h.id_column])) for h in dataset.hosts
    }
    # No label or feature value reaches the coordinator's log or progress: a column's name
    # would appear with any value written there.
    log = (WorkspaceLayout(fed.workspace).superlink_dir / SUPERLINK_LOG_FILE).read_text(
        encoding="utf-8", errors="replace"
    )
    text = log + (run_dir / "progress.jsonl").read_text(encoding="utf-8")
    columns = [dataset.guest.label, *dataset.guest.numeric, *dataset.hosts[0].numeric]
    for column in (c for c in columns if c is not None and len(c) > 3):
        assert re.search(rf"\b{re.escape(column)}\b", text) is None, column


def test_each_party_holds_only_its_own_signed_part(
    fed: LocalDeployment, dataset: VerticalDataset, run_dir: Path
) -> None:
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    model_id = results["run_id"]
    manifest = fed.bundle(dataset.guest.name).manifest

    for party in [dataset.guest, *dataset.hosts]:
        own = fed.release_dirs[party.name]
        held = sorted(p.relative_to(own).as_posix() for p in own.glob("*/*") if p.is_dir())
        assert held == [f"{model_id}/{party.name}"]
        key = verify_key_from_pem(manifest.party(party.name).signing_public_key, source=party.name)
        part = read_part(own / model_id / party.name, trusted_keys={party.name: key})
        assert part.party == party.name
        assert Path(results["released"][party.name]) == own / model_id / party.name
    # Nothing of the model reached the lender's registry or the coordinator.
    assert not (fed.release_dir / model_id).exists()
    assert not list(fed.workspace.rglob("artifact.sig"))
    assert load_bundle(fed.bundles[dataset.hosts[0].name]).name == dataset.hosts[0].name


def test_hosts_serve_their_parts_with_ca_certificates(
    fed: LocalDeployment, dataset: VerticalDataset, run_dir: Path, tmp_path: Path
) -> None:
    """What `party serve` needs after the run, from each host's own folder: a certificate the
    CA signed for the host's own key, its part, its table, its masks; answers sum to the parts."""
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    model_id = results["run_id"]
    trusted = load_trusted_keys(fed.release_dir / "trusted_keys")
    shared = set(dataset.hosts[0].frame[dataset.hosts[0].id_column]) & set(
        dataset.hosts[1].frame[dataset.hosts[1].id_column]
    )
    customer = sorted(shared)[0]
    total, plain = 0.0, 0.0
    for host in dataset.hosts:
        folder = fed.bundles[host.name]
        request = TlsRequest.model_validate_json(
            create_tls_request(folder, hosts=["127.0.0.1"]).read_text(encoding="utf-8")
        )
        (tmp_path / f"{host.name}.crt").write_bytes(certify_party(fed.workspace, request))
        install_party_certificate(folder, tmp_path / f"{host.name}.crt")

        settings = write_serve_settings(
            load_bundle(folder), model_id=model_id, out=tmp_path / f"{host.name}.json"
        )
        scorer = HostScorer(load_settings(tmp_path / f"{host.name}.json"))
        (hashed,) = keyed_hashes([customer], "opaque", key=scorer.key)
        answer = scorer.answer(
            ScoreRequest(request_id="request-0001", customer=hashed, model_id=model_id)
        )

        assert settings.part == fed.release_dirs[host.name] / model_id / host.name
        assert answer.status == "known" and answer.masked
        total += answer.score
        part = read_part(settings.part, trusted_keys=trusted)
        row = host.frame[host.frame[host.id_column] == customer]
        plain += float(part.partial_scores(row, np.ones(1, dtype=bool))[0])
    assert total == pytest.approx(plain, abs=1e-6)
