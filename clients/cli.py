"""Party commands: ``fedrisk keys init|accept`` (CKKS key ceremony), ``fedrisk party
init|join|start|stop`` and ``fedrisk party pin sign|accept|show`` (the app pin's amendments).

The ``fedrisk`` dispatcher (:mod:`simulations.cli`) mounts ``keys_app`` and ``party_app``;
``register`` mounts both on another typer app. Options are checked (paths exist, ports in range,
``--superlink`` is ``HOST:PORT``) before TenSEAL or the SuperNode code is imported: those imports
sit inside the commands.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer

from clients.bundle import PartyBundle, load_bundle
from fedrisk.errors import FedRiskError
from fedrisk.federation.roster import COORDINATOR_DIR, load_manifest
from secure_agg.errors import SecureAggError
from secure_agg.params import SUPPORTED_POLY_MODULUS_DEGREES, HEParams

if TYPE_CHECKING:
    from fedrisk.federation.pin import AppPin, SignedPin, VerticalRoster

keys_app = typer.Typer(help="CKKS key ceremony between the parties.", no_args_is_help=True)
party_app = typer.Typer(
    help="This party's own keys, its federation bundle and its Flower SuperNode.",
    no_args_is_help=True,
)
pin_app = typer.Typer(
    help="The federation's app pin: which Flower app and run configs this party runs.",
    no_args_is_help=True,
)
party_app.add_typer(pin_app, name="pin")

BundleOption = Annotated[
    Path,
    typer.Option(
        "--bundle",
        "-b",
        exists=True,
        file_okay=False,
        help="This party's bundle from the coordinator.",
    ),
]


CoordinatorWorkspaceOption = Annotated[
    str | None,
    typer.Option(
        "--coordinator-workspace",
        help="The coordinator's workspace path on its machine: runs may then point "
        "public-context and server-dir there only (else both must stay empty).",
    ),
]
AllowPlaintextOption = Annotated[
    bool,
    typer.Option("--allow-plaintext", help="Let runs turn encryption off (cost comparisons only)."),
]
RequireSelfMasksOption = Annotated[
    bool,
    typer.Option(
        "--require-self-masks",
        help="Every run must add SecAgg self masks (mask-self = true), so a coordinator that "
        "falsely declares a live party dropped cannot unmask it; costs one exchange per "
        "masked exchange.",
    ),
]
VerticalGuestOption = Annotated[
    str | None,
    typer.Option(
        "--vertical-guest",
        help="Pin a vertical federation: the label holder (with --vertical-hosts and "
        "--vertical-id-column); runs are then vertical LR among exactly these parties.",
    ),
]
VerticalHostsOption = Annotated[
    str | None,
    typer.Option("--vertical-hosts", help="Vertical pin: the feature holders, comma-separated."),
]
VerticalIdColumnOption = Annotated[
    str | None,
    typer.Option("--vertical-id-column", help="Vertical pin: the identifier column to align on."),
]
VerticalIdKindOption = Annotated[
    str,
    typer.Option(
        "--vertical-id-kind",
        click_type=click.Choice(("phone", "national-id", "opaque")),
        help="Vertical pin: how identifiers are normalised.",
    ),
]


def vertical_roster(
    guest: str | None, hosts: str | None, id_column: str | None, id_kind: str
) -> VerticalRoster | None:
    """The roster a vertical pin fixes, from the three options (all or none)."""
    from fedrisk.federation.pin import VerticalRoster

    given = [v is not None for v in (guest, hosts, id_column)]
    if not any(given):
        return None
    if not all(given):
        raise typer.BadParameter(
            "a vertical pin needs --vertical-guest, --vertical-hosts and --vertical-id-column "
            f"together; got guest={guest!r}, hosts={hosts!r}, id column={id_column!r}"
        )
    return VerticalRoster.model_validate(
        {
            "guest": guest,
            "hosts": tuple(h.strip() for h in str(hosts).split(",") if h.strip()),
            "id_column": id_column,
            "id_kind": id_kind,
        }
    )


AppOption = Annotated[
    Path | None,
    typer.Option(
        "--app",
        exists=True,
        file_okay=False,
        help="The Flower app to pin (default: the one `fedrisk run` submits).",
    ),
]


def superlink_address(value: str) -> str:
    """Option callback: ``--superlink`` must be ``HOST:PORT``, the port in 1-65535."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise typer.BadParameter(f"must be HOST:PORT with a port in 1-65535; got {value!r}")
    return value


def _fail(error: Exception) -> typer.Exit:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@keys_app.command("init")
def keys_init(
    bundle: BundleOption,
    out: Annotated[Path, typer.Option("--out", help="New directory for the hand-outs.")],
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            exists=True,
            dir_okay=False,
            help="Federation manifest (default: the bundle's copy).",
        ),
    ] = None,
    poly_modulus_degree: Annotated[
        int,
        typer.Option(
            "--poly-modulus-degree", click_type=click.Choice(SUPPORTED_POLY_MODULUS_DEGREES)
        ),
    ] = 8192,
    coordinator_workspace: CoordinatorWorkspaceOption = None,
    allow_plaintext: AllowPlaintextOption = False,
    require_self_masks: RequireSelfMasksOption = False,
    app: AppOption = None,
) -> None:
    """Lead party: create the CKKS context, seal it to every other party, export the public part,
    and sign the app pin (which app and run configs every party will run)."""
    from fedrisk.federation.pin import PIN_FILE
    from secure_agg.ceremony import run_key_ceremony  # TenSEAL, once the options are checked

    try:
        party = load_bundle(bundle)
        roster = load_manifest(manifest) if manifest else party.manifest
        if roster != party.manifest:
            raise FedRiskError(
                f"manifest {manifest} must be the one provisioned in the bundle; got another"
            )
        result = run_key_ceremony(
            roster,
            lead=party.name,
            signing_key=party.signing_key(),
            own_ckks_dir=party.layout.ckks_dir,
            out_dir=out,
            params=HEParams(poly_modulus_degree=poly_modulus_degree),
        )
        _, signed = _sign_pin(
            party,
            out,
            app=app,
            allow_plaintext=allow_plaintext,
            require_self_masks=require_self_masks,
            coordinator_workspace=coordinator_workspace,
        )
    except (FedRiskError, SecureAggError, ValueError) as e:
        raise _fail(e) from e
    typer.echo(f"CKKS context created (public fingerprint {result.public_context_sha256[:16]}).")
    typer.echo(f"  your secret context: {result.own_secret_context}")
    for name, path in result.sealed.items():
        typer.echo(f"  for {name}: {path}  (sealed to {name}, signed by you)")
    typer.echo(
        f"  for the coordinator: {result.public_context} (+ {result.public_signature.name}); "
        f"hand over only the {COORDINATOR_DIR}/ directory"
    )
    typer.echo(
        f"  for every party: {out / PIN_FILE} (app {signed.pin.app}, FAB "
        f"{signed.pin.fab_sha256[:16]}, plaintext {'allowed' if allow_plaintext else 'forbidden'})"
    )


@keys_app.command("accept")
def keys_accept(
    bundle: BundleOption,
    sealed: Annotated[
        Path,
        typer.Option(
            "--sealed", exists=True, dir_okay=False, help="The <party>.sealed file from the lead."
        ),
    ],
    pin: Annotated[
        Path | None,
        typer.Option(
            "--pin",
            exists=True,
            dir_okay=False,
            help="The lead's signed app pin (default: pin.json beside --sealed).",
        ),
    ] = None,
) -> None:
    """Receiving party: verify the lead's signatures, install the CKKS secret context and the
    app pin."""
    from clients.pinning import install_pin, load_pin_file
    from fedrisk.federation.pin import PIN_FILE, verify_pin
    from secure_agg.ceremony import accept_sealed_context  # TenSEAL, once the options are checked

    try:
        party = load_bundle(bundle)
        signed = load_pin_file(pin or sealed.parent / PIN_FILE)
        verify_pin(signed, party.manifest)  # before anything is installed
        data = sealed.read_bytes()
        accepted = accept_sealed_context(
            data,
            manifest=party.manifest,
            recipient=party.name,
            receiving_key=party.receiving_key(),
            own_ckks_dir=party.layout.ckks_dir,
        )
        pinned = install_pin(party, signed)
    except OSError as e:
        raise _fail(FedRiskError(f"sealed file {sealed} must be readable; got {e}")) from e
    except (FedRiskError, SecureAggError) as e:
        raise _fail(e) from e
    typer.echo(
        f"Accepted the CKKS secret context from {accepted.sender} (public fingerprint "
        f"{accepted.public_context_sha256[:16]}), installed at {accepted.secret_context}"
    )
    typer.echo(
        f"Installed the app pin signed by {pinned.issued_by}: {pinned.app}, FAB "
        f"{pinned.fab_sha256[:16]}, fedrisk {pinned.fedrisk_version}"
    )


@party_app.command("init")
def party_init(
    name: Annotated[str, typer.Option("--name", help="This party's name (a-z0-9_-).")],
    out: Annotated[
        Path, typer.Option("--out", file_okay=False, help="New folder for this party's keys.")
    ],
) -> None:
    """Create this party's own key pairs here and write the public request for the coordinator."""
    from clients.enrollment import init_party, request_path
    from fedrisk.federation.enrollment import party_fingerprint

    try:
        request = init_party(name, out)
    except FedRiskError as e:
        raise _fail(e) from e
    typer.echo(f"Created the keys of {name} in {out.resolve()} (private files mode 0600).")
    typer.echo(f"  your fingerprint: {party_fingerprint(request.verify())}")
    typer.echo(
        f"Send only {request_path(out)} to the coordinator; the private keys never leave this "
        "folder."
    )


PartyDirOption = Annotated[
    Path,
    typer.Option("--dir", exists=True, file_okay=False, help="This party's folder."),
]


@party_app.command("tls-request")
def party_tls_request(
    party_dir: PartyDirOption,
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="A name the feature service is reached at (repeat)."),
    ] = None,
) -> None:
    """Create this party's mutual-TLS key (it stays here) and the request the coordinator's CA
    signs (`fedrisk server certify-party`); send only tls-request.json."""
    from clients.enrollment import create_tls_request

    try:
        path = create_tls_request(party_dir, hosts=host or ())
    except FedRiskError as e:
        raise _fail(e) from e
    typer.echo(f"Send {path} to the coordinator; your TLS key stays in {party_dir / 'tls'}.")


@party_app.command("tls-install")
def party_tls_install(
    party_dir: PartyDirOption,
    certificate: Annotated[
        Path,
        typer.Option("--certificate", exists=True, dir_okay=False, help="The CA's certificate."),
    ],
) -> None:
    """Check the coordinator's certificate against this party's own TLS key and CA; keep it."""
    from clients.enrollment import install_party_certificate

    try:
        path = install_party_certificate(party_dir, certificate)
    except FedRiskError as e:
        raise _fail(e) from e
    typer.echo(f"Installed {path}: `party serve` uses it with {path.parent / 'party.key'}.")


@party_app.command("serve-config")
def party_serve_config(
    bundle: BundleOption,
    model_id: Annotated[
        str, typer.Option("--model-id", help="The vertical run whose part this host serves.")
    ],
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="The serve.json to write.")],
) -> None:
    """Host of a deployed vertical run: write `party serve`'s settings from this party's own
    folder (its released part, table, pairwise keys, identifier key and TLS certificate)."""
    from clients.serve_settings import write_serve_settings

    try:
        settings = write_serve_settings(load_bundle(bundle), model_id=model_id, out=out)
    except (FedRiskError, ValueError) as e:
        raise _fail(e) from e
    typer.echo(f"Wrote {out} for part {settings.part}: `fedrisk party serve --config {out}`")


@party_app.command("join")
def party_join(
    party_dir: Annotated[
        Path,
        typer.Option(
            "--dir", exists=True, file_okay=False, help="This party's folder from `party init`."
        ),
    ],
    bundle: Annotated[
        Path,
        typer.Option(
            "--bundle",
            "-b",
            exists=True,
            file_okay=False,
            help="The public bundle the coordinator sent for this party.",
        ),
    ],
) -> None:
    """Check the coordinator's bundle against this party's own keys and merge it in."""
    from clients.enrollment import join_federation

    try:
        joined = join_federation(party_dir, bundle)
    except FedRiskError as e:
        raise _fail(e) from e
    party = joined.bundle
    typer.echo(
        f"{party.name} joined federation {party.info.federation!r} (lead {party.manifest.lead}); "
        f"use --bundle {party.layout.root} from now on."
    )
    typer.echo(f"  CA fingerprint (sha256): {joined.ca_certificate_sha256}")
    typer.echo("Compare every fingerprint with its party out of band before the key ceremony:")
    for name, fingerprint in joined.fingerprints.items():
        mark = "  (you: matches your keys)" if name == party.name else ""
        typer.echo(f"  {name}: {fingerprint}{mark}")


@party_app.command("start")
def party_start(
    bundle: BundleOption,
    data: Annotated[
        Path,
        typer.Option(
            "--data", exists=True, dir_okay=False, help="This party's training data file."
        ),
    ],
    superlink: Annotated[
        str, typer.Option("--superlink", callback=superlink_address, help="SuperLink HOST:PORT.")
    ],
    test: Annotated[
        Path | None,
        typer.Option(
            "--test", exists=True, dir_okay=False, help="Held-out test file (default: --data)."
        ),
    ] = None,
    schema: Annotated[
        Path | None,
        typer.Option(
            "--schema", exists=True, dir_okay=False, help="Schema TOML (default: the bundle's)."
        ),
    ] = None,
    release_dir: Annotated[
        Path | None,
        typer.Option("--release-dir", file_okay=False, help="Where released models are written."),
    ] = None,
    runtime_port: Annotated[
        int | None,
        typer.Option("--runtime-port", min=1, max=65535, help="Local SuperNode Runtime API port."),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="No TLS, no node auth. Local experiments only.")
    ] = False,
    detach: Annotated[bool, typer.Option("--detach", help="Leave it running and return.")] = False,
    vertical: Annotated[
        Path | None,
        typer.Option(
            "--vertical",
            exists=True,
            dir_okay=False,
            help="A vertical party's view (JSON: role, id_column, numeric, categorical, label "
            "for the guest): --data is then its own table, checked against this view and the "
            "pinned role instead of the schema.",
        ),
    ] = None,
) -> None:
    """Validate local data against the schema, then run flower-supernode against the SuperLink."""
    from clients.pinning import installed_pin
    from clients.supernode import prepare_party_runtime, running_supernode, start_supernode
    from fedrisk.federation.processes import follow_in_foreground

    if insecure:
        typer.secho(
            "INSECURE: this SuperNode will connect without TLS and without authentication; "
            "updates and identities cross the network in plaintext.",
            fg=typer.colors.RED,
            bold=True,
            err=True,
        )
    try:
        party = load_bundle(bundle)
        installed_pin(party)  # the federation's signed app pin, verified before anything runs
        existing = running_supernode(party.layout.state_dir)
        if existing is not None:
            raise FedRiskError(
                f"party {party.name} already runs a SuperNode (pid {existing.pid}); "
                "stop it first with `fedrisk party stop`"
            )
        runtime = prepare_party_runtime(
            party, train=data, test=test, schema=schema, release_dir=release_dir, vertical=vertical
        )
        handle = start_supernode(
            party, runtime, superlink=superlink, runtime_port=runtime_port, insecure=insecure
        )
    except (FedRiskError, SecureAggError) as e:
        raise _fail(e) from e
    typer.echo(
        f"SuperNode of {party.name} started: pid {handle.pid}, SuperLink {superlink}, "
        f"log {handle.log_path}"
    )
    if detach:
        return

    code = follow_in_foreground(handle)
    if code is None:
        typer.echo("Stopped the SuperNode.")
        return
    with contextlib.suppress(FedRiskError):  # the SuperNode exited on its own: stop its executor
        handle.stop()
    if code and handle.was_refused():
        typer.secho(
            "The SuperLink did not accept this SuperNode. Right after a crash it still holds the "
            "party's previous session for up to a minute (until its heartbeat expires): start "
            f"again then. Otherwise TLS or authentication failed; see {handle.log_path}",
            fg=typer.colors.RED,
            err=True,
        )
    raise typer.Exit(code)


@party_app.command("stop")
def party_stop(bundle: BundleOption) -> None:
    """Stop this party's SuperNode (by the pid recorded at start)."""
    from clients.supernode import running_supernode

    try:
        party = load_bundle(bundle)
    except FedRiskError as e:
        raise _fail(e) from e
    handle = running_supernode(party.layout.state_dir)
    if handle is None:
        typer.echo(f"No SuperNode is running for {party.name}.")
        return
    handle.stop()
    typer.echo(f"Stopped SuperNode pid {handle.pid}.")


def _sign_pin(
    lead: PartyBundle,
    out: Path,
    *,
    app: Path | None,
    allow_plaintext: bool,
    require_self_masks: bool,
    coordinator_workspace: str | None,
    vertical: VerticalRoster | None = None,
) -> tuple[AppPin | None, SignedPin]:
    """The pin the lead had installed (if any) and the next one, signed, written and installed."""
    from clients.pinning import installed_pin, issue_pin, pin_path

    before = installed_pin(lead).pin if pin_path(lead).exists() else None
    signed = issue_pin(
        lead,
        out_dir=out,
        app_dir=app,
        allow_plaintext=allow_plaintext,
        require_self_masks=require_self_masks,
        coordinator_workspace=coordinator_workspace,
        vertical=vertical,
    )
    return before, signed


def _describe_pin(pin: AppPin) -> str:
    from fedrisk.federation.pin import rule_violation

    rule = pin.run_config.get("plaintext")
    plaintext = (
        "allowed" if rule is not None and rule_violation(rule, True) is None else "forbidden"
    )
    self_masks = pin.run_config.get("mask-self")
    required = self_masks is not None and rule_violation(self_masks, False) is not None
    layout = pin.run_config.get("layout")
    guest = pin.run_config.get("vertical-guest")
    parties = pin.run_config.get("vertical-parties")
    vertical = (
        f", vertical: guest {guest.value}, parties {parties.value}"
        if layout is not None
        and rule_violation(layout, "vertical") is None
        and guest is not None
        and parties is not None
        and hasattr(guest, "value")
        and hasattr(parties, "value")
        else ""
    )
    return (
        f"pin #{pin.sequence} signed by {pin.issued_by} at {pin.issued_at}: {pin.app}, FAB "
        f"{pin.fab_sha256[:16]}, fedrisk {pin.fedrisk_version}, plaintext {plaintext}, "
        f"self masks {'required' if required else 'optional'}{vertical}"
    )


@pin_app.command("sign")
def pin_sign(
    bundle: BundleOption,
    out: Annotated[
        Path, typer.Option("--out", file_okay=False, help="Folder to write pin.json into.")
    ],
    coordinator_workspace: CoordinatorWorkspaceOption = None,
    allow_plaintext: AllowPlaintextOption = False,
    require_self_masks: RequireSelfMasksOption = False,
    app: AppOption = None,
    vertical_guest: VerticalGuestOption = None,
    vertical_hosts: VerticalHostsOption = None,
    vertical_id_column: VerticalIdColumnOption = None,
    vertical_id_kind: VerticalIdKindOption = "opaque",
) -> None:
    """Lead party: sign and install an amendment of the app pin (a new app or new rules).

    With --vertical-guest/--vertical-hosts/--vertical-id-column the pin admits only vertical LR
    runs among exactly those parties in those roles. Hand OUT/pin.json to every other party
    like the ceremony's files; each runs `fedrisk party pin accept` (it shows the roster: check
    your own role), and its executor enforces the new pin from its next run on.
    """
    roster = vertical_roster(vertical_guest, vertical_hosts, vertical_id_column, vertical_id_kind)
    try:
        before, signed = _sign_pin(
            load_bundle(bundle),
            out,
            app=app,
            allow_plaintext=allow_plaintext,
            require_self_masks=require_self_masks,
            coordinator_workspace=coordinator_workspace,
            vertical=roster,
        )
    except (FedRiskError, ValueError, OSError) as e:
        raise _fail(e) from e
    if before is not None:
        typer.echo(f"Replaces {_describe_pin(before)}")
    typer.echo(f"Signed and installed {_describe_pin(signed.pin)}")
    typer.echo(
        f"Hand {out / 'pin.json'} to every other party: `fedrisk party pin accept --pin ...`; "
        "each party's executor enforces it from its next run on."
    )


@pin_app.command("accept")
def pin_accept(
    bundle: BundleOption,
    pin: Annotated[
        Path,
        typer.Option("--pin", exists=True, dir_okay=False, help="The lead's signed pin.json."),
    ],
    expect_role: Annotated[
        str | None,
        typer.Option(
            "--expect-role",
            click_type=click.Choice(("guest", "host")),
            help="Vertical: the role this party plays; a pin giving it another is refused.",
        ),
    ] = None,
) -> None:
    """Every other party: verify the lead's signed pin amendment and install it (newer only)."""
    from clients.pinning import install_pin, load_pin_file

    try:
        party = load_bundle(bundle)
        pinned = install_pin(party, load_pin_file(pin), expect_role=expect_role)
    except FedRiskError as e:
        raise _fail(e) from e
    typer.echo(f"Installed {_describe_pin(pinned)}")


@pin_app.command("show")
def pin_show(bundle: BundleOption) -> None:
    """Show the app pin this party enforces, verified against its own manifest."""
    from clients.pinning import installed_pin

    try:
        signed = installed_pin(load_bundle(bundle))
    except FedRiskError as e:
        raise _fail(e) from e
    typer.echo(_describe_pin(signed.pin))
    for key, rule in sorted(signed.pin.run_config.items()):
        typer.echo(f"  {key}: {rule.model_dump_json()}")


def register(cli: typer.Typer) -> None:
    """Mount the ``keys`` and ``party`` groups on another typer app (the tests' own)."""
    cli.add_typer(keys_app, name="keys")
    cli.add_typer(party_app, name="party")


@party_app.command("serve")
def party_serve(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            exists=True,
            dir_okay=False,
            help="The feature service's settings (JSON: part, data, keys, TLS files).",
        ),
    ],
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to bind.")] = 8443,
) -> None:
    """Serve this host's partial scores of a vertical model (mutual TLS, keyed-hash customers)."""
    from clients.feature_service import FeatureServiceError, load_settings, serve
    from fedrisk.errors import FedRiskError

    try:
        settings = load_settings(config)
        serve(settings, host=host, port=port)
    except (FeatureServiceError, FedRiskError) as e:
        raise _fail(e) from e
