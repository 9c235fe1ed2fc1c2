"""Coordinator commands: ``fedrisk provision``, ``fedrisk run`` and ``fedrisk server ...``.

The ``fedrisk`` dispatcher (:mod:`simulations.cli`) mounts ``provision``, ``run`` and
``server_app``; ``register`` mounts them on another typer app. Options are checked (paths exist,
ports in range, model kind and stage from their closed sets) before a run is prepared or a
process started.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import click
import typer

from fedrisk.decisions.stages import STAGES, Stage
from fedrisk.errors import FedRiskError
from fedrisk.federation.processes import follow_in_foreground
from fedrisk.federation.run_config import MIN_SECURE_PARTIES
from fedrisk.ml.kinds import MODEL_KINDS, ModelKind
from secure_agg.errors import SecureAggError
from server.coordinator.provisioning import (
    DEFAULT_HOSTS,
    install_public_context,
    provision_workspace,
)
from server.coordinator.superlink import (
    CONNECTION_NAME,
    DEFAULT_READY_TIMEOUT,
    INSECURE_WARNING,
    SuperLinkError,
    SuperLinkProcess,
    list_supernodes,
    register_supernodes,
    running_superlink,
    start_superlink,
)

server_app = typer.Typer(
    help="Run the coordinator's Flower SuperLink (TLS + SuperNode authentication).",
    no_args_is_help=True,
)

POSITIVE_SECONDS = click.FloatRange(min=0.0, min_open=True)

WorkspaceOption = Annotated[
    Path,
    typer.Option(
        "--workspace",
        "-w",
        exists=True,
        file_okay=False,
        help="The coordinator's provisioned workspace.",
    ),
]


def _describe(handle: SuperLinkProcess) -> None:
    scheme = "http" if handle.insecure else "https"
    typer.echo(
        f"SuperLink running: pid {handle.pid}, coordinator-only {scheme}://{handle.address} "
        f"(flwr connection {CONNECTION_NAME!r}, log {handle.log_path})"
    )
    if handle.proxy is None:
        typer.secho(
            "No Fleet-API proxy is running: the SuperLink's port also accepts runs.",
            fg=typer.colors.RED,
            err=True,
        )
        return
    typer.echo(
        f"Fleet-API proxy: pid {handle.proxy.pid}, parties connect to "
        f"{handle.proxy.host}:{handle.proxy.port} "
        f"(`fedrisk party start --superlink HOST:{handle.proxy.port}`"
        f" with a HOST in the certificate; log {handle.proxy.error_log})"
    )


def _fail(error: Exception) -> typer.Exit:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def provision(
    workspace: Annotated[
        Path,
        typer.Option(
            "--workspace", "-w", file_okay=False, help="The coordinator's workspace to create."
        ),
    ],
    request: Annotated[
        list[Path],
        typer.Option(
            "--request",
            "-r",
            exists=True,
            dir_okay=False,
            help="A party's request.json from `fedrisk party init` (repeat for each party).",
        ),
    ],
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="Extra DNS name or IP the SuperLink certificate must cover (repeatable); "
            f"{' and '.join(DEFAULT_HOSTS)} are always included.",
        ),
    ] = None,
    lead: Annotated[
        str | None,
        typer.Option(
            "--lead", help="Party that runs the CKKS key ceremony (default: the first request)."
        ),
    ] = None,
    bundles_dir: Annotated[
        Path | None,
        typer.Option(
            "--bundles-dir",
            help="Where the parties' public bundles go (default: WORKSPACE-bundles, outside).",
        ),
    ] = None,
    schema: Annotated[
        Path | None,
        typer.Option(
            "--schema",
            exists=True,
            dir_okay=False,
            help="Dataset schema TOML to ship in every bundle.",
        ),
    ] = None,
    validity_days: Annotated[
        int, typer.Option("--validity-days", min=1, help="SuperLink certificate lifetime.")
    ] = 365,
) -> None:
    """Create the federation CA, the SuperLink certificate and the manifest from party requests."""
    from fedrisk.federation.enrollment import manifest_fingerprints

    try:
        result = provision_workspace(
            workspace,
            requests=request,
            hosts=host or [],
            lead=lead,
            bundles_dir=bundles_dir,
            schema_file=schema,
            validity_days=validity_days,
        )
    except FedRiskError as e:
        raise _fail(e) from e
    ws = result.workspace
    if not result.created:
        typer.echo(f"Workspace {ws.root} is already provisioned identically; nothing was written.")
        return
    typer.echo(f"Provisioned federation {result.manifest.federation!r} in {ws.root}")
    typer.echo(f"  manifest (public keys):  {ws.manifest}")
    typer.echo(f"  CA certificate:          {ws.ca_certificate}")
    typer.echo(f"  SuperLink certificate:   {ws.superlink_certificate}")
    typer.echo(f"  certificate hosts:       {', '.join(result.manifest.superlink_hosts)}")
    typer.echo(f"  lead party (key ceremony): {result.manifest.lead}")
    typer.echo(f"  CA fingerprint (sha256): {result.manifest.ca_certificate_sha256}")
    typer.echo("Party fingerprints (each party compares them out of band at `party join`):")
    for name, fingerprint in manifest_fingerprints(result.manifest).items():
        typer.echo(f"  {name}: {fingerprint}")
    typer.echo("Party bundles (public files only; send each to its party):")
    for name, path in result.bundles.items():
        typer.echo(f"  {name}: {path}")


@server_app.command("start")
def start(
    workspace: WorkspaceOption,
    host: Annotated[
        str,
        typer.Option("--host", help="The parties' bind address: the Fleet-API proxy listens here."),
    ] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="The parties' HTTPS port (Fleet API only)."),
    ] = None,
    control_port: Annotated[
        int | None,
        typer.Option(
            "--control-port",
            min=1,
            max=65535,
            help="The SuperLink's own port on 127.0.0.1 (Control and Runtime APIs: "
            "this machine only); a free one by default.",
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="Plaintext, no SuperNode auth. Local experiments only."),
    ] = False,
    detach: Annotated[
        bool, typer.Option("--detach", help="Leave the SuperLink running and return.")
    ] = False,
    ready_timeout: Annotated[
        float,
        typer.Option(
            "--ready-timeout",
            click_type=POSITIVE_SECONDS,
            help="Seconds to wait for the SuperLink.",
        ),
    ] = DEFAULT_READY_TIMEOUT,
) -> None:
    """Start flower-superlink with TLS and node auth, and register every party's auth key.

    The SuperLink listens on 127.0.0.1 only; an nginx proxy on --host/--port forwards the Fleet
    API (all SuperNodes need) and refuses the rest, so only this machine can submit runs.
    """
    if insecure:
        typer.secho(INSECURE_WARNING, fg=typer.colors.RED, bold=True, err=True)
    existing = running_superlink(workspace)
    if existing is not None:
        raise _fail(
            SuperLinkError(
                f"workspace {workspace} already has a running SuperLink (pid {existing.pid}, "
                f"{existing.address}); stop it first with `fedrisk server stop`"
            )
        )
    try:
        handle = start_superlink(
            workspace,
            host=host,
            port=port,
            insecure=insecure,
            ready_timeout=ready_timeout,
            fleet_proxy=True,
            control_port=control_port,
        )
    except FedRiskError as e:
        raise _fail(e) from e
    try:
        if insecure:
            typer.secho("SuperNode authentication is off: no keys registered.", fg=typer.colors.RED)
        else:
            for name, node_id in register_supernodes(workspace).items():
                state = f"node {node_id}" if node_id else "already registered"
                typer.echo(f"  registered {name}: {state}")
    except FedRiskError as e:
        handle.stop()
        raise _fail(e) from e
    _describe(handle)
    if detach:
        return

    code = follow_in_foreground(handle, wait=handle.wait)
    if code is None:
        typer.echo("Stopped the SuperLink and its Fleet-API proxy.")
        return
    typer.secho(
        f"The SuperLink or its Fleet-API proxy exited with code {code}; stopped both "
        f"(logs: {handle.log_path}, {handle.proxy.error_log if handle.proxy else '-'})",
        err=True,
    )
    raise typer.Exit(code or 1)


@server_app.command("certify-party")
def certify_party_command(
    workspace: WorkspaceOption,
    request: Annotated[
        Path,
        typer.Option(
            "--request",
            exists=True,
            dir_okay=False,
            help="The party's tls-request.json (`fedrisk party tls-request`).",
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", dir_okay=False, help="Where to write the party's certificate.")
    ],
    validity_days: Annotated[int, typer.Option("--validity-days", min=1)] = 365,
) -> None:
    """Sign a party's mutual-TLS certificate (its `party serve` and the lender's calls) with the
    federation CA; the party's request must be signed with its provisioned key."""
    from fedrisk.federation.enrollment import TlsRequest
    from fedrisk.files import write_atomic
    from server.coordinator.provisioning import certify_party

    try:
        parsed = TlsRequest.model_validate_json(request.read_text(encoding="utf-8"))
        pem = certify_party(workspace, parsed, validity_days=validity_days)
    except (FedRiskError, ValueError) as e:
        raise _fail(e) from e
    write_atomic(out, pem)
    typer.echo(f"Certificate for {parsed.party} written to {out}: hand it to {parsed.party} only.")


@server_app.command("stop")
def stop(workspace: WorkspaceOption) -> None:
    """Stop the workspace's SuperLink and its Fleet-API proxy (by the pids recorded at start)."""
    handle = running_superlink(workspace)
    if handle is None:
        typer.echo("No SuperLink is running for this workspace.")
        return
    try:
        handle.stop()
    except FedRiskError as e:
        raise _fail(e) from e
    proxy = f" and its Fleet-API proxy pid {handle.proxy.pid}" if handle.proxy else ""
    typer.echo(f"Stopped SuperLink pid {handle.pid}{proxy}.")


@server_app.command("status")
def status(workspace: WorkspaceOption) -> None:
    """Show the SuperLink's address and the SuperNodes it knows."""
    handle = running_superlink(workspace)
    if handle is None:
        typer.echo("No SuperLink is running for this workspace.")
        raise typer.Exit(1)
    _describe(handle)
    try:
        for node in list_supernodes(workspace):
            typer.echo(f"  node {node.get('node-id')}: {node.get('status')}")
    except FedRiskError as e:
        raise _fail(e) from e


@server_app.command("install-public-context")
def install_public(
    workspace: WorkspaceOption,
    context: Annotated[
        Path,
        typer.Option(
            "--context",
            exists=True,
            dir_okay=False,
            help="coordinator/ckks.public.ctx from the lead.",
        ),
    ],
    signature: Annotated[
        Path | None,
        typer.Option(
            "--signature",
            exists=True,
            dir_okay=False,
            help="Its .sig.json (default: beside it).",
        ),
    ] = None,
) -> None:
    """Install the lead's signed CKKS public context; refuses anything holding a secret key."""
    try:
        path = install_public_context(workspace, context_file=context, signature_file=signature)
    except (FedRiskError, SecureAggError) as e:
        raise _fail(e) from e
    typer.echo(f"Installed the CKKS public context at {path}")


def _vertical_keys(
    guest: str | None,
    parties: str | None,
    id_column: str | None,
    id_kind: str,
    *,
    batch_size: int | None,
    learning_rate: float | None,
) -> dict[str, str | int | float] | None:
    """A vertical run's run-config keys from ``fedrisk run``'s options (None: horizontal)."""
    given = [v is not None for v in (guest, parties, id_column)]
    tuning: dict[str, str | int | float] = {
        key: value
        for key, value in (("batch-size", batch_size), ("learning-rate", learning_rate))
        if value is not None
    }
    if not any(given):
        if tuning:
            raise typer.BadParameter("--batch-size and --learning-rate are for vertical runs")
        return None
    if not all(given):
        raise typer.BadParameter(
            "a vertical run needs --vertical-guest, --vertical-parties and --vertical-id-column"
        )
    return {
        "vertical-guest": str(guest),
        "vertical-parties": str(parties),
        "vertical-id-column": str(id_column),
        "vertical-id-kind": id_kind,
        **tuning,
    }


def run(
    workspace: WorkspaceOption,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Federated rounds.")] = 3,
    model: Annotated[
        ModelKind,
        typer.Option("--model", click_type=click.Choice(MODEL_KINDS), help="Model kind."),
    ] = "lr",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the last unfinished run from its checkpoint.")
    ] = False,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="Seed of the initial model and shuffles.")
    ] = 0,
    release_party: Annotated[
        str | None, typer.Option("--release-party", help="Party that releases (default: lead).")
    ] = None,
    stage: Annotated[
        Stage,
        typer.Option("--stage", click_type=click.Choice(STAGES), help="Lifecycle stage."),
    ] = "application",
    min_parties: Annotated[
        int, typer.Option("--min-parties", min=MIN_SECURE_PARTIES, help="Quorum per round.")
    ] = MIN_SECURE_PARTIES,
    round_timeout: Annotated[
        float,
        typer.Option(
            "--round-timeout",
            click_type=POSITIVE_SECONDS,
            help="Seconds to wait for parties per phase.",
        ),
    ] = 300.0,
    dp_epsilon: Annotated[
        float | None,
        typer.Option("--dp-epsilon", min=0.0, help="Differential privacy budget (turns DP on)."),
    ] = None,
    dp_delta: Annotated[float, typer.Option("--dp-delta", min=0.0, help="DP delta.")] = 1e-5,
    dp_mode: Annotated[
        str,
        typer.Option(
            "--dp-mode",
            click_type=click.Choice(("sample", "client")),
            help="DP-SGD per row at each party, or clipped updates with shared noise.",
        ),
    ] = "sample",
    dp_clip_norm: Annotated[
        float, typer.Option("--dp-clip-norm", min=0.0, help="DP clipping norm.")
    ] = 1.0,
    trees: Annotated[
        int | None, typer.Option("--trees", min=1, help="gbdt: tree budget (default 300).")
    ] = None,
    tree_depth: Annotated[
        int | None, typer.Option("--tree-depth", min=1, help="gbdt: tree depth (default 5).")
    ] = None,
    tree_bins: Annotated[
        int | None, typer.Option("--tree-bins", min=2, help="gbdt: bins per feature (255).")
    ] = None,
    vertical_guest: Annotated[
        str | None,
        typer.Option(
            "--vertical-guest",
            help="A vertical run (PSI alignment, then encrypted vertical LR; --rounds are "
            "epochs): the label holder, as the parties' pin names it.",
        ),
    ] = None,
    vertical_parties: Annotated[
        str | None,
        typer.Option("--vertical-parties", help="Vertical: every party, guest first, as pinned."),
    ] = None,
    vertical_id_column: Annotated[
        str | None,
        typer.Option("--vertical-id-column", help="Vertical: the identifier column, as pinned."),
    ] = None,
    vertical_id_kind: Annotated[
        str,
        typer.Option(
            "--vertical-id-kind",
            click_type=click.Choice(("phone", "national-id", "opaque")),
            help="Vertical: identifier normalisation, as pinned.",
        ),
    ] = "opaque",
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Vertical: mini-batch rows (256).")
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option("--learning-rate", min=0.0, help="Vertical: learning rate.")
    ] = None,
) -> None:
    """Submit the encrypted federated run and follow it live; non-zero exit if it fails.

    A ``gbdt`` run's rounds are its trees: ``--rounds`` is not used, ``--trees`` bounds them.
    With ``--vertical-guest`` the run is vertical: the parties align their customers by private
    set intersection (this coordinator learns only set sizes), then train LR under each party's
    own CKKS key, and each party writes its own signed part of the model.
    """
    from rich.console import Console

    from server.coordinator.deployed_runs import execute_run, prepare_run, resumable_run
    from server.coordinator.runs import RunFailedError

    console = Console()
    try:
        deployed = (
            resumable_run(workspace)
            if resume
            else prepare_run(
                workspace,
                rounds=rounds,
                model=model,
                seed=seed,
                release_party=release_party,
                min_parties=min_parties,
                round_timeout=round_timeout,
                stage=stage,
                privacy=(
                    None
                    if dp_epsilon is None
                    else {
                        "dp-mode": dp_mode,
                        "dp-epsilon": dp_epsilon,
                        "dp-delta": dp_delta,
                        "dp-clip-norm": dp_clip_norm,
                    }
                ),
                trees={
                    key: value
                    for key, value in (
                        ("trees", trees),
                        ("tree-depth", tree_depth),
                        ("tree-bins", tree_bins),
                    )
                    if value is not None
                },
                vertical=_vertical_keys(
                    vertical_guest,
                    vertical_parties,
                    vertical_id_column,
                    vertical_id_kind,
                    batch_size=batch_size,
                    learning_rate=learning_rate,
                ),
            )
        )
    except (FedRiskError, SecureAggError) as e:
        raise _fail(e) from e
    console.print(f"run {deployed.run_config['run-id']} -> {deployed.run_dir}")

    def show(event: dict[str, object]) -> None:
        kind = event.get("event")
        if kind == "round":
            console.print(
                f"round {event['round']}/{deployed.run_config['rounds']}: "
                f"{len(event['train_parties'])} parties answering "  # type: ignore[arg-type]
                f"AUC {float(event['auc']):.4f} KS {float(event['ks']):.4f} "  # type: ignore[arg-type]
                f"({float(event['seconds']):.1f}s)"  # type: ignore[arg-type]
                + (f" dropped: {event['dropped']}" if event.get("dropped") else "")
            )
        elif kind in (
            "waiting",
            "stats",
            "resumed",
            "refused",
            "party-error",
            "resent",
            "released",
            "aligned",
            "epoch",
        ):
            details = {k: v for k, v in event.items() if k not in ("event", "time")}
            console.print(f"{kind}: {details}")
        elif kind == "failed":
            console.print(f"[red]failed:[/] {event.get('reason')}")

    try:
        outcome = execute_run(workspace, deployed, on_event=show)
    except (RunFailedError, FedRiskError) as e:
        raise _fail(e) from e
    released = [e for e in outcome.events if e.get("event") == "released"]
    if released:
        console.print(
            f"[green]run completed[/] in {outcome.seconds:.0f}s; "
            f"model {released[-1]['model_id']} released at {released[-1]['party']}"
        )
        return
    # A vertical run: every party wrote its own signed part, in its own folder.
    parts = json.loads(deployed.results.read_text(encoding="utf-8")).get("released", {})
    console.print(
        f"[green]run completed[/] in {outcome.seconds:.0f}s; vertical model "
        f"{deployed.run_config['run-id']}: each party holds its own part ({', '.join(parts)})"
    )


def register(cli: typer.Typer) -> None:
    """Mount ``provision``, ``run`` and the ``server`` group on another typer app (the tests')."""
    cli.command("provision")(provision)
    cli.command("run")(run)
    cli.add_typer(server_app, name="server")
