"""The dashboard's pages, in navigation order, each a list of chart specs.

Adding a monitoring page's chart is one :class:`ChartSpec` naming a query function that returns
:class:`ChartData`: the page, its table, its Plotly figure and its CSV endpoint follow. Pages with
``needs_outcomes`` show "no outcomes recorded yet" until the ``outcomes`` table has rows, and
never a made-up chart. For example, once a PSI query exists::

    def psi_by_month(connection: Connection, inputs: ChartInputs) -> ChartData:
        rows = monitoring.psi_trend(connection, inputs.reference)   # SQL, in the database
        return ChartData(("month", "psi"), tuple((r.month, r.psi) for r in rows))

    PSI = ChartSpec("psi", "Score PSI by month", psi_by_month, "line", x="month", y="psi")
    # ... and PageSpec("drift", ..., charts=(PSI,), needs_outcomes=True) below

A chart whose rows lead to loans sets ``drill`` (row -> query parameters) and ``drill_path``
(a loan-level route that requires ``risk_officer``, so it is audited).
"""

from __future__ import annotations

from collections.abc import Mapping

from server.scoring.dashboard import indicators, queries
from server.scoring.dashboard.charts import Cell, ChartSpec, PageSpec, without_inputs


def _drill_decision_mix(row: Mapping[str, Cell]) -> dict[str, str]:
    return {"stage": str(row["stage"]), "outcome": str(row["outcome"]), "day": str(row["day"])}


DECISION_MIX = ChartSpec(
    chart_id="decision_mix",
    title="Decision mix by day, stage and outcome",
    query=without_inputs(queries.decision_mix),
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
    query=without_inputs(queries.approval_rate_by_day),
    kind="line",
    x="day",
    y="approval_rate",
    note="Application decisions answered approve, over all application decisions of the day.",
)
REVIEW_QUEUE = ChartSpec(
    chart_id="review_queue",
    title="Review queue by kind and status",
    query=without_inputs(queries.review_queue),
    kind="bar",
    x="kind",
    y="items",
    series=("status",),
    note="Items still open or claimed.",
)
OVERRIDE_RATE = ChartSpec(
    chart_id="override_rate",
    title="Human override rate by review kind",
    query=without_inputs(queries.override_rate),
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
    query=without_inputs(queries.decisions_by_model),
    kind="bar",
    x="model_id",
    y="decisions",
    series=("role",),
    note="Champion and challenger traffic as recorded with each decision.",
)

PSI_TREND = ChartSpec(
    chart_id="psi_trend",
    title="Score PSI by decision month",
    query=indicators.psi_trend,
    kind="line",
    x="month",
    y="psi",
    note="Champion application PDs of each month against the release's reference PD bands "
    "(0.1: watch, 0.25: shifted).",
)
PSI_BANDS = ChartSpec(
    chart_id="psi_bands",
    title="Applications by PD band: reference against the latest month",
    query=indicators.psi_bands,
    kind="bar",
    x="pd_range",
    y="share",
    series=("distribution",),
    note="Share of applications in each reference PD band.",
)
FEATURE_CSI = ChartSpec(
    chart_id="feature_csi",
    title="Feature CSI of the latest decision month",
    query=indicators.feature_csi,
    kind="bar",
    x="feature",
    y="csi",
    series=("band",),
    note="Each input's distribution over the champion's applications against the bins the "
    "signed release computed from the parties' encrypted pooled statistics (0.1: watch, "
    "0.25: shifted, retrain recommended).",
)
CSI_TREND = ChartSpec(
    chart_id="csi_trend",
    title="Feature CSI by decision month",
    query=indicators.csi_trend,
    kind="line",
    x="month",
    y="csi",
    series=("feature",),
    note="One line per input feature the release's reference describes.",
)
BAD_RATE_BY_BAND = ChartSpec(
    chart_id="bad_rate_by_band",
    title="Realised bad rate of matured loans by PD band",
    query=indicators.bad_rate_by_band,
    kind="bar",
    x="pd_range",
    y="bad_rate",
    note="Bad: 90+ days past due or charged off within 12 months on book; champion decisions.",
)
DISCRIMINATION = ChartSpec(
    chart_id="discrimination",
    title="AUC and KS on matured loans",
    query=indicators.matured_discrimination,
    kind="bar",
    x="role",
    y="auc",
    note="Loans with 12 months on book or bad earlier, by the role of the model that decided.",
)
CHAMPION_CHALLENGER = ChartSpec(
    chart_id="champion_challenger",
    title="Challenger against champion on matured loans",
    query=indicators.champion_challenger,
    kind="table",
    x="measure",
    y="value",
    note="AUC difference with a DeLong confidence interval (the two models decided disjoint "
    "applicants, so the variances add).",
)
VINTAGES = ChartSpec(
    chart_id="vintages",
    title="Vintage curves: cumulative bad rate by month on book",
    query=indicators.vintage_curves,
    kind="line",
    x="month_on_book",
    y="bad_rate",
    series=("originated",),
    note="One curve per origination month, up to the months it has been on book.",
)
ROLL_RATES = ChartSpec(
    chart_id="roll_rates",
    title="Roll rates between delinquency buckets, latest month",
    query=indicators.roll_rates,
    kind="stacked_bar",
    x="from_bucket",
    y="rate",
    series=("to_bucket",),
    note="Loans still owing last month, by the bucket they moved to.",
)
DIRECTION = ChartSpec(
    chart_id="direction",
    title="Overdue rate by segment, latest month",
    query=indicators.direction,
    kind="bar",
    x="cell",
    y="overdue_rate",
    drill=indicators.drill_segment,
    drill_path="/dashboard/loans",
    note="Active loans with 1+ days past due over active loans; each row lists its loans.",
)
RISK_RETURN = ChartSpec(
    chart_id="risk_return",
    title="Risk and return by segment",
    query=indicators.risk_return,
    kind="bar",
    x="cell",
    y="net_yield",
    series=("high_default_profitable",),
    drill=indicators.drill_segment,
    drill_path="/dashboard/loans",
    note="Net yield (income - net loss) / principal to date; 'yes' marks segments defaulting "
    "1.5x the portfolio's rate that still earn more than they lose.",
)
ALERTS = ChartSpec(
    chart_id="alerts",
    title="Stored alerts, newest first",
    query=indicators.alerts,
    kind="table",
    x="kind",
    y="value",
    note="Raised by the alert check (POST /v1/monitoring/alerts/check or fedrisk monitor); "
    "drift and performance alerts recommend retraining.",
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
        (PSI_TREND, PSI_BANDS, FEATURE_CSI, CSI_TREND),
        needs_outcomes=True,
        intro="Score PSI and per-feature CSI against the release's reference distribution.",
    ),
    PageSpec(
        "performance",
        "Performance",
        (BAD_RATE_BY_BAND, DISCRIMINATION),
        needs_outcomes=True,
        intro="Realised bad rate by score band, AUC and KS on matured loans.",
    ),
    PageSpec(
        "vintages",
        "Vintages",
        (VINTAGES, ROLL_RATES),
        needs_outcomes=True,
        intro="Bad rate by month on book for each origination month; roll rates.",
    ),
    PageSpec(
        "direction",
        "Direction analysis",
        (DIRECTION, RISK_RETURN),
        needs_outcomes=True,
        intro="Overdue amount and rate by industry, purpose, customer type and region.",
    ),
    PageSpec(
        "alerts",
        "Alerts",
        (ALERTS,),
        needs_outcomes=True,
        intro="PSI, feature CSI, AUC drop, segment delinquency and B-card warning alerts.",
    ),
    PageSpec(
        "models",
        "Models",
        (DECISIONS_BY_MODEL, DISCRIMINATION, CHAMPION_CHALLENGER),
        intro="Champion and challenger per stage, the signed releases they come from.",
    ),
)
"""Every page, in navigation order."""

PAGES_BY_SLUG: dict[str, PageSpec] = {page.slug: page for page in PAGES}
CHARTS: dict[str, ChartSpec] = {chart.chart_id: chart for page in PAGES for chart in page.charts}
"""Every chart by id (the CSV endpoint's lookup)."""
