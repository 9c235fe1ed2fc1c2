"""The dashboard's pages, in navigation order, each a list of chart specs.

Adding a monitoring page's chart is one :class:`ChartSpec` naming a query function that returns
:class:`ChartData`: the page, its table, its Plotly figure and its CSV endpoint follow. Pages with
``needs_outcomes`` show "no outcomes recorded yet" until the ``outcomes`` table has rows, and
never a made-up chart. For example, once a PSI query exists::

    def psi_by_month(connection: Connection) -> ChartData:
        rows = monitoring.psi_by_month(connection)          # SQL, in the database
        return ChartData(("month", "psi"), tuple((r.month, r.psi) for r in rows))

    PSI = ChartSpec("psi", "Score PSI by month", psi_by_month, "line", x="month", y="psi")
    # ... and PageSpec("drift", ..., charts=(PSI,), needs_outcomes=True) below

A chart whose rows lead to loans sets ``drill`` (row -> query parameters) and ``drill_path``
(a loan-level route that requires ``risk_officer``, so it is audited).
"""

from __future__ import annotations

from collections.abc import Mapping

from server.scoring.dashboard import queries
from server.scoring.dashboard.charts import Cell, ChartSpec, PageSpec


def _drill_decision_mix(row: Mapping[str, Cell]) -> dict[str, str]:
    return {"stage": str(row["stage"]), "outcome": str(row["outcome"]), "day": str(row["day"])}


DECISION_MIX = ChartSpec(
    chart_id="decision_mix",
    title="Decision mix by day, stage and outcome",
    query=queries.decision_mix,
    kind="stacked_bar",
    x="day",
    y="decisions",
    series=("stage", "outcome"),
    drill=_drill_decision_mix,
    note="Decisions recorded per UTC day; each bar segment is one stage and outcome.",
)
APPROVAL_RATE = ChartSpec(
    chart_id="approval_rate",
    title="Approval rate of applications by day",
    query=queries.approval_rate_by_day,
    kind="line",
    x="day",
    y="approval_rate",
    note="Application decisions answered approve, over all application decisions of the day.",
)
REVIEW_QUEUE = ChartSpec(
    chart_id="review_queue",
    title="Review queue by kind and status",
    query=queries.review_queue,
    kind="bar",
    x="kind",
    y="items",
    series=("status",),
    note="Items still open or claimed.",
)
OVERRIDE_RATE = ChartSpec(
    chart_id="override_rate",
    title="Human override rate by review kind",
    query=queries.override_rate,
    kind="bar",
    x="kind",
    y="override_rate",
    note=(
        "Resolved items a person reversed: a reviewed decline approved, a fraud flag cleared. "
        "Manual-review referrals carry no automated verdict and are left out."
    ),
)
DECISIONS_BY_MODEL = ChartSpec(
    chart_id="decisions_by_model",
    title="Decisions by stage, model and role",
    query=queries.decisions_by_model,
    kind="bar",
    x="model_id",
    y="decisions",
    series=("role",),
    note="Champion and challenger traffic as recorded with each decision.",
)

PAGES: tuple[PageSpec, ...] = (
    PageSpec(
        "overview",
        "Overview",
        (DECISION_MIX, APPROVAL_RATE, REVIEW_QUEUE, OVERRIDE_RATE),
        intro="What the service decided, and what people did with the review queue.",
    ),
    PageSpec(
        "drift",
        "Drift",
        needs_outcomes=True,
        intro="Score PSI and per-feature CSI against the release's reference distribution.",
    ),
    PageSpec(
        "performance",
        "Performance",
        needs_outcomes=True,
        intro="Realised bad rate by score band, AUC and KS on matured loans.",
    ),
    PageSpec(
        "vintages",
        "Vintages",
        needs_outcomes=True,
        intro="Bad rate by month on book for each origination month; roll rates.",
    ),
    PageSpec(
        "direction",
        "Direction analysis",
        needs_outcomes=True,
        intro="Overdue amount and rate by industry, purpose, customer type and region.",
    ),
    PageSpec(
        "alerts",
        "Alerts",
        needs_outcomes=True,
        intro="PSI, AUC drop, segment delinquency and B-card warning alerts.",
    ),
    PageSpec(
        "models",
        "Models",
        (DECISIONS_BY_MODEL,),
        intro="Champion and challenger per stage, the signed releases they come from.",
    ),
)
"""Every page, in navigation order."""

PAGES_BY_SLUG: dict[str, PageSpec] = {page.slug: page for page in PAGES}
CHARTS: dict[str, ChartSpec] = {chart.chart_id: chart for page in PAGES for chart in page.charts}
"""Every chart by id (the CSV endpoint's lookup)."""
