"""The ``fedrisk`` command line: one entry point for parties, coordinators and lenders.

It sits at the top of the dependency graph, so it may import every package; each command's
real work lives in the package that owns it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from fedrisk.data.datasets import DATASET_NAMES, load_dataset
from fedrisk.errors import FedRiskError
from fedrisk.ml.training import configure_torch, default_config, train_centralized
from server.coordinator.runs import RunFailedError
from simulations.runner import (
    Comparison,
    FederationOutcome,
    SimulationSpec,
    compare,
    prepare_data,
    run_federation,
)

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

app = typer.Typer(
    name="fedrisk",
    help="Federated, CKKS-encrypted credit-risk modelling and lifecycle scoring.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _split(frame: Any, target: str, *, seed: int, test_fraction: float = 0.2) -> tuple[Any, Any]:
    """Stratified split of a pooled frame into train and test."""
    from sklearn.model_selection import train_test_split  # only the CLI's baseline split needs it

    train, test = train_test_split(
        frame, test_size=test_fraction, stratify=frame[target], random_state=seed
    )
    return train.reset_index(drop=True), test.reset_index(drop=True)


def run_central(dataset: str, model: str, *, seed: int, data_dir: Path | None) -> dict[str, Any]:
    """Train and score a centralized baseline; the numbers ``train-central`` prints."""
    ds = load_dataset(dataset, data_dir=data_dir, rng=np.random.default_rng(seed))
    target = ds.schema.target_column
    if target is None:
        raise FedRiskError(f"dataset {dataset} has no target column; it cannot be trained on")
    if ds.test_frame is not None:
        train, test = ds.frame, ds.test_frame
    else:
        train, test = _split(ds.frame, target, seed=seed)
    result = train_centralized(
        train,
        test,
        ds.schema,
        model_kind=model,  # type: ignore[arg-type]
        config=default_config(model),  # type: ignore[arg-type]
        rng=np.random.default_rng(seed),
    )
    return {
        "dataset": dataset,
        "model": model,
        "auc": result.auc,
        "ks": result.ks,
        "gini": result.gini,
        "n_train": result.n_train,
        "n_test": result.n_test,
    }


@app.command("train-central")
def train_central_cmd(
    dataset: Annotated[str, typer.Option(help=f"One of: {', '.join(DATASET_NAMES)}")],
    model: Annotated[str, typer.Option(help="lr or mlp")] = "lr",
    seed: Annotated[int, typer.Option(help="Seed for the split and training")] = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the result here")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data folder (default: $FEDRISK_DATA_DIR)")
    ] = None,
) -> None:
    """Train a centralized baseline on pooled data and print AUC, KS and Gini."""
    configure_torch(threads=1)
    if model not in ("lr", "mlp"):
        _fail(f"--model must be lr or mlp; got {model!r}")
    try:
        row = run_central(dataset, model, seed=seed, data_dir=data_dir)
    except FedRiskError as e:
        _fail(str(e))
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
    console.print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(row, indent=2), encoding="utf-8")


def _progress_printer(label: str) -> Any:
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
    table.add_row("centralized pooled", f"{cen['auc']:.4f}", f"{cen['ks']:.4f}", "all")
    for row in comparison.local:
        table.add_row(
            f"local only: {row['party']}",
            f"{row['auc']:.4f}",
            f"{row['ks']:.4f}",
            str(row["n_train"]),
        )
    return table


@app.command("simulate")
def simulate_cmd(
    dataset: Annotated[str, typer.Option(help=f"One of: {', '.join(DATASET_NAMES)}")] = "synthetic",
    parties: Annotated[int, typer.Option(help="Number of parties (≥3 unless overridden)")] = 3,
    partition: Annotated[
        str, typer.Option(help="iid | dirichlet:ALPHA | by:COLUMN | quantity")
    ] = "iid",
    model: Annotated[str, typer.Option(help="lr or mlp")] = "lr",
    rounds: Annotated[int, typer.Option(help="Federated rounds")] = 5,
    plaintext: Annotated[
        bool, typer.Option("--plaintext", help="Also run the INSECURE plaintext federation")
    ] = False,
    seed: Annotated[int, typer.Option()] = 0,
    local_epochs: Annotated[int, typer.Option(help="Local epochs per round")] = 1,
    allow_fewer_parties: Annotated[
        bool, typer.Option("--allow-fewer-parties", help="Allow 2 parties (see security notes)")
    ] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Registry folder receiving the signed artifact")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder")] = None,
) -> None:
    """Run an encrypted federation in Flower's simulation engine and compare it with baselines."""
    configure_torch(threads=1)
    if parties < 3 and not allow_fewer_parties:
        _fail(
            f"--parties must be at least 3; got {parties}. With 2 parties each can subtract its "
            "own update from the aggregate and recover the other's. Pass --allow-fewer-parties "
            "to accept that."
        )
    spec = SimulationSpec(
        dataset=dataset,
        parties=parties,
        partition=partition,
        model=model,
        rounds=rounds,
        seed=seed,
        local_epochs=local_epochs,
        allow_fewer_parties=allow_fewer_parties,
    )
    try:
        data = prepare_data(spec, data_dir=data_dir)
        with tempfile.TemporaryDirectory(prefix="fedrisk-registry-") as scratch:
            registry = out if out is not None else Path(scratch)
            encrypted = run_federation(
                spec, data, release_dir=registry, on_event=_progress_printer("encrypted")
            )
            plain: FederationOutcome | None = None
            if plaintext:
                with tempfile.TemporaryDirectory(prefix="fedrisk-plain-") as plain_dir:
                    plain = run_federation(
                        spec,
                        data,
                        release_dir=Path(plain_dir),
                        plaintext=True,
                        on_event=_progress_printer("plaintext"),
                    )
            comparison = compare(spec, data, federated=encrypted, plaintext=plain)
    except (FedRiskError, RunFailedError) as e:
        _fail(str(e))
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
        "local": comparison.local,
        "bytes_up_per_party_round": encrypted.bytes_up_per_party_round,
        "seconds_per_round": encrypted.seconds_per_round,
        "plaintext_bytes_up_per_party_round": plain.bytes_up_per_party_round if plain else None,
        "plaintext_seconds_per_round": plain.seconds_per_round if plain else None,
        "model_id": encrypted.artifact.model_id,
        "history": encrypted.history,
    }


@app.command("demo")
def demo_cmd(
    data_dir: Annotated[Path | None, typer.Option(help="Data folder")] = None,
) -> None:
    """The end-to-end demo run by ``make demo``."""
    configure_torch(threads=1)
    from simulations.demo import run_demo

    try:
        run_demo(console=console, data_dir=data_dir)
    except (FedRiskError, RunFailedError) as e:
        _fail(str(e))


def _mount_role_commands() -> None:
    """Coordinator and party commands live with their packages; they are mounted here."""
    from clients import cli as party_commands
    from server.coordinator import cli as coordinator_commands
    from server.scoring import cli as lender_commands
    from simulations import report_commands

    coordinator_commands.register(app)
    party_commands.register(app)
    app.add_typer(report_commands.app)
    app.command("serve")(lender_commands.serve)
    app.add_typer(lender_commands.audit_app, name="audit")
    app.add_typer(lender_commands.models_app, name="models")


_mount_role_commands()


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
