"""Experiment commands of ``fedrisk``: ``simulate``, ``train-central`` and ``demo``.

They run on one machine: Flower's simulation engine, or a local deployment for the demo. Each
command refuses a bad argument before it imports torch or starts a process. The options' types
hold the closed sets (:mod:`fedrisk.data.catalog`, :mod:`fedrisk.ml.kinds`), and
:class:`~simulations.spec.SimulationSpec` the rules between settings. That is why this module
imports only typer, rich and those light modules at the top: the trainers and the runner are
imported inside a command, once its arguments have passed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from rich.console import Console
from rich.table import Table

from fedrisk.data.catalog import LOADABLE_DATASET_NAMES, VERTICAL_DATASET_NAMES
from fedrisk.ml.kinds import MODEL_KINDS, SERVER_OPTIMIZERS, ModelKind, ServerOptimizerKind

if TYPE_CHECKING:
    from pydantic import ValidationError

    from fedrisk.release.artifact import PrivacyRecord
    from simulations.runner import Comparison, FederationOutcome
    from simulations.spec import SimulationSpec

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` as an error on stderr; return the ``typer.Exit`` to raise."""
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def spec_problems(error: ValidationError) -> str:
    """The problems a settings model found, one per line, as its validators worded them."""
    return "\n".join(
        str(problem["msg"]).removeprefix("Value error, ") for problem in error.errors()
    )


def in_existing_directory(value: Path | None) -> Path | None:
    """Option callback: a file the command writes at the end must go into an existing folder.

    Checked first, so a typo in the folder does not cost the whole run.
    """
    if value is not None and not value.resolve().parent.is_dir():
        raise typer.BadParameter(f"folder {value.parent} must exist; got {value}")
    return value


DatasetOption = Annotated[
    str, typer.Option(click_type=click.Choice(LOADABLE_DATASET_NAMES), help="Dataset name")
]
ModelOption = Annotated[
    ModelKind, typer.Option(click_type=click.Choice(MODEL_KINDS), help="Model kind")
]
SeedOption = Annotated[int, typer.Option(min=0, help="Seed for the split and training")]
DataDirOption = Annotated[
    Path | None,
    typer.Option(exists=True, file_okay=False, help="Data folder (default: $FEDRISK_DATA_DIR)"),
]
JsonOption = Annotated[
    Path | None,
    typer.Option(
        "--json", dir_okay=False, callback=in_existing_directory, help="Write the results here"
    ),
]


def run_central(
    dataset: str, model: ModelKind, *, seed: int, data_dir: Path | None
) -> dict[str, Any]:
    """Train and score a centralized baseline; the numbers ``train-central`` prints."""
    import numpy as np

    from fedrisk.data.datasets import load_dataset
    from fedrisk.data.splits import split_frame
    from fedrisk.errors import FedRiskError
    from simulations.baselines import reference_scores, tuned_central

    ds = load_dataset(dataset, data_dir=data_dir, rng=np.random.default_rng(seed))
    target = ds.schema.target_column
    if target is None:
        raise FedRiskError(f"dataset {dataset} has no target column; it cannot be trained on")
    if ds.test_frame is not None:
        train, test = ds.frame, ds.test_frame
    else:
        train, test = split_frame(ds.frame, target=target, rng=np.random.default_rng(seed))
    if model == "gbdt":
        from simulations.tree_baselines import central_tree_scores

        scores = central_tree_scores(train, test, ds.schema, seed=seed)
    else:
        result = tuned_central(train, test, ds.schema, model=model, rng=np.random.default_rng(seed))
        scores = {
            "auc": result.auc,
            "ks": result.ks,
            "gini": result.gini,
            "n_train": result.n_train,
            "n_test": result.n_test,
        }
    return {
        "dataset": dataset,
        "model": model,
        **scores,
        "reference": reference_scores(train, test, ds.schema, model=model, seed=seed),
    }


def train_central(
    dataset: DatasetOption,
    model: ModelOption = "lr",
    seed: SeedOption = 0,
    json_path: JsonOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Train a centralized baseline on pooled data and print AUC, KS and Gini."""
    from fedrisk.errors import FedRiskError
    from fedrisk.ml.training import configure_torch

    configure_torch(threads=1)
    try:
        row = run_central(dataset, model, seed=seed, data_dir=data_dir)
    except FedRiskError as e:
        raise fail(str(e)) from e
    table = Table(title=f"Centralized baseline: {dataset}")
    for col in ("model", "AUC", "KS", "Gini", "train rows", "test rows"):
        table.add_column(col)
    table.add_row(
        model,
        f"{row['auc']:.4f}",
        f"{row['ks']:.4f}",
        f"{row['gini']:.4f}",
        str(row["n_train"]),
        str(row["n_test"]),
    )
    ref = row["reference"]
    if ref is not None:
        table.add_row(
            f"reference: {ref['model']}", f"{ref['auc']:.4f}", f"{ref['ks']:.4f}", "", "", ""
        )
    console.print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(row, indent=2), encoding="utf-8")


def progress_printer(label: str) -> Any:
    """An ``on_event`` handler printing a simulated run's progress events, one line each."""

    def on_event(event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "round":
            dropped = f", dropped {', '.join(event['dropped'])}" if event.get("dropped") else ""
            console.print(
                f"[cyan]{label}[/] round {event['round']}: "
                f"{len(event['train_parties'])} parties, AUC {event['auc']:.4f}, "
                f"KS {event['ks']:.4f}, {event['seconds']:.1f}s{dropped}"
            )
        elif kind == "stats":
            console.print(
                f"[cyan]{label}[/] encrypted statistics from {len(event['parties'])} parties"
            )
        elif kind in ("refused", "party-error"):
            console.print(f"[yellow]{label}[/] {kind}: {event.get('reason')}")
        elif kind == "released":
            console.print(f"[green]{label}[/] released {event['model_id']} at {event['party']}")
        elif kind == "failed":
            console.print(f"[red]{label}[/] failed: {event.get('reason')}")

    return on_event


def comparison_table(title: str, comparison: Comparison) -> Table:
    """The one table ``simulate`` prints: every model on the same pooled test data."""
    table = Table(title=title)
    for col in ("model", "AUC", "KS", "train rows"):
        table.add_column(col)
    fed = comparison.federated
    table.add_row("federated, CKKS-encrypted", f"{fed['auc']:.4f}", f"{fed['ks']:.4f}", "all")
    if comparison.plaintext is not None:
        pt = comparison.plaintext
        table.add_row(
            "federated, plaintext (INSECURE)", f"{pt['auc']:.4f}", f"{pt['ks']:.4f}", "all"
        )
    else:
        table.add_row("federated, plaintext (INSECURE)", "not run (--plaintext)", "", "")
    cen = comparison.centralized
    table.add_row("centralized pooled (tuned)", f"{cen['auc']:.4f}", f"{cen['ks']:.4f}", "all")
    ref = comparison.reference
    if ref is not None:
        table.add_row(f"reference: {ref['model']}", f"{ref['auc']:.4f}", f"{ref['ks']:.4f}", "all")
    for row in comparison.local:
        table.add_row(
            f"local only: {row['party']}",
            f"{row['auc']:.4f}",
            f"{row['ks']:.4f}",
            str(row["n_train"]),
        )
    return table


SimulateDatasetOption = Annotated[
    str,
    typer.Option(
        click_type=click.Choice((*LOADABLE_DATASET_NAMES, *VERTICAL_DATASET_NAMES)),
        help="Dataset name (the vertical ones with --layout vertical)",
    ),
]


def simulate(
    dataset: SimulateDatasetOption = "synthetic",
    parties: Annotated[
        int, typer.Option(min=1, help="Number of parties (≥3 unless overridden)")
    ] = 3,
    partition: Annotated[
        str, typer.Option(help="iid | dirichlet:ALPHA | by:COLUMN | quantity")
    ] = "iid",
    model: ModelOption = "lr",
    rounds: Annotated[int, typer.Option(min=1, help="Federated rounds")] = 5,
    plaintext: Annotated[
        bool, typer.Option("--plaintext", help="Also run the INSECURE plaintext federation")
    ] = False,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    local_epochs: Annotated[int, typer.Option(min=1, help="Local epochs per round")] = 1,
    proximal_mu: Annotated[
        float, typer.Option(min=0.0, help="FedProx proximal weight at the parties (0: none)")
    ] = 0.0,
    server_optimizer: Annotated[
        ServerOptimizerKind,
        typer.Option(
            click_type=click.Choice(SERVER_OPTIMIZERS),
            help="How parties turn the decrypted average into the global model",
        ),
    ] = "fedavg",
    server_learning_rate: Annotated[
        float, typer.Option(help="Server step size of fedadam / fedyogi")
    ] = 0.01,
    trees: Annotated[int, typer.Option(help="gbdt: tree budget")] = 300,
    tree_depth: Annotated[int, typer.Option(help="gbdt: maximum depth")] = 5,
    tree_learning_rate: Annotated[float, typer.Option(help="gbdt: shrinkage")] = 0.1,
    tree_lambda: Annotated[float, typer.Option(help="gbdt: L2 regularisation λ")] = 1.0,
    tree_bins: Annotated[int, typer.Option(help="gbdt: bins per numeric feature")] = 255,
    tree_colsample: Annotated[
        float, typer.Option(help="gbdt: share of features each tree may split on")
    ] = 1.0,
    allow_fewer_parties: Annotated[
        bool, typer.Option("--allow-fewer-parties", help="Allow 2 parties (see security notes)")
    ] = False,
    json_path: JsonOption = None,
    out: Annotated[
        Path | None,
        typer.Option(file_okay=False, help="Registry folder receiving the signed artifact"),
    ] = None,
    data_dir: DataDirOption = None,
    layout: Annotated[
        str,
        typer.Option(
            help="horizontal (same columns, different customers) | vertical (one label-holding "
            "guest and feature-holding hosts: datasets fate-hetero, synthetic-vertical, "
            "taiwan-3way; docs/vertical.md)"
        ),
    ] = "horizontal",
    epochs: Annotated[
        int | None,
        typer.Option(min=1, help="Vertical: epoch budget (early stopping may end sooner)"),
    ] = None,
    dp_epsilon: Annotated[
        float | None,
        typer.Option(min=0.0, help="Differential privacy: the run's epsilon budget (turns DP on)"),
    ] = None,
    dp_delta: Annotated[float, typer.Option(min=0.0, help="DP delta")] = 1e-5,
    dp_mode: Annotated[
        str,
        typer.Option(
            click_type=click.Choice(("sample", "client")),
            help="DP-SGD per row at each party, or clipped client updates with shared noise",
        ),
    ] = "sample",
    dp_clip_norm: Annotated[float, typer.Option(min=0.0, help="DP clipping norm")] = 1.0,
) -> None:
    """Run an encrypted federation in Flower's simulation engine and compare it with baselines."""
    import tempfile

    if layout == "vertical":
        if dp_epsilon is not None:
            raise fail(
                "--dp-epsilon applies to horizontal runs; the vertical protocol has no DP yet",
                code=2,
            )
        simulate_vertical_command(
            dataset, model=model, seed=seed, epochs=epochs, json_path=json_path, out=out,
            data_dir=data_dir,
        )  # fmt: skip
        return
    if layout != "horizontal":
        raise fail(f"layout must be horizontal or vertical; got {layout!r}", code=2)

    from pydantic import ValidationError

    from simulations.spec import SimulationSpec

    try:
        spec = SimulationSpec(
            dataset=dataset,
            parties=parties,
            partition=partition,
            model=model,
            rounds=rounds,
            seed=seed,
            local_epochs=local_epochs,
            allow_fewer_parties=allow_fewer_parties,
            dp_mode="off" if dp_epsilon is None else dp_mode,
            dp_epsilon=dp_epsilon or 0.0,
            dp_delta=dp_delta,
            dp_clip_norm=dp_clip_norm,
            proximal_mu=proximal_mu,
            server_optimizer=server_optimizer,
            server_learning_rate=server_learning_rate,
            trees=trees,
            tree_depth=tree_depth,
            tree_learning_rate=tree_learning_rate,
            tree_lambda=tree_lambda,
            tree_bins=tree_bins,
            tree_colsample=tree_colsample,
        )
    except ValidationError as e:
        raise fail(spec_problems(e), code=2) from e

    # The arguments are sound: now the seconds of importing torch are worth spending.
    from fedrisk.errors import FedRiskError
    from fedrisk.ml.training import configure_torch
    from server.coordinator.runs import RunFailedError
    from simulations.runner import compare, prepare_data, run_federation

    configure_torch(threads=1)
    try:
        data = prepare_data(spec, data_dir=data_dir)
        with tempfile.TemporaryDirectory(prefix="fedrisk-registry-") as scratch:
            registry = out if out is not None else Path(scratch)
            encrypted = run_federation(
                spec, data, release_dir=registry, on_event=progress_printer("encrypted")
            )
            plain: FederationOutcome | None = None
            if plaintext:
                with tempfile.TemporaryDirectory(prefix="fedrisk-plain-") as plain_dir:
                    plain = run_federation(
                        spec,
                        data,
                        release_dir=Path(plain_dir),
                        plaintext=True,
                        on_event=progress_printer("plaintext"),
                    )
            comparison = compare(spec, data, federated=encrypted, plaintext=plain)
    except (FedRiskError, RunFailedError) as e:
        raise fail(str(e)) from e
    title = f"{dataset}: {parties} parties, {partition}, {model}, {rounds} rounds"
    console.print(comparison_table(title, comparison))
    result = simulation_json(spec, encrypted, plain, comparison)
    if out is not None:
        (out / encrypted.artifact.model_id / "results.json").write_text(
            json.dumps(result, indent=2), encoding="utf-8"
        )
        console.print(f"signed artifact and results in {out / encrypted.artifact.model_id}")
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2), encoding="utf-8")


def simulate_vertical_command(
    dataset: str,
    *,
    model: str,
    seed: int,
    epochs: int | None,
    json_path: Path | None,
    out: Path | None,
    data_dir: Path | None,
) -> None:
    """``simulate --layout vertical``: encrypted vertical LR against centralized and guest-only."""
    if dataset not in VERTICAL_DATASET_NAMES:
        raise fail(
            f"dataset must be one of {', '.join(VERTICAL_DATASET_NAMES)}; got {dataset!r}", code=2
        )
    if model != "lr":
        raise fail(f"model must be lr for a vertical run; got {model!r}", code=2)
    # The arguments are sound: now load the protocol, TenSEAL and Flower.
    from fedrisk.errors import FedRiskError
    from fedrisk.ml.vertical import VerticalParams
    from server.coordinator.runs import RunFailedError
    from simulations.vertical import simulate_vertical

    params = VerticalParams(seed=seed, **({"epochs": epochs} if epochs else {}))
    try:
        doc = simulate_vertical(
            dataset, seed=seed, params=params, data_dir=data_dir, registry_out=out
        )
    except (FedRiskError, RunFailedError) as e:
        raise fail(str(e)) from e
    table = Table(title=f"{dataset}: vertical LR under CKKS, parties {doc['parties']}")
    table.add_column("model")
    table.add_column("AUC", justify="right")
    for key in ("federated", "plaintext_protocol", "centralized", "guest_only"):
        table.add_row(key, f"{doc[key]['auc']:.4f}")
    console.print(table)
    console.print(
        f"{doc['epochs']} epochs (best {doc['federated']['best_epoch']}), "
        f"{doc['seconds_per_epoch']:.2f} s per epoch, overlap {doc['overlap']}"
    )
    if json_path is not None:
        json_path.write_text(json.dumps(doc, indent=2), encoding="utf-8")


def simulation_json(
    spec: SimulationSpec,
    encrypted: FederationOutcome,
    plain: FederationOutcome | None,
    comparison: Comparison,
) -> dict[str, Any]:
    """The ``--json`` document of ``simulate``."""
    return {
        "dataset": spec.dataset,
        "partition": spec.partition,
        "parties": spec.parties,
        "rounds": spec.rounds,
        "model": spec.model,
        "he": True,
        "federated": comparison.federated,
        "plaintext_federated": comparison.plaintext,
        "centralized": comparison.centralized,
        **({"reference": comparison.reference} if comparison.reference is not None else {}),
        "local": comparison.local,
        "bytes_up_per_party_round": encrypted.bytes_up_per_party_round,
        "seconds_per_round": encrypted.seconds_per_round,
        "plaintext_bytes_up_per_party_round": plain.bytes_up_per_party_round if plain else None,
        "plaintext_seconds_per_round": plain.seconds_per_round if plain else None,
        "model_id": encrypted.artifact.model_id,
        "history": encrypted.history,
        **({"dp": dp_json(encrypted.artifact.privacy)} if encrypted.artifact.privacy else {}),
    }


def dp_json(privacy: PrivacyRecord) -> dict[str, Any]:
    """The ``dp`` block of the ``--json`` document: the release's accountant ε at δ, the noise
    multiplier, and each party's ε, as the signed artifact records them."""
    return privacy.model_dump(mode="json")


def demo(data_dir: DataDirOption = None) -> None:
    """The end-to-end demo run by ``make demo``."""
    from fedrisk.errors import FedRiskError
    from fedrisk.ml.training import configure_torch
    from server.coordinator.runs import RunFailedError
    from simulations.demo import run_demo

    configure_torch(threads=1)
    # The dashboard stays up until Ctrl-C only for a person at a terminal: a script or a CI job
    # running `make demo` must see it end.
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    try:
        run_demo(console=console, data_dir=data_dir, serve_dashboard=interactive)
    except (FedRiskError, RunFailedError) as e:
        raise fail(str(e)) from e
