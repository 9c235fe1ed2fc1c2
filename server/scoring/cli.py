"""Command-line entry points of the scoring service: ``serve`` (and ``serve keys …``),
``audit …`` and ``models …``.

The lead mounts these into the ``fedrisk`` CLI::

    app.add_typer(serve_app, name="serve")
    app.add_typer(audit_app, name="audit")
    app.add_typer(models_app, name="models")

``python -m server.scoring`` runs :data:`cli` (the same commands) on its own. The ``models`` and
``serve keys`` commands change the database directly, in one transaction with their audit
record; a running service picks a model change up within a second, and stops accepting a revoked
key once its cached verification expires (``FEDRISK_API_KEY_CACHE_SECONDS``, 10 s by default).
The database, registry and web-server modules are imported inside the commands, so ``--help``
and a refused option answer at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from pydantic import ValidationError

from fedrisk.errors import FedRiskError
from server.scoring.errors import ScoringError
from server.scoring.settings import (
    DEFAULT_CHALLENGER_SHARE,
    ENV_PREFIX,
    STAGES,
    Settings,
    Stage,
    stage_named,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from server.scoring.store import Assignment

T = TypeVar("T")

audit_app = typer.Typer(help="Audit-log tools.", no_args_is_help=True)
models_app = typer.Typer(
    help="Model registry: list, register, promote, roll back.", no_args_is_help=True
)
keys_app = typer.Typer(
    help="API keys of the service: create (shown once), list, revoke.", no_args_is_help=True
)
serve_app = typer.Typer(
    help="Run the scoring service (FastAPI on uvicorn; every route but /healthz needs an API key).",
    invoke_without_command=True,
)
serve_app.add_typer(keys_app, name="keys")
cli = typer.Typer(help="fedrisk scoring service.", no_args_is_help=True)

RegistryOpt = Annotated[Path, typer.Option("--registry", help="Model registry directory")]
DbOpt = Annotated[
    str | None, typer.Option("--db", help="SQLAlchemy URL (default: sqlite next to the registry)")
]
ActorOpt = Annotated[str, typer.Option("--actor", help="Who makes the change (recorded)")]
NoteOpt = Annotated[str, typer.Option("--note", help="Why (recorded)")]
StageArg = Annotated[str, typer.Argument(help="application, behaviour or collection")]
RegistryForDbOpt = Annotated[
    Path | None, typer.Option("--registry", help="Registry (default DB location)")
]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _stage(value: str) -> Stage:
    stage = stage_named(value)
    if stage is None:
        raise _fail(f"stage must be one of {list(STAGES)}; got {value!r}")
    return stage


def _engine(db: str | None, registry: Path | None) -> Engine:
    """Engine of the service database, migrated to the latest schema revision."""
    from server.scoring.db.engine import default_db_url, make_engine
    from server.scoring.db.migrate import upgrade_database

    if db is None:
        if registry is None:
            raise _fail("--db (or --registry for the default SQLite file) is required")
        db = default_db_url(registry)
    engine = make_engine(db)
    try:
        _run(lambda: upgrade_database(engine))
    except BaseException:
        engine.dispose()
        raise
    return engine


def _run(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except (FedRiskError, ScoringError) as e:
        raise _fail(f"error: {e}") from e


def _change_stage(
    stage: str,
    db: str | None,
    registry: Path | None,
    change: Callable[..., Assignment],
    *,
    actor: str,
    note: str,
) -> Assignment:
    """Apply one stage-level ``store`` change (rollback, stop challenger) in its transaction."""
    from server.scoring.audit import audited_transaction

    chosen = _stage(stage)
    engine = _engine(db, registry)
    try:
        return _run(
            lambda: audited_transaction(
                engine, lambda c, ch: change(c, ch, stage=chosen, actor=actor, note=note)
            )
        )
    finally:
        engine.dispose()


def _parse_shares(values: list[str]) -> dict[str, float]:
    shares: dict[str, float] = {}
    for item in values:
        stage, _, share = item.partition("=")
        try:
            shares[_stage(stage.strip())] = float(share)
        except ValueError as e:
            raise _fail(f"--challenger-share must look like stage=0.2; got {item!r}") from e
    return shares


def _settings(**given: Any) -> Settings:
    """Settings from the options given on the command line, then ``FEDRISK_*`` variables."""
    try:
        return Settings(**{name: value for name, value in given.items() if value is not None})
    except ValidationError as e:
        raise _fail(f"invalid settings:\n{e}") from e


def _default(field: str) -> str:
    return f"default {Settings.model_fields[field].default}; env {ENV_PREFIX}{field.upper()}"


@serve_app.callback()
def serve(
    ctx: typer.Context,
    registry: Annotated[
        Path | None, typer.Option("--registry", help="Model registry directory (required)")
    ] = None,
    db: DbOpt = None,
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Lifecycle policy TOML/YAML")
    ] = None,
    fraud_rules: Annotated[
        Path | None, typer.Option("--fraud-rules", help="Fraud rules TOML/YAML")
    ] = None,
    reason_table: Annotated[
        Path | None, typer.Option("--reason-table", help="Reason-code table TOML")
    ] = None,
    max_body_bytes: Annotated[
        int | None,
        typer.Option(help=f"Largest JSON body, 413 above ({_default('max_body_bytes')})"),
    ] = None,
    max_upload_bytes: Annotated[
        int | None,
        typer.Option(help=f"Largest batch upload ({_default('max_upload_bytes')})"),
    ] = None,
    challenger_share: Annotated[
        list[str],
        typer.Option("--challenger-share", help="Default challenger share, e.g. application=0.2"),
    ] = [],  # noqa: B006 - typer needs a literal default
    graph_ring_size: Annotated[
        int | None,
        typer.Option(
            help=f"Linked applications above which the graph flags a ring "
            f"({_default('graph_ring_size')})"
        ),
    ] = None,
    graph_hub_degree: Annotated[
        int | None,
        typer.Option(
            help=f"Identifiers shared by more applications are hubs, ignored "
            f"({_default('graph_hub_degree')})"
        ),
    ] = None,
    development: Annotated[
        bool,
        typer.Option(
            "--development",
            help=f"Allow the published development identifier key when {ENV_PREFIX}"
            "IDENTIFIER_KEY is unset (local trials and tests; never in production)",
        ),
    ] = False,
    insecure_dev: Annotated[
        bool,
        typer.Option(
            "--insecure-dev",
            help="Serve requests without an API key as admin, and start without any key "
            "(a local trial only; every request is logged with a warning)",
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request")] = False,
) -> None:
    """Run the scoring service (FastAPI on uvicorn; every route but /healthz needs an API key).

    Needs FEDRISK_IDENTIFIER_KEY (the key that hashes applicant identifiers) unless
    --development, and at least one API key (`serve keys create`) unless --insecure-dev. Keys
    are sent as `Authorization: Bearer <key>`; the OpenAPI description is at /openapi.json.
    Every setting can also come from a FEDRISK_<NAME> variable; a flag given here wins.
    """
    if ctx.invoked_subcommand is not None:
        return
    if registry is None:
        raise _fail("--registry is required to serve")
    settings = _settings(
        registry_dir=registry,
        db_url=db,
        policy_path=policy,
        fraud_rules_path=fraud_rules,
        reason_table_path=reason_table,
        max_body_bytes=max_body_bytes,
        max_upload_bytes=max_upload_bytes,
        challenger_shares=_parse_shares(challenger_share) or None,
        graph_ring_size=graph_ring_size,
        graph_hub_degree=graph_hub_degree,
        development=development or None,
        insecure_dev=insecure_dev or None,
    )
    _check_api_keys(settings)
    import uvicorn

    from server.scoring.app import create_app

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
        timeout_graceful_shutdown=10,
    )


def _check_api_keys(settings: Settings) -> None:
    """Refuse to start, with a plain message, when no key is stored (and not --insecure-dev)."""
    from server.scoring.startup import require_api_keys

    engine = _engine(settings.db_url, settings.registry_dir)
    try:
        _run(lambda: require_api_keys(engine, settings))
    finally:
        engine.dispose()


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option("--role", help="scoring, viewer, risk_officer or admin")],
    name: Annotated[str, typer.Option("--name", help="Who or what holds the key (recorded)")],
    db: DbOpt = None,
    registry: RegistryForDbOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Create a key and print it once on stdout (only its argon2 hash is stored)."""
    from server.scoring.apikeys import create_key, role_named

    chosen = _run(lambda: role_named(role))
    engine = _engine(db, registry)
    try:
        new = _run(lambda: create_key(engine, role=chosen, name=name, actor=actor))
    finally:
        engine.dispose()
    typer.echo(
        f"created key {new.info.key_id} ({new.info.role.value}, {new.info.name!r}); "
        "store it now, it is not shown again:",
        err=True,
    )
    typer.echo(new.key)


@keys_app.command("list")
def keys_list(db: DbOpt = None, registry: RegistryForDbOpt = None) -> None:
    """Every key: id, role, name, created, active or revoked (never the key)."""
    from server.scoring.apikeys import list_keys

    engine = _engine(db, registry)
    try:
        with engine.connect() as connection:
            keys = list_keys(connection)
    finally:
        engine.dispose()
    for info in keys:
        state = "active" if info.active else f"revoked {info.revoked_at}"
        typer.echo(
            f"{info.key_id}\t{info.role.value}\t{info.name}\tcreated {info.created_at}\t{state}"
        )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="Key id, as `serve keys list` shows it")],
    db: DbOpt = None,
    registry: RegistryForDbOpt = None,
    actor: ActorOpt = "cli",
) -> None:
    """Revoke a key (a running service refuses it once its cached check expires)."""
    from server.scoring.apikeys import revoke_key
    from server.scoring.audit import audited_transaction

    engine = _engine(db, registry)
    try:
        info = _run(
            lambda: audited_transaction(
                engine, lambda c, ch: revoke_key(c, ch, key_id=key_id, actor=actor)
            )
        )
    finally:
        engine.dispose()
    typer.echo(f"revoked key {info.key_id} ({info.role.value}, {info.name!r}) at {info.revoked_at}")


def _audit_files(
    db: str | None, registry: Path | None, checkpoints: Path | None, key: Path | None
) -> tuple[Path | None, Path | None]:
    """Checkpoint file and key file given, else where the service puts them by default."""
    from server.scoring.anchor import CHECKPOINT_FILE, KEY_FILE, PUBLIC_KEY_FILE, default_audit_dir

    audit_dir = default_audit_dir(registry_dir=registry, db_url=db)
    if audit_dir is not None:
        checkpoints = checkpoints or audit_dir / CHECKPOINT_FILE
        if key is None:
            key = next(
                (p for p in (audit_dir / KEY_FILE, audit_dir / PUBLIC_KEY_FILE) if p.exists()), None
            )
    return checkpoints, key


@audit_app.command("verify")
def audit_verify(
    db: Annotated[str, typer.Option("--db", help="SQLAlchemy URL of the service database")],
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            "--checkpoints",
            envvar=f"{ENV_PREFIX}AUDIT_CHECKPOINT_PATH",
            help="Signed checkpoint file (default: audit/checkpoints.jsonl beside the SQLite "
            "database, else beside the registry)",
        ),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            envvar=f"{ENV_PREFIX}AUDIT_KEY_PATH",
            help="The service's public key (signing.pub) or its key file (default: in the "
            "checkpoint file's default folder)",
        ),
    ] = None,
    registry: RegistryForDbOpt = None,
    chain_only: Annotated[
        bool,
        typer.Option(
            "--chain-only",
            help="Check the hash chain alone, without checkpoints: proves nothing against "
            "whoever can write the database",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Check the audit chain against the signed checkpoints; exit 1 naming the first broken
    record (or checkpoint line)."""
    from server.scoring.anchor import AuditAnchorError, load_public_key, read_checkpoints
    from server.scoring.audit import verify_chain
    from server.scoring.db.engine import make_engine

    checkpoint_path, key_path = _audit_files(db, registry, checkpoints, key)
    signed = []
    missing = not chain_only and (checkpoint_path is None or not checkpoint_path.exists())
    if not chain_only and not missing:
        assert checkpoint_path is not None
        if key_path is None:
            raise _fail("--key (the service's signing.pub or key file) is required")
        try:
            signed = read_checkpoints(checkpoint_path, load_public_key(key_path))
        except AuditAnchorError as e:
            if as_json:
                typer.echo(json.dumps({"ok": False, "checkpoint_file": str(checkpoint_path),
                                       "problem": str(e)}))  # fmt: skip
            else:
                typer.echo(f"audit checkpoints BROKEN in {checkpoint_path}: {e}")
            raise typer.Exit(1) from e
    engine = make_engine(db)
    try:
        with engine.connect() as connection:
            report = verify_chain(connection, checkpoints=signed)
    finally:
        engine.dispose()
    covered = min(max((c.seq for c in signed), default=0), report.records)
    if missing and report.ok:
        # a consistent chain proves nothing without checkpoints: never answer "OK" here
        raise _fail(
            f"no checkpoint file found{f' at {checkpoint_path}' if checkpoint_path else ''}: "
            f"give --checkpoints (or {ENV_PREFIX}AUDIT_CHECKPOINT_PATH) and --key; --chain-only "
            "checks the hash chain alone, which anyone who can write the database can forge"
        )
    if as_json:
        typer.echo(json.dumps({**report.__dict__, "checkpoints": len(signed), "covered": covered}))
    elif not report.ok:
        typer.echo(f"audit chain BROKEN at record {report.first_broken}: {report.problem}")
    elif chain_only:
        typer.echo(
            f"audit chain OK: {report.records} records, {report.decisions} decisions verified "
            "(hash chain only, NOT checked against signed checkpoints)"
        )
    else:
        typer.echo(
            f"audit chain OK: {report.records} records, {report.decisions} decisions verified; "
            f"records 1..{covered} covered by {len(signed)} signed checkpoints, "
            f"{report.records - covered} newer records not yet covered"
        )
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("init-key")
def audit_init_key(
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            envvar=f"{ENV_PREFIX}AUDIT_KEY_PATH",
            help="Key file to create (default: audit/signing.key beside the SQLite database, "
            "else beside the registry)",
        ),
    ] = None,
    registry: RegistryForDbOpt = None,
    db: DbOpt = None,
) -> None:
    """Create the service's audit signing key (mode 0600) and its public key beside it.

    The service creates one itself at its first start; this command makes it explicit (for
    example to hand signing.pub to auditors before the service runs). It never overwrites a key.
    """
    from fedrisk.release.identity import key_id
    from server.scoring.anchor import KEY_FILE, create_audit_key, default_audit_dir, public_key_path

    audit_dir = default_audit_dir(registry_dir=registry, db_url=db)
    if key is not None:
        path = key
    elif audit_dir is not None:
        path = audit_dir / KEY_FILE
    else:
        raise _fail("--key (or --db / --registry for the default location) is required")
    created = _run(lambda: create_audit_key(path))
    typer.echo(
        f"created audit key {path} (mode 0600); public key {public_key_path(path)}, "
        f"key id {key_id(created.public_key())}"
    )


@models_app.command("list")
def models_list(registry: RegistryOpt, db: DbOpt = None) -> None:
    """Verify every artifact in the registry and show stage, role and refusals."""
    from server.scoring import store
    from server.scoring.registry import ModelRegistry

    engine = _engine(db, registry)
    try:
        models = ModelRegistry(registry)
        models.load_all()
        with engine.connect() as connection:
            assignments = store.load_assignments(connection)
            stages = store.registered_model_stages(connection)
    finally:
        engine.dispose()
    models.set_assignments(assignments)
    for model_id, model in sorted(models.models.items()):
        placed = models.role_of(model_id)
        role = f"{placed[1]} of {placed[0]}" if placed else "-"
        stage = stages.get(model_id) or model.artifact.stage or "-"
        typer.echo(f"{model_id}\tstage={stage}\trole={role}\tsigner={model.signer}")
    for name, refusal in sorted(models.refused.items()):
        typer.echo(f"{name}\tREFUSED ({refusal.reason}): {refusal.message}")
    for stage, a in assignments.items():
        typer.echo(
            f"[{stage}] champion={a.champion_id} challenger={a.challenger_id} "
            f"share={a.challenger_share} history={list(a.history)}"
        )


@models_app.command("register")
def models_register(
    source: Annotated[
        Path, typer.Argument(help="Artifact directory (artifact.json + artifact.sig)")
    ],
    registry: RegistryOpt,
    db: DbOpt = None,
    stage: Annotated[str | None, typer.Option(help="Stage, when the artifact names none")] = None,
    actor: ActorOpt = "cli",
    note: NoteOpt = "",
) -> None:
    """Verify a signed artifact, copy it into the registry and register it for its stage."""
    from server.scoring import store
    from server.scoring.audit import audited_transaction
    from server.scoring.registry import ModelRegistry

    engine = _engine(db, registry)
    try:
        models = ModelRegistry(registry)
        model, _ = _run(lambda: models.install(source))
        declared = model.artifact.stage
        chosen = _stage(stage) if stage else declared
        if chosen is None:
            raise _fail("--stage is required: the artifact names no stage")
        if declared is not None and chosen != declared:
            raise _fail(f"--stage must match the artifact's stage {declared}; got {chosen}")
        a = _run(
            lambda: audited_transaction(
                engine,
                lambda c, ch: store.register_model(
                    c,
                    ch,
                    model_id=model.model_id,
                    stage=chosen,
                    artifact_sha256=model.artifact_sha256,
                    actor=actor,
                    note=note,
                ),
            )
        )
    finally:
        engine.dispose()
    typer.echo(f"registered {model.model_id} for {chosen}; champion={a.champion_id}")


@models_app.command("promote")
def models_promote(
    model_id: Annotated[str, typer.Argument(help="Registered model id")],
    registry: RegistryOpt,
    db: DbOpt = None,
    role: Annotated[str, typer.Option(help="champion or challenger")] = "champion",
    share: Annotated[float | None, typer.Option(help="Challenger traffic share (0-1)")] = None,
    actor: ActorOpt = "cli",
    note: NoteOpt = "",
) -> None:
    """Make a registered, verified model its stage's champion or challenger."""
    if role not in ("champion", "challenger"):
        raise _fail(f"--role must be champion or challenger; got {role!r}")
    chosen_role: Literal["champion", "challenger"] = (
        "champion" if role == "champion" else "challenger"
    )
    if share is not None and not 0.0 < share < 1.0:
        raise _fail(f"--share must be in (0, 1); got {share}")
    from server.scoring import store
    from server.scoring.audit import audited_transaction
    from server.scoring.registry import ModelRegistry

    engine = _engine(db, registry)
    try:
        models = ModelRegistry(registry)
        _run(lambda: models.verify(registry / model_id))
        shares = dict.fromkeys(STAGES, DEFAULT_CHALLENGER_SHARE)
        a = _run(
            lambda: audited_transaction(
                engine,
                lambda c, ch: store.promote_model(
                    c,
                    ch,
                    model_id=model_id,
                    role=chosen_role,
                    share=share,
                    default_shares=shares,
                    actor=actor,
                    note=note,
                ),
            )
        )
    finally:
        engine.dispose()
    typer.echo(
        f"[{a.stage}] champion={a.champion_id} challenger={a.challenger_id} "
        f"share={a.challenger_share}"
    )


@models_app.command("rollback")
def models_rollback(
    stage: StageArg,
    registry: RegistryForDbOpt = None,
    db: DbOpt = None,
    actor: ActorOpt = "cli",
    note: NoteOpt = "",
) -> None:
    """Restore the stage's previous champion."""
    from server.scoring import store

    a = _change_stage(stage, db, registry, store.rollback_stage, actor=actor, note=note)
    typer.echo(f"[{a.stage}] champion={a.champion_id} (rolled back)")


@models_app.command("stop-challenger")
def models_stop_challenger(
    stage: StageArg,
    registry: RegistryForDbOpt = None,
    db: DbOpt = None,
    actor: ActorOpt = "cli",
    note: NoteOpt = "",
) -> None:
    """End the stage's challenger experiment."""
    from server.scoring import store

    a = _change_stage(stage, db, registry, store.clear_challenger, actor=actor, note=note)
    typer.echo(f"[{a.stage}] challenger stopped; champion={a.champion_id}")


cli.add_typer(serve_app, name="serve")
cli.add_typer(audit_app, name="audit")
cli.add_typer(models_app, name="models")
