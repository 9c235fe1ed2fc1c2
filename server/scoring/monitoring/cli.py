"""Command line of outcomes and monitoring: ``fedrisk outcomes import|generate`` and
``fedrisk monitor``.

``outcomes import`` streams a CSV or Parquet file into the service database in ONE transaction
(a bad row aborts it, naming the line and column; re-importing skips rows already stored).
``monitor`` writes the indicators and alerts as a static HTML page and JSON, for people who do
not run the service.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from fedrisk.release.reference import ScoreReference

outcomes_app = typer.Typer(
    help="Loan outcomes: import monthly performance (CSV/Parquet), generate a demo portfolio.",
    no_args_is_help=True,
)

DbOpt = Annotated[str, typer.Option("--db", help="SQLAlchemy URL of the service database")]


def _fail(message: str) -> typer.Exit:
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(2)


def _migrated(db: str) -> Engine:
    from server.scoring.db.engine import make_engine
    from server.scoring.db.migrate import upgrade_database

    engine = make_engine(db)
    upgrade_database(engine)
    return engine


@outcomes_app.command("import")
def outcomes_import(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file of monthly performance rows")],
    db: DbOpt,
) -> None:
    """Import outcome rows (columns: decision_id, account_id, originated, principal, industry,
    purpose, purpose_text, customer_type, region, month_on_book, dpd, balance, paid,
    interest_fees, charge_off, recoveries) in one audited transaction."""
    from server.scoring.audit import audited_transaction
    from server.scoring.outcomes import OutcomeImportError, import_rows, read_rows

    if not file.is_file():
        raise _fail(f"FILE must be an existing file; got {file}")
    engine = _migrated(db)
    try:
        report = audited_transaction(engine, lambda c, ch: import_rows(c, ch, read_rows(file)))
    except OutcomeImportError as e:
        raise _fail(f"error: {e}; nothing was imported") from e
    finally:
        engine.dispose()
    typer.echo(
        f"imported {report.inserted} rows ({report.loans_added} new loans), skipped "
        f"{report.skipped} already stored, of {report.rows} rows in {file.name}"
    )


@outcomes_app.command("generate")
def outcomes_generate(
    db: DbOpt,
    applicants: Annotated[int, typer.Option(help="Applicants (decisions) to generate")] = 5000,
    seed: Annotated[int, typer.Option(help="Seed of the generator")] = 7,
    drift_region: Annotated[
        str | None, typer.Option(help="Region whose income falls (drift), e.g. east")
    ] = None,
    for_decisions: Annotated[
        bool,
        typer.Option(
            "--for-decisions",
            help="Generate outcomes for the approved application decisions already stored in "
            "--db (keyed to them) instead of a new book of decisions",
        ),
    ] = False,
    months: Annotated[
        int, typer.Option(min=1, max=60, help="With --for-decisions: months of performance")
    ] = 12,
    reference_out: Annotated[
        Path | None,
        typer.Option(help="Write the portfolio's release reference bands (JSON) here"),
    ] = None,
    csv_out: Annotated[
        Path | None, typer.Option(help="Also write the outcome rows as CSV here")
    ] = None,
) -> None:
    """Write a generated portfolio (decisions and 12-24 months of outcomes) into the database,
    or, with --for-decisions, outcomes for the decisions the service stored."""
    import numpy as np

    from fedrisk.files import write_atomic
    from server.scoring.outcomes import rows_to_csv
    from server.scoring.portfolio import (
        PortfolioConfig,
        generate_portfolio,
        load_portfolio,
        outcomes_for_decisions,
        reference_json,
    )

    config = PortfolioConfig(applicants=applicants, drift_region=drift_region)
    rng = np.random.default_rng(seed)
    engine = _migrated(db)
    try:
        if for_decisions:
            with engine.connect() as connection:
                portfolio = outcomes_for_decisions(connection, config, rng, months=months)
        else:
            portfolio = generate_portfolio(config, rng)
        report = load_portfolio(engine, portfolio)
    finally:
        engine.dispose()
    if reference_out is not None and portfolio.reference is not None:
        write_atomic(reference_out, reference_json(portfolio.reference))
    if csv_out is not None:
        write_atomic(csv_out, rows_to_csv(portfolio.outcome_rows))
    typer.echo(
        f"{len(portfolio.decisions)} decisions, {report.loans_added} loans, {report.inserted} "
        f"outcome rows up to {portfolio.as_of}"
    )


def _reference(
    registry: Path | None, reference: Path | None, engine: Engine
) -> ScoreReference | None:
    """The reference bands: a JSON file, or the A-card champion's verified artifact."""
    from sqlalchemy import select

    from fedrisk.release.artifact import ARTIFACT_FILE, load_trusted_keys, read_artifact
    from fedrisk.release.reference import ScoreReference
    from server.scoring.db.tables import model_assignments

    if reference is not None:
        return ScoreReference.model_validate_json(reference.read_text(encoding="utf-8"))
    if registry is None:
        return None
    with engine.connect() as connection:
        champion = connection.execute(
            select(model_assignments.c.champion_id).where(
                model_assignments.c.stage == "application"
            )
        ).scalar()
    if champion is None:
        return None
    keys = load_trusted_keys(registry / "trusted_keys")
    return read_artifact(registry / str(champion) / ARTIFACT_FILE, trusted_keys=keys).reference


def monitor(
    db: DbOpt,
    out: Annotated[Path, typer.Option("--out", help="Directory of the static HTML report")],
    json_file: Annotated[
        Path | None, typer.Option("--json", help="Also write the JSON summary here")
    ] = None,
    registry: Annotated[
        Path | None,
        typer.Option(help="Registry: the A-card champion's artifact gives the reference bands"),
    ] = None,
    reference: Annotated[
        Path | None, typer.Option(help="Reference bands as JSON (instead of --registry)")
    ] = None,
    as_of: Annotated[str | None, typer.Option(help="Month YYYY-MM (default: latest)")] = None,
    store: Annotated[
        bool, typer.Option("--store-alerts", help="Store new alerts in the database")
    ] = False,
    webhook: Annotated[
        str | None, typer.Option(help="POST each new stored alert here (with --store-alerts)")
    ] = None,
) -> None:
    """Portfolio monitoring (drift, performance, vintages, direction, alerts) as HTML + JSON.

    The static HTML goes to OUT/index.html; the JSON has the keys psi, auc_matured, ks_matured,
    alerts, direction and purpose_classifier."""
    from server.scoring.db.engine import write_connection
    from server.scoring.monitoring.alerts import send_alerts, store_alerts
    from server.scoring.monitoring.report import build_summary, summary_json, write_report

    engine = _migrated(db)
    try:
        ref = _reference(registry, reference, engine)
        with engine.connect() as connection:
            summary = build_summary(connection, ref, as_of=as_of)
            data = summary_json(summary, connection)
        new = []
        if store:
            with write_connection(engine) as connection, connection.begin():
                new = store_alerts(connection, summary.alerts)
            if webhook:
                send_alerts(webhook, new)
    finally:
        engine.dispose()
    page = write_report(data, out, json_file)
    typer.echo(
        json.dumps(
            {
                "report": str(page),
                "psi": data["psi"],
                "auc_matured": data["auc_matured"],
                "alerts": len(data["alerts"]),
                "stored": len(new),
                "reference": ref is not None,
            }
        )
    )
