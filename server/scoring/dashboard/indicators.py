"""The monitoring pages' chart data: the monitoring SQL's typed results as :class:`ChartData`.

Every number comes from :mod:`server.scoring.monitoring.queries` (computed in the database);
this module only lays the typed results out as rows, so the dashboard, the JSON API and
``fedrisk monitor`` agree. Indicators that need the release's reference bands (PSI, bad rate by
band) answer no rows when the champion's artifact carries none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, cast

from sqlalchemy.engine import Connection

from server.scoring.dashboard.charts import Cell, ChartData, ChartInputs
from server.scoring.monitoring import queries
from server.scoring.monitoring.alerts import AlertThresholds, stored_alerts
from server.scoring.monitoring.models import DIMENSIONS, Dimension, SegmentRow

DEFAULT_CROSS: Final[tuple[Dimension, Dimension]] = ("industry", "region")
"""The direction page's two dimensions unless the page's query string chooses others."""

PSI_COLUMNS = ("month", "psi", "applications")
CSI_COLUMNS = ("feature", "month", "csi", "band", "applications")
CSI_TREND_COLUMNS = ("feature", "month", "csi", "applications")
BAND_SHARE_COLUMNS = ("band", "pd_range", "distribution", "share", "applications")
BAND_COLUMNS = ("band", "pd_range", "loans", "bads", "bad_rate", "reference_bad_rate", "mean_pd")


def _pd_range(low: float, high: float) -> str:
    return f"{low:.3f}–{high:.3f}"


def crossed_dimensions(params: ChartInputs) -> tuple[Dimension, Dimension]:
    """The two dimensions the direction page crosses (``dim_a`` and ``dim_b`` of its query)."""
    first = params.params.get("dim_a", DEFAULT_CROSS[0])
    second = params.params.get("dim_b", DEFAULT_CROSS[1])
    for name, value in (("dim_a", first), ("dim_b", second)):
        if value not in DIMENSIONS:
            raise ValueError(f"{name} must be one of {list(DIMENSIONS)}; got {value!r}")
    if first == second:
        raise ValueError(f"dim_a and dim_b must differ; got {first!r} twice")
    return cast(Dimension, first), cast(Dimension, second)


def psi_trend(connection: Connection, inputs: ChartInputs) -> ChartData:
    """Score PSI of each decision month against the reference bands."""
    if inputs.reference is None:
        return ChartData(PSI_COLUMNS, ())
    points = queries.psi_trend(connection, inputs.reference)
    return ChartData(PSI_COLUMNS, tuple((p.month, p.psi, p.count) for p in points))


def psi_bands(connection: Connection, inputs: ChartInputs) -> ChartData:
    """The latest decision month's share of applications per PD band against the reference."""
    month = queries.latest_decision_month(connection)
    if inputs.reference is None or month is None:
        return ChartData(BAND_SHARE_COLUMNS, ())
    result = queries.score_psi(connection, inputs.reference, month=month)
    rows: list[tuple[Cell, ...]] = []
    for band in result.bands:
        span = _pd_range(band.pd_low, band.pd_high)
        rows.append((band.band, span, "reference", band.expected, None))
        rows.append((band.band, span, month, band.actual, band.count))
    return ChartData(BAND_SHARE_COLUMNS, tuple(rows))


def _csi_band(value: float) -> str:
    limits = AlertThresholds()
    if value >= limits.csi:
        return "shifted"
    return "watch" if value >= limits.csi_warning else "stable"


def feature_csi(connection: Connection, inputs: ChartInputs) -> ChartData:
    """CSI of each reference feature over the latest decision month, most shifted first."""
    month = queries.latest_decision_month(connection)
    if inputs.reference is None or not inputs.reference.features or month is None:
        return ChartData(CSI_COLUMNS, ())
    results = queries.feature_csi(connection, inputs.reference, month=month)
    scored = sorted((r for r in results if r.csi is not None), key=lambda r: -(r.csi or 0.0))
    return ChartData(
        CSI_COLUMNS,
        tuple((r.feature, r.month, r.csi, _csi_band(r.csi or 0.0), r.count) for r in scored),
    )


def csi_trend(connection: Connection, inputs: ChartInputs) -> ChartData:
    """CSI of each reference feature in each decision month."""
    if inputs.reference is None or not inputs.reference.features:
        return ChartData(CSI_TREND_COLUMNS, ())
    points = queries.csi_trend(connection, inputs.reference)
    return ChartData(CSI_TREND_COLUMNS, tuple((p.feature, p.month, p.csi, p.count) for p in points))


def bad_rate_by_band(connection: Connection, inputs: ChartInputs) -> ChartData:
    """Realised bad rate of matured champion loans by reference PD band."""
    if inputs.reference is None:
        return ChartData(BAND_COLUMNS, ())
    bands = queries.bad_rate_by_band(connection, inputs.reference)
    return ChartData(
        BAND_COLUMNS,
        tuple(
            (
                b.band,
                _pd_range(b.pd_low, b.pd_high),
                b.loans,
                b.bads,
                b.bad_rate,
                b.reference_bad_rate,
                b.mean_pd,
            )
            for b in bands
        ),
    )


def matured_discrimination(connection: Connection, _inputs: ChartInputs) -> ChartData:
    """AUC and KS on matured loans, champion and challenger."""
    versus = queries.champion_challenger(connection)
    rows = [
        (role, found.loans, found.bads, found.auc, found.ks)
        for role, found in (("champion", versus.champion), ("challenger", versus.challenger))
        if found.loans
    ]
    return ChartData(("role", "matured_loans", "bads", "auc", "ks"), tuple(rows))


def champion_challenger(connection: Connection, _inputs: ChartInputs) -> ChartData:
    """Challenger AUC minus champion AUC on matured loans with its DeLong interval."""
    versus = queries.champion_challenger(connection)
    columns = ("measure", "value", "ci_low", "ci_high", "confidence", "challenger_better")
    if versus.auc_difference is None:
        return ChartData(columns, ())
    better = None if versus.challenger_better is None else str(versus.challenger_better).lower()
    row = (
        "auc challenger - champion",
        versus.auc_difference,
        versus.ci_low,
        versus.ci_high,
        versus.confidence,
        better,
    )
    return ChartData(columns, (row,))


def vintage_curves(connection: Connection, _inputs: ChartInputs) -> ChartData:
    """Cumulative bad rate by month on book, one curve per origination month."""
    as_of = queries.latest_month(connection)
    columns = ("originated", "month_on_book", "bad_rate", "loans")
    if as_of is None:
        return ChartData(columns, ())
    rows = [
        (curve.originated, mob, rate, curve.loans)
        for curve in queries.vintages(connection, as_of=as_of)
        for mob, rate in enumerate(curve.bad_rate_by_mob, start=1)
    ]
    return ChartData(columns, tuple(rows))


def roll_rates(connection: Connection, _inputs: ChartInputs) -> ChartData:
    """Share of loans moving from each delinquency bucket to each other in the latest month."""
    as_of = queries.latest_month(connection)
    columns = ("from_bucket", "to_bucket", "loans", "rate")
    if as_of is None:
        return ChartData(columns, ())
    found = queries.roll_rates(connection, as_of=as_of)
    rows = [
        (src, dst, found.counts[i][j], found.rates[i][j])
        for i, src in enumerate(found.buckets)
        for j, dst in enumerate(found.buckets)
        if found.counts[i][j]
    ]
    return ChartData(columns, tuple(rows))


def _segment_chart(
    connection: Connection,
    inputs: ChartInputs,
    measures: tuple[str, ...],
    values: Callable[[SegmentRow], tuple[Cell, ...]],
) -> ChartData:
    """One row per crossed segment at the latest month: its tags, a short name, the month and
    ``values`` of its direction-analysis row (named ``measures``)."""
    as_of = queries.latest_month(connection)
    dims = list(crossed_dimensions(inputs))
    columns = (*dims, "cell", "as_of", *measures)
    if as_of is None:
        return ChartData(columns, ())
    found = queries.direction(connection, dims, as_of=as_of)
    return ChartData(
        columns,
        tuple(
            (*(r.tags[d] for d in dims), " × ".join(r.tags[d] for d in dims), as_of, *values(r))
            for r in found.rows
        ),
    )


def direction(connection: Connection, inputs: ChartInputs) -> ChartData:
    """Overdue loans, rate and amount at the latest month by two crossed dimensions."""
    measures = ("loans", "active_loans", "overdue_loans", "overdue_rate", "overdue_amount")
    return _segment_chart(
        connection,
        inputs,
        measures,
        lambda r: (r.loans, r.active_loans, r.overdue_loans, r.overdue_rate, r.overdue_amount),
    )


def risk_return(connection: Connection, inputs: ChartInputs) -> ChartData:
    """Loss rate against net yield per segment; marks the high-default but profitable ones."""
    measures = ("default_rate", "loss_rate", "net_yield", "high_default_profitable")
    return _segment_chart(
        connection,
        inputs,
        measures,
        lambda r: (
            r.default_rate,
            r.loss_rate,
            r.net_yield,
            "yes" if r.high_default_profitable else "no",
        ),
    )


def alerts(connection: Connection, _inputs: ChartInputs) -> ChartData:
    """The stored alerts, newest first."""
    columns = (
        "as_of",
        "kind",
        "severity",
        "subject",
        "value",
        "threshold",
        "retrain_recommended",
        "message",
    )
    rows = [
        (
            a.as_of,
            a.kind,
            a.severity,
            a.subject,
            a.value,
            a.threshold,
            "yes" if a.retrain_recommended else "no",
            a.message,
        )
        for a in stored_alerts(connection)
    ]
    return ChartData(columns, tuple(rows))


def drill_segment(row: Mapping[str, Cell]) -> dict[str, str]:
    """The loan-level page of one direction-analysis cell: its tags and month."""
    chosen: dict[str, str] = {d: str(row[d]) for d in DIMENSIONS if d in row}
    return {**chosen, "as_of": str(row["as_of"])}
