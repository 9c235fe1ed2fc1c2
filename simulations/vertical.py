"""Vertical federation experiments: lay out the parties, run the encrypted vertical LR (in
Flower's simulation engine or in-process), and compare it with the centralized and guest-only
models on the guest's test customers.

In Flower's simulation engine the parties align their own tables by private set intersection
(``server.coordinator.alignment``) before training, when the workspace is laid out from the raw
dataset. The in-process driver and the baselines use a plain join
(``fedrisk.data.vertical.align_by_join``), which yields the same views.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.linear_model import LogisticRegression

from clients import vertical_party
from clients.party import PARTY_CONFIG_FILE
from fedrisk.data.vertical import (
    AlignedView,
    PartyColumns,
    VerticalDataError,
    VerticalDataset,
    align_by_join,
    load_vertical,
)
from fedrisk.federation.alignment import GuestAlignment, HostAlignment
from fedrisk.federation.identifiers import IdentifierKey
from fedrisk.federation.run_config import RunConfigValue, parse_run_config
from fedrisk.federation.vertical import Packet
from fedrisk.ml.metrics import auc
from fedrisk.ml.vertical import (
    PartyPreprocessor,
    VerticalParams,
    train_plain_vertical,
    with_intercept,
)
from fedrisk.release.artifact import load_trusted_keys
from fedrisk.release.identity import generate_signing_key, save_private_key, save_public_key
from fedrisk.release.vertical import VerticalPart, read_part
from secure_agg.psi import align_locally
from secure_agg.vertical import PartyKey
from server.coordinator.runs import RunFailedError, submit_run, wait_for_run
from server.coordinator.vertical import EpochRecord, VerticalCoordinator, VerticalResult
from simulations.engine import simulation_link

Tap = Callable[[str, int, Packet], None]
"""Sees every packet: direction ("to" / "from"), node, packet (tests inspect them)."""


@dataclass(frozen=True)
class VerticalWorkspace:
    """A laid-out vertical federation: one folder per party, the registry, trusted keys."""

    root: Path
    views: list[AlignedView]
    configs: list[vertical_party.VerticalPartyConfig]
    release_dir: Path
    trusted_keys_dir: Path
    id_column: str | None = None
    """Set when the parties hold their own tables and align them by PSI in the engine."""
    order_seed: int | None = None
    """The guest's secret batch-order seed, when the simulation fixed it (the plaintext oracle
    needs it to follow the same batches)."""


def prepare_vertical_workspace(
    root: Path,
    views: list[AlignedView],
    dataset: VerticalDataset | None = None,
    *,
    order_seed: int | None = None,
) -> VerticalWorkspace:
    """Write each party's own table, own CKKS key (0600), signing key and ``vertical.json``,
    and the alignment a plain join gives (what in-process runs train on).

    With ``dataset`` (the raw views ``views`` were joined from, guest first) each party's own
    table is its raw one, with its identifier column, and gets a ``party.toml`` and the
    federation's identifier key: what the engine's private set intersection reads (a run that
    aligns by PSI ignores the join's alignment). Without it a host's table is the rows it
    knows. ``order_seed`` is the guest's secret batch-order seed (fresh per run when None).
    """
    release_dir = root / "registry"
    trusted = release_dir / "trusted_keys"
    trusted.mkdir(parents=True, exist_ok=True)
    raw = [dataset.guest, *dataset.hosts] if dataset is not None else None
    if raw is not None and [p.name for p in raw] != [v.name for v in views]:
        raise VerticalDataError(
            f"dataset parties must be the views' {[v.name for v in views]}; got "
            f"{[p.name for p in raw]}"
        )
    id_key = root / "identifier.key"
    if raw is not None:
        IdentifierKey(secrets.token_bytes(32), "fedrisk-sim").save(id_key)
    tables, alignments = join_alignment(views, raw)
    configs = []
    for pid, view in enumerate(views):
        folder = root / "parties" / f"party_{pid}"
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        table = folder / "own.csv"
        tables[pid].to_csv(table, index=False)
        aligned = folder / "alignment.json"
        aligned.write_text(alignments[pid].to_json(), encoding="utf-8")
        secret = folder / "ckks.secret"
        secret.write_bytes(PartyKey.generate().secret_bytes())
        secret.chmod(0o600)
        signing = generate_signing_key()
        save_private_key(signing, folder / "signing.key")
        save_public_key(signing.public_key(), trusted / f"{view.name}.pub")
        guest_only: dict[str, Any] = {}
        if view.role == "guest":
            split_file = folder / "split.npy"
            np.save(split_file, view.split)
            guest_only = {"label": _LABEL, "split": split_file, "order_seed": order_seed}
        if raw is not None:
            (folder / PARTY_CONFIG_FILE).write_text(
                f'name = "{view.name}"\ntrain = "{table.name}"\ntest = "{table.name}"\n'
                f'schema_file = "schema.toml"\nidentifier_key = "{id_key}"\n'
                f'signing_key = "signing.key"\nroster = "{trusted}"\n',
                encoding="utf-8",
            )
        config = vertical_party.VerticalPartyConfig(
            name=view.name,
            role=view.role,
            own_data=table,
            numeric=view.numeric,
            categorical=view.categorical,
            secret_key=secret,
            signing_key=folder / "signing.key",
            release_dir=release_dir,
            peers_dir=folder / "peers",
            id_column=raw[pid].id_column if raw is not None else None,
            alignment=aligned,
            roster=trusted,
            **guest_only,
        )
        (folder / vertical_party.CONFIG_FILE).write_text(config.model_dump_json(), encoding="utf-8")
        configs.append(config)
    id_column = raw[0].id_column if raw is not None else None
    return VerticalWorkspace(root, views, configs, release_dir, trusted, id_column, order_seed)


_LABEL = "_label"


def join_alignment(
    views: list[AlignedView], raw: list[PartyColumns] | None
) -> tuple[list[pd.DataFrame], list[GuestAlignment | HostAlignment]]:
    """Each party's own table and the alignment a plain join on the identifier gives (guest
    first): a host's reference of a row is its own row number. Simulations only; a federation
    gets the same shape from private set intersection."""
    guest = views[0]
    guest_table = (
        raw[0].frame.reset_index(drop=True).copy()
        if raw is not None
        else guest.features.reset_index(drop=True).copy()
    )
    guest_table[_LABEL] = guest.labels
    tables: list[pd.DataFrame] = [guest_table]
    shared: dict[str, npt.NDArray[np.int64]] = {}
    refs: dict[str, npt.NDArray[np.int64]] = {}
    hosts: list[GuestAlignment | HostAlignment] = []
    for pid, view in enumerate(views[1:], start=1):
        if raw is not None:
            table = raw[pid].frame.reset_index(drop=True)
            own = {v: i for i, v in enumerate(table[raw[pid].id_column].tolist())}
            ids = raw[0].frame[raw[0].id_column].tolist()
            ref = np.array([own.get(i, -1) for i in ids], dtype=np.int64)
        else:
            table = view.features[view.known].reset_index(drop=True)
            ref = np.where(view.known, np.cumsum(view.known) - 1, -1).astype(np.int64)
        tables.append(table)
        rows = np.flatnonzero(ref >= 0).astype(np.int64)
        shared[view.name] = rows
        refs[view.name] = ref[rows]
        slots = np.sort(ref[rows])
        hosts.append(HostAlignment(host=view.name, guest=guest.name, slots=slots, rows=slots))
    guest_result = GuestAlignment(
        guest=guest.name, n_rows=len(guest.split), shared=shared, refs=refs
    )
    return tables, [guest_result, *hosts]


def align_by_psi(
    ws: VerticalWorkspace, dataset: VerticalDataset, *, rng: np.random.Generator
) -> GuestAlignment:
    """Align the workspace's parties by private set intersection in this process (the same four
    steps the engine's ``align`` phase runs, :func:`secure_agg.psi.align_locally`) and replace
    the join's alignment files with the result; returns the guest's result.

    The workspace must have been laid out with ``dataset`` (each party's own table and the
    federation's identifier key).
    """
    key_file = ws.root / "identifier.key"
    if ws.id_column is None or not key_file.is_file():
        raise VerticalDataError("PSI alignment needs a workspace laid out from the raw dataset")
    guest, views = align_locally(
        dataset.guest.name,
        dataset.guest.frame[dataset.guest.id_column].astype(str).tolist(),
        {h.name: h.frame[h.id_column].astype(str).tolist() for h in dataset.hosts},
        kind="opaque",
        key=IdentifierKey.load(key_file),
        rng=rng,
    )
    results: list[GuestAlignment | HostAlignment] = [guest, *(views[h.name] for h in dataset.hosts)]
    for config, result in zip(ws.configs, results, strict=True):
        assert config.alignment is not None
        config.alignment.write_text(result.to_json(), encoding="utf-8")
    return guest


def run_in_process(
    ws: VerticalWorkspace,
    params: VerticalParams,
    *,
    model_id: str,
    tap: Tap | None = None,
    states: list[dict[str, Any]] | None = None,
    coordinator: Callable[..., VerticalCoordinator] = VerticalCoordinator,
) -> VerticalResult:
    """The same coordinator and party code with direct calls instead of Flower messages (tests
    and benchmarks; every packet still passes through ``tap``, and ``states`` , when given,
    are the parties' live run states; ``coordinator`` builds the coordinator, e.g. a
    malicious subclass in tests)."""
    runtimes = [vertical_party.runtime(c, model_id) for c in ws.configs]
    if states is None:
        states = [{} for _ in runtimes]
    states.extend({} for _ in range(len(runtimes) - len(states)))

    def exchange(packets: Mapping[int, Packet]) -> dict[int, Packet]:
        out = {}
        for node, packet in packets.items():
            if tap is not None:
                tap("to", node, packet)
            answer = vertical_party.handle(packet, runtimes[node], states[node], params)
            if tap is not None:
                tap("from", node, answer)
            out[node] = answer
        return out

    return coordinator(params, exchange=exchange, model_id=model_id).run(list(range(len(runtimes))))


def run_in_engine(
    ws: VerticalWorkspace, params: VerticalParams, *, model_id: str
) -> VerticalResult:
    """Run the real ServerApp and ClientApps in Flower's simulation engine."""
    server_dir = ws.root / "server"
    server_dir.mkdir(exist_ok=True)
    config = parse_run_config(
        {
            "run_id": model_id,
            "rounds": params.epochs,
            "seed": params.seed,
            "batch_size": params.batch_size,
            "learning_rate": params.learning_rate,
            "l2": params.l2,
            "patience": params.patience,
            "layout": "vertical",
            "min_parties": len(ws.views),
            "allow_fewer_parties": True,
            "server_dir": str(server_dir),
            "sim_workspace": str(ws.root),
            "vertical_guest": ws.views[0].name if ws.id_column else "",
            "vertical_id_column": ws.id_column or "",
        }
    )
    run_config: dict[str, RunConfigValue] = config.to_run_config()
    with simulation_link(ws.root) as link:
        run_id = submit_run(
            connection=link.connection,
            flwr_home=link.flwr_home,
            run_config=run_config,
            federation_config={"num-supernodes": len(ws.views), "client-resources-num-cpus": 1},
        )
        wait_for_run(
            connection=link.connection,
            flwr_home=link.flwr_home,
            run_id=run_id,
            progress_path=server_dir / "progress.jsonl",
            timeout=120.0 + 120.0 * params.epochs,
        )
    results_path = server_dir / "results.json"
    if not results_path.is_file():
        raise RunFailedError(f"vertical run {run_id} completed without results")
    doc = json.loads(results_path.read_text(encoding="utf-8"))
    return VerticalResult(
        parties=doc["parties"],
        history=[EpochRecord(**e) for e in doc["history"]],
        best_epoch=int(doc["best_epoch"]),
        released=doc["released"],
        alignment=doc.get("alignment"),
    )


def oracle_params(ws: VerticalWorkspace, params: VerticalParams) -> VerticalParams:
    """The run's parameters with the guest's batch order: what the plaintext oracle follows."""
    if ws.order_seed is None:
        raise VerticalDataError("the oracle must know the guest's order seed; the run drew its own")
    return params.model_copy(update={"seed": ws.order_seed})


def party_matrices(views: list[AlignedView]) -> list[npt.NDArray[np.float64]]:
    """Each party's matrix as it builds it itself (the guest's with the intercept)."""
    out = []
    for v in views:
        prep = PartyPreprocessor(v.numeric, v.categorical).fit(
            v.features, v.known, rows=v.rows("train")
        )
        m = prep.transform(v.features, v.known)
        out.append(with_intercept(m) if v.role == "guest" else m)
    return out


def scores_from_parts(ws: VerticalWorkspace, result: VerticalResult) -> npt.NDArray[np.float64]:
    """Score every aligned row with the released, signature-checked parts."""
    trusted = load_trusted_keys(ws.trusted_keys_dir)
    total = np.zeros(len(ws.views[0].split))
    for view in ws.views:
        part: VerticalPart = read_part(Path(result.released[view.name]), trusted_keys=trusted)
        total += part.partial_scores(view.features, view.known)
    return total


def lr_auc(
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.int64],
    fit: npt.NDArray[np.int64],
    test: npt.NDArray[np.int64],
) -> float:
    """Test AUC of scikit-learn LR fitted on ``fit`` rows (the centralized and guest-only
    baselines)."""
    model = LogisticRegression(max_iter=2000).fit(x[fit], y[fit])
    return float(auc(y[test], model.decision_function(x[test])))


def simulate_vertical(
    dataset: str,
    *,
    seed: int = 0,
    params: VerticalParams | None = None,
    engine: bool = True,
    data_dir: Path | None = None,
    n_customers: int = 20_000,
    workdir: Path | None = None,
    registry_out: Path | None = None,
) -> dict[str, Any]:
    """Align, train encrypted, and compare; the ``--json`` document."""
    params = params or VerticalParams(seed=seed)
    rng = np.random.default_rng(seed)
    raw = load_vertical(dataset, rng=rng, data_dir=data_dir, n_customers=n_customers)
    views = align_by_join(raw, rng=rng)
    own_tmp = workdir is None
    root = Path(tempfile.mkdtemp(prefix="fedrisk-vertical-")) if workdir is None else workdir
    try:
        ws = prepare_vertical_workspace(
            root, views, raw if engine else None, order_seed=int(rng.integers(2**62))
        )
        model_id = f"vertical-{uuid.uuid4().hex[:12]}"
        started = time.perf_counter()
        result = (run_in_engine if engine else run_in_process)(ws, params, model_id=model_id)
        seconds = time.perf_counter() - started
        guest = views[0]
        y = guest.labels
        assert y is not None
        train, valid, test = guest.rows("train"), guest.rows("valid"), guest.rows("test")
        fit = np.concatenate([train, valid])
        federated = scores_from_parts(ws, result)
        matrices = party_matrices(views)
        plain = train_plain_vertical(
            matrices, y, train_rows=train, valid_rows=valid, params=oracle_params(ws, params)
        )
        plain_scores = sum(m @ w for m, w in zip(matrices, plain.weights, strict=True))
        joined = np.concatenate(matrices, axis=1)
        epochs = result.history
        if registry_out is not None:
            shutil.copytree(ws.release_dir, registry_out, dirs_exist_ok=True)
        return {
            "dataset": dataset,
            "layout": "vertical",
            "model": "lr",
            "he": True,
            "engine": "flower-simulation" if engine else "in-process",
            "parties": {v.name: v.role for v in views},
            "overlap": _overlap(result, views),
            "rows": {"train": len(train), "valid": len(valid), "test": len(test)},
            "federated": {
                "auc": float(auc(y[test], federated[test])),
                "best_epoch": result.best_epoch,
            },
            "plaintext_protocol": {"auc": float(auc(y[test], np.asarray(plain_scores)[test]))},
            "centralized": {"auc": lr_auc(joined, y, fit, test)},
            "guest_only": {"auc": lr_auc(matrices[0], y, fit, test)},
            "epochs": len(epochs),
            "seconds_per_epoch": float(np.mean([e.seconds for e in epochs])),
            "bytes_per_party_per_epoch": {
                name: float(np.mean([e.bytes_per_party.get(name, 0) for e in epochs]))
                for name in result.parties
            },
            "history": [e.__dict__ for e in epochs],
            "seconds": seconds,
            "params": params.model_dump(),
        }
    finally:
        if own_tmp:
            shutil.rmtree(root, ignore_errors=True)


def _overlap(result: VerticalResult, views: list[AlignedView]) -> dict[str, float]:
    """Per host, the share of the guest's customers it knows: from the PSI sizes the
    coordinator learnt when the run aligned, else from the join."""
    if result.alignment is not None:
        shared: dict[str, int] = result.alignment["shared"]
        rows = int(result.alignment["guest_rows"])
        return {name: shared[name] / rows for name in sorted(shared)}
    return {v.name: float(v.known.mean()) for v in views[1:]}
