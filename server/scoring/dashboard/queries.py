"""SQL of the dashboard pages whose data the service records today: decisions, reviews, models.

Every figure is computed by the database (SQLAlchemy Core, the same statement on SQLite and
PostgreSQL); the web process only formats the rows.

Definitions
-----------
approval rate
    Application (A-card) decisions whose outcome is ``approve``, over all application decisions.
review queue
    Review items still ``open`` or ``claimed``.
human override rate
    Among resolved review items that had an automated verdict, the share a person reversed: an
    applicant's request for review of an automated decline resolved ``approve``, and a fraud flag
    resolved ``clear_fraud``. Manual-review items are left out: the model referred them without
    a verdict, so resolving them overrides nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, and_, case, cast, func, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from server.scoring.dashboard.charts import Cell, ChartData
from server.scoring.db.tables import decisions, review_items

DAY_CHARS = 10
"""``created_at`` is ISO-8601 text: its first ten characters are the UTC day."""

QUEUED_STATUSES = ("open", "claimed")
VERDICT_KINDS = ("human_review_request", "fraud")
"""Review kinds that carry an automated verdict a person can reverse."""

DRILL_LIMIT = 500
"""Rows shown on a loan-level page (the count above them is the full one)."""

OUTCOMES_TABLE = "outcomes"
"""Table of loan performance added by the monitoring work; pages that need it wait for rows."""


def _day() -> ColumnElement[str]:
    return func.substr(decisions.c.created_at, 1, DAY_CHARS)


def _ratio(numerator: ColumnElement[Any], denominator: ColumnElement[Any]) -> ColumnElement[Any]:
    """``numerator / denominator`` as a float in SQL (NULL when the denominator is 0)."""
    return cast(numerator, Float) / func.nullif(denominator, 0)


def _overridden() -> ColumnElement[int]:
    return case(
        (
            and_(
                review_items.c.kind == "human_review_request",
                review_items.c.resolution == "approve",
            ),
            1,
        ),
        (and_(review_items.c.kind == "fraud", review_items.c.resolution == "clear_fraud"), 1),
        else_=0,
    )


def _approved() -> ColumnElement[int]:
    return case((decisions.c.outcome == "approve", 1), else_=0)


def _chart(connection: Connection, statement: Any) -> ChartData:
    result = connection.execute(statement)
    columns = tuple(result.keys())
    return ChartData(columns, tuple(tuple(_cell(v) for v in row) for row in result))


def _cell(value: object) -> Cell:
    if value is None or isinstance(value, str | int | float):
        return value
    return float(value)  # type: ignore[arg-type]  # Decimal from PostgreSQL aggregates


def decision_mix(connection: Connection) -> ChartData:
    """Decisions per UTC day, stage and outcome."""
    day = _day().label("day")
    return _chart(
        connection,
        select(day, decisions.c.stage, decisions.c.outcome, func.count().label("decisions"))
        .group_by(day, decisions.c.stage, decisions.c.outcome)
        .order_by(day, decisions.c.stage, decisions.c.outcome),
    )


def approval_rate_by_day(connection: Connection) -> ChartData:
    """Application decisions, approvals and the approval rate per UTC day."""
    day = _day().label("day")
    approved = func.sum(_approved())
    return _chart(
        connection,
        select(
            day,
            func.count().label("decisions"),
            approved.label("approved"),
            _ratio(approved, func.count()).label("approval_rate"),
        )
        .where(decisions.c.stage == "application")
        .group_by(day)
        .order_by(day),
    )


def review_queue(connection: Connection) -> ChartData:
    """Queued review items per kind and status."""
    return _chart(
        connection,
        select(review_items.c.kind, review_items.c.status, func.count().label("items"))
        .where(review_items.c.status.in_(QUEUED_STATUSES))
        .group_by(review_items.c.kind, review_items.c.status)
        .order_by(review_items.c.kind, review_items.c.status),
    )


def override_rate(connection: Connection) -> ChartData:
    """Resolved reviews with an automated verdict, how many a person reversed, the rate."""
    overridden = func.sum(_overridden())
    return _chart(
        connection,
        select(
            review_items.c.kind,
            func.count().label("resolved"),
            overridden.label("overridden"),
            _ratio(overridden, func.count()).label("override_rate"),
        )
        .where(review_items.c.status == "resolved", review_items.c.kind.in_(VERDICT_KINDS))
        .group_by(review_items.c.kind)
        .order_by(review_items.c.kind),
    )


def decisions_by_model(connection: Connection) -> ChartData:
    """Decisions per stage, model and role (champion / challenger traffic)."""
    return _chart(
        connection,
        select(
            decisions.c.stage,
            decisions.c.model_id,
            decisions.c.role,
            func.count().label("decisions"),
        )
        .group_by(decisions.c.stage, decisions.c.model_id, decisions.c.role)
        .order_by(decisions.c.stage, decisions.c.model_id, decisions.c.role),
    )


@dataclass(frozen=True)
class OverviewFigures:
    """The headline numbers of the overview page."""

    decisions: int
    application_decisions: int
    approved: int
    approval_rate: float | None
    review_queue: int
    resolved_with_verdict: int
    overridden: int
    override_rate: float | None


def overview_figures(connection: Connection) -> OverviewFigures:
    """Totals behind the overview's headline numbers (three aggregate statements)."""
    is_application = case((decisions.c.stage == "application", 1), else_=0)
    approved_application = case(
        (and_(decisions.c.stage == "application", decisions.c.outcome == "approve"), 1), else_=0
    )
    totals = connection.execute(
        select(
            func.count(),
            func.coalesce(func.sum(is_application), 0),
            func.coalesce(func.sum(approved_application), 0),
        ).select_from(decisions)
    ).one()
    queued = connection.execute(
        select(func.count())
        .select_from(review_items)
        .where(review_items.c.status.in_(QUEUED_STATUSES))
    ).scalar_one()
    resolved = connection.execute(
        select(func.count(), func.coalesce(func.sum(_overridden()), 0))
        .select_from(review_items)
        .where(review_items.c.status == "resolved", review_items.c.kind.in_(VERDICT_KINDS))
    ).one()
    total, applications, approved = (int(v) for v in totals)
    resolved_count, overridden = int(resolved[0]), int(resolved[1])
    return OverviewFigures(
        decisions=total,
        application_decisions=applications,
        approved=approved,
        approval_rate=approved / applications if applications else None,
        review_queue=int(queued),
        resolved_with_verdict=resolved_count,
        overridden=overridden,
        override_rate=overridden / resolved_count if resolved_count else None,
    )


@dataclass(frozen=True)
class DecisionFilter:
    """Which decisions a loan-level page lists (None: any)."""

    stage: str | None = None
    outcome: str | None = None
    day: str | None = None


def _matching(query: Any, chosen: DecisionFilter) -> Any:
    if chosen.stage is not None:
        query = query.where(decisions.c.stage == chosen.stage)
    if chosen.outcome is not None:
        query = query.where(decisions.c.outcome == chosen.outcome)
    if chosen.day is not None:
        query = query.where(_day() == chosen.day)
    return query


def count_matching_decisions(connection: Connection, chosen: DecisionFilter) -> int:
    """How many decisions match ``chosen``."""
    query = _matching(select(func.count()).select_from(decisions), chosen)
    return int(connection.execute(query).scalar_one())


def matching_decisions(
    connection: Connection, chosen: DecisionFilter, *, limit: int = DRILL_LIMIT
) -> ChartData:
    """The newest decisions matching ``chosen`` (loan level: no identifiers, hashed subject)."""
    query = _matching(
        select(
            decisions.c.decision_id,
            decisions.c.created_at,
            decisions.c.stage,
            decisions.c.model_id,
            decisions.c.role,
            decisions.c.score,
            decisions.c.probability,
            decisions.c.outcome,
        ),
        chosen,
    )
    order = (decisions.c.created_at.desc(), decisions.c.decision_id.desc())
    return _chart(connection, query.order_by(*order).limit(limit))


def outcomes_recorded(connection: Connection) -> bool:
    """Whether loan outcomes exist yet (the table is there and holds a row)."""
    if not inspect(connection).has_table(OUTCOMES_TABLE):
        return False
    return connection.execute(text(f"SELECT 1 FROM {OUTCOMES_TABLE} LIMIT 1")).first() is not None
