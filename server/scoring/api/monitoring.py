"""Outcomes and monitoring: posting loan performance, the indicators, drill-down and alerts.

Roles: posting outcomes and loan-level drill-down need ``risk_officer`` (loan-level data, each
call audited); every aggregate needs ``viewer``; checking and storing alerts (which also sends
the webhook) needs ``risk_officer``.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Connection

from fedrisk.release.reference import ScoreReference
from server.scoring.access import requires
from server.scoring.api.routing import ERRORS, new_router
from server.scoring.apikeys import Role
from server.scoring.context import ServiceContext
from server.scoring.deps import ServiceDep
from server.scoring.errors import InvalidInputError, NotFoundError
from server.scoring.monitoring import queries
from server.scoring.monitoring.alerts import send_alerts, store_alerts, stored_alerts
from server.scoring.monitoring.models import (
    Alert,
    BandPerformance,
    ChampionChallenger,
    DecisionMixRow,
    Dimension,
    Direction,
    Discrimination,
    DrillDown,
    PsiPoint,
    PsiResult,
    RatePoint,
    RollRates,
    Summary,
    VintageCurve,
)
from server.scoring.monitoring.report import build_summary
from server.scoring.outcomes import ImportReport, OutcomeImportError, OutcomeRow, import_rows
from server.scoring.telemetry import Metrics

router = new_router()

Month = Annotated[str | None, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")]
SegmentValue = Annotated[str | None, Query(max_length=64)]


class OutcomeBatch(BaseModel):
    """Monthly performance rows (at most 10,000 per request; use the CLI import for files)."""

    model_config = ConfigDict(extra="forbid")

    rows: Annotated[list[OutcomeRow], Field(min_length=1, max_length=10_000)]


class OutcomeImportOut(BaseModel):
    """What a post stored: rows inserted, rows skipped as already stored, loans added."""

    model_config = ConfigDict(extra="forbid")

    rows: int
    inserted: int
    skipped: int
    loans_added: int
    audit_records: int


class PerformanceOut(BaseModel):
    """Champion AUC/KS on matured loans and the realised bad rate by reference PD band."""

    model_config = ConfigDict(extra="forbid")

    discrimination: Discrimination
    release_auc: float | None
    bands: list[BandPerformance]


class AlertCheckOut(BaseModel):
    """Alerts firing now, the new ones stored, and how many the webhook accepted."""

    model_config = ConfigDict(extra="forbid")

    firing: list[Alert]
    stored: int
    delivered: int


def reference_of(ctx: ServiceContext) -> ScoreReference | None:
    """The configured reference file's bands, else the A-card champion artifact's (None
    without either): a file the operator configured is a deliberate choice of baseline (e.g.
    the development sample of a book scored by another model), so it wins."""
    path = ctx.settings.monitoring_reference_path
    if path is not None:
        return ScoreReference.model_validate_json(path.read_text(encoding="utf-8"))
    try:
        return ctx.registry.champion("application").artifact.reference
    except Exception:  # no champion loaded: monitoring still answers what needs no reference
        return None


def update_metrics(metrics: Metrics, summary: Summary) -> None:
    """Export a summary's PSI, matured AUC and firing alerts as Prometheus gauges."""
    if summary.psi is not None:
        metrics.monitoring_psi.set(summary.psi)
    if summary.auc_matured is not None:
        metrics.monitoring_auc.set(summary.auc_matured)
    metrics.monitoring_alerts.clear()
    for alert in summary.alerts:
        metrics.monitoring_alerts.labels(alert.kind, alert.severity).inc()


def _as_of(connection: Connection, month: str | None) -> str:
    found = month or queries.latest_month(connection)
    if found is None:
        raise NotFoundError("no outcomes are stored yet")
    return found


def segment_filters(
    industry: SegmentValue = None,
    purpose: SegmentValue = None,
    customer_type: SegmentValue = None,
    region: SegmentValue = None,
) -> dict[str, str]:
    """The drill-down path: segment tags given as query parameters."""
    given = {"industry": industry, "purpose": purpose}
    given |= {"customer_type": customer_type, "region": region}
    return {k: v for k, v in given.items() if v is not None}


Filters = Annotated[dict[str, str], Depends(segment_filters)]


@router.post(
    "/v1/outcomes",
    response_model=OutcomeImportOut,
    responses=ERRORS,
    tags=["monitoring"],
    openapi_extra=requires(Role.RISK_OFFICER),
)
async def post_outcomes(body: OutcomeBatch, ctx: ServiceDep) -> OutcomeImportOut:
    """Store monthly loan performance (idempotent: rows already stored unchanged are skipped;
    a row contradicting a stored one, or naming no application decision, refuses the batch)."""
    located = [(f"rows[{i}]", row.model_dump()) for i, row in enumerate(body.rows)]
    try:
        report: ImportReport = await ctx.writer.run_job(lambda c, ch: import_rows(c, ch, located))
    except OutcomeImportError as e:
        raise InvalidInputError(
            [{"type": "value_error", "loc": ["body", "rows"], "msg": str(e)}]
        ) from e
    return OutcomeImportOut(**report.__dict__)


@router.get(
    "/v1/monitoring/summary",
    response_model=Summary,
    tags=["monitoring"],
    openapi_extra=requires(Role.VIEWER),
)
async def summary(ctx: ServiceDep, as_of: Month = None) -> Summary:
    """Every indicator and the alerts firing now (not stored: see ``alerts/check``)."""
    result: Summary = await ctx.read(build_summary, reference_of(ctx), as_of=as_of)
    update_metrics(ctx.metrics, result)
    return result


@router.get(
    "/v1/monitoring/decision-mix",
    response_model=list[DecisionMixRow],
    tags=["monitoring"],
    openapi_extra=requires(Role.VIEWER),
)
async def decision_mix(ctx: ServiceDep) -> list[DecisionMixRow]:
    """Application decisions by month and outcome, and the review override rate."""
    rows: list[DecisionMixRow] = await ctx.read(queries.decision_mix)
    return rows


@router.get(
    "/v1/monitoring/psi",
    response_model=PsiResult,
    tags=["monitoring"],
    openapi_extra=requires(Role.VIEWER),
)
async def psi(ctx: ServiceDep, month: Month = None) -> PsiResult:
    """Score PSI of one decision month (default: the latest) against the release's bands."""
    reference = reference_of(ctx)
    if reference is None:
        raise NotFoundError("the A-card champion's artifact carries no reference distribution")

    def run(connection: Connection) -> PsiResult:
        chosen = month or queries.latest_decision_month(connection)
        if chosen is None:
            raise NotFoundError("no application decisions are stored yet")
        return queries.score_psi(connection, reference, month=chosen)

    result: PsiResult = await ctx.read(run)
    return result


@router.get(
    "/v1/monitoring/psi/trend",
    response_model=list[PsiPoint],
    tags=["monitoring"],
    openapi_extra=requires(Role.VIEWER),
)
async def psi_trend(ctx: ServiceDep) -> list[PsiPoint]:
    """Score PSI of every decision month."""
    reference = reference_of(ctx)
    if reference is None:
        raise NotFoundError("the A-card champion's artifact carries no reference distribution")
    points: list[PsiPoint] = await ctx.read(queries.psi_trend, reference)
    return points


@router.get(
    "/v1/monitoring/performance",
    response_model=PerformanceOut,
    tags=["monitoring"],
    openapi_extra=requires(Role.VIEWER),
)
async def performance(
    ctx: ServiceDep, window: Annotated[int, Query(ge=1, le=60)] = queries.WINDOW
) -> PerformanceOut:
    """Champion AUC/KS on matured loans, and the bad rate by reference PD band."""
    reference = reference_of(ctx)

    def run(connection: Connection) -> PerformanceOut:
        return PerformanceOut(
            discrimination=queries.matured_discrimination(connection, window=window),
            release_auc=None if reference is None else reference.auc,
            bands=(
                []
                if reference is None
                else queries.bad_rate_by_band(connection, reference, window=window)
            ),
        )

    result: PerformanceOut = await ctx.read(run)
    return result


@router.get(
    "/v1/monitoring/champion-challenger",
    response_model=ChampionChallenger,
    tags=["monitoring"],
    openapi_extra=requires(Role.VIEWER),
)
async def champion_challenger(
    ctx: ServiceDep,
    window: Annotated[int, Query(ge=1, le=60)] = queries.WINDOW,
    confidence: Annotated[float, Query(gt=0.5, lt=1.0)] = 0.95,
) -> ChampionChallenger:
    """Challenger minus champion AUC on matured loans with a DeLong confidence interval."""
    result: ChampionChallenger = await ctx.read(
        queries.champion_challenger, window=window, confidence=confidence
    )
    return result


@router.get(
    "/v1/monitoring/vintages",
    response_model=list[VintageCurve],
    tags=["monitoring"],
    openapi_extra=requires(Role.VIEWER),
)
async def vintages(ctx: ServiceDep, as_of: Month = None) -> list[VintageCurve]:
    """Cumulative bad rate by month on book for each origination month."""
    curves: list[VintageCurve] = await ctx.read(
        lambda c: queries.vintages(c, as_of=_as_of(c, as_of))
    )
    return curves


@router.get(
    "/v1/monitoring/roll-rates",
    response_model=RollRates,
    tags=["monitoring"],
    openapi_extra=requires(Role.VIEWER),
)
async def roll_rates(
    ctx: ServiceDep, as_of: Month = None, months: Annotated[int, Query(ge=1, le=24)] = 1
) -> RollRates:
    """Delinquency-bucket transitions over the ``months`` month-to-month steps ending at
    ``as_of``."""
    result: RollRates = await ctx.read(
        lambda c: queries.roll_rates(c, as_of=_as_of(c, as_of), months=months)
    )
    return result


@router.get(
    "/v1/monitoring/direction",
    response_model=Direction,
    tags=["monitoring"],
    openapi_extra=requires(Role.VIEWER),
)
async def direction(
    ctx: ServiceDep,
    dims: Annotated[list[Dimension], Query(min_length=1, max_length=2)],
    filters: Filters,
    as_of: Month = None,
) -> Direction:
    """Overdue rate and amount at ``as_of`` and lifetime loss rate / net yield by one or two
    crossed dimensions, inside optional filters (the drill-down path)."""
    if len(set(dims)) != len(dims):
        raise InvalidInputError(
            [
                {
                    "type": "value_error",
                    "loc": ["query", "dims"],
                    "msg": f"dims must differ; got {dims}",
                }
            ]
        )
    result: Direction = await ctx.read(
        lambda c: queries.direction(c, dims, as_of=_as_of(c, as_of), filters=filters)
    )
    return result


@router.get(
    "/v1/monitoring/direction/loans",
    response_model=DrillDown,
    tags=["monitoring"],
    openapi_extra=requires(Role.RISK_OFFICER),
)
async def direction_loans(
    ctx: ServiceDep,
    filters: Filters,
    as_of: Month = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> DrillDown:
    """The loans of a segment at ``as_of``, most overdue first (loan-level: audited)."""
    result: DrillDown = await ctx.read(
        lambda c: queries.drill_down(
            c, as_of=_as_of(c, as_of), filters=filters, limit=limit, offset=offset
        )
    )
    return result


@router.get(
    "/v1/monitoring/bcard-warnings",
    response_model=list[RatePoint],
    tags=["monitoring"],
    openapi_extra=requires(Role.VIEWER),
)
async def bcard_warnings(ctx: ServiceDep) -> list[RatePoint]:
    """Share of B-card decisions with an early warning, by month."""
    points: list[RatePoint] = await ctx.read(queries.bcard_warning_rate)
    return points


@router.get(
    "/v1/monitoring/alerts",
    response_model=list[Alert],
    tags=["monitoring"],
    openapi_extra=requires(Role.VIEWER),
)
async def alerts(ctx: ServiceDep, limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> list[Alert]:
    """Stored alerts, newest first."""
    found: list[Alert] = await ctx.read(stored_alerts, limit=limit)
    return found


@router.post(
    "/v1/monitoring/alerts/check",
    response_model=AlertCheckOut,
    tags=["monitoring"],
    openapi_extra=requires(Role.RISK_OFFICER),
)
async def check_alerts(ctx: ServiceDep) -> AlertCheckOut:
    """Evaluate the alert rules now, store the new alerts, send them to the configured webhook
    and update the Prometheus gauges."""
    result: Summary = await ctx.read(build_summary, reference_of(ctx))
    update_metrics(ctx.metrics, result)

    def store(connection: Connection, _chain: Any) -> list[Alert]:
        return store_alerts(connection, result.alerts)

    new: list[Alert] = await ctx.writer.run_job(store)
    delivered = 0
    url = ctx.settings.monitoring_webhook_url
    if url and new:
        delivered = await anyio.to_thread.run_sync(send_alerts, url, new)
    return AlertCheckOut(firing=result.alerts, stored=len(new), delivered=delivered)
