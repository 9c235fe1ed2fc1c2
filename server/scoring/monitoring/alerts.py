"""Alert rules over the monitoring indicators, the ``monitoring_alerts`` table and the webhook.

Rules (thresholds in :class:`AlertThresholds`):

- ``psi``: score PSI of the latest decision month >= 0.25 (toad/optbinning's "shifted" band);
- ``csi``: per-feature CSI of the latest decision month against the release's feature bins,
  critical with every feature >= 0.25, a warning with those in [0.1, 0.25) (the same bands);
- ``auc_drop``: AUC on matured loans at least 0.03 (and 1.645 standard errors) below the AUC
  their own PDs promise (the release's pooled AUC covers every applicant, an approved-only book
  ranks less well without drift);
- ``segment_delinquency``: a segment's 30+ rate rose two months in a row against the
  portfolio's (its excess over the portfolio's rate grew by 1 point or more each month), and is
  at least 1.25x the portfolio's in the last month;
- ``bcard_warning_spike``: the B-card early-warning rate of the last month is at least 1.5x the
  mean of the three before, and 5 points higher.

The drift and performance alerts (``psi``, critical ``csi``, ``auc_drop``) carry
``retrain_recommended`` with the evidence; the portfolio alerts point at a segment or a policy,
not at the model.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from itertools import pairwise

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from server.scoring.audit import utc_now
from server.scoring.db.tables import monitoring_alerts
from server.scoring.monitoring.models import Alert, CsiResult, Dimension, PsiResult, RatePoint

logger = logging.getLogger(__name__)


class AlertThresholds(BaseModel):
    """Thresholds of the alert rules."""

    model_config = ConfigDict(extra="forbid")

    psi: float = Field(default=0.25, gt=0)
    csi: float = Field(default=0.25, gt=0)
    csi_warning: float = Field(default=0.1, gt=0)
    auc_drop: float = Field(default=0.03, gt=0)
    auc_min_z: float = Field(
        default=1.645, ge=0, description="the drop in DeLong standard errors (one-sided 95 %)"
    )
    segment_min_active: int = Field(default=50, ge=1)
    segment_min_rise: float = Field(default=0.01, ge=0, description="excess 30+ rate, per month")
    segment_min_ratio: float = Field(default=1.25, ge=1, description="last month vs portfolio")
    bcard_spike_factor: float = Field(default=1.5, gt=1)
    bcard_min_increase: float = Field(default=0.05, ge=0)


def psi_alert(result: PsiResult, *, as_of: str, limits: AlertThresholds) -> Alert | None:
    """A critical alert when the PSI reaches ``limits.psi``."""
    if result.psi is None or result.psi < limits.psi:
        return None
    shifted = sorted(result.bands, key=lambda b: abs(b.actual - b.expected), reverse=True)[:3]
    return Alert(
        kind="psi",
        severity="critical",
        subject=f"score:{result.month}",
        as_of=as_of,
        value=result.psi,
        threshold=limits.psi,
        retrain_recommended=True,
        message=f"score PSI {result.psi:.3f} in {result.month} >= {limits.psi}: the applicant "
        "population has shifted from the release's; retrain recommended",
        evidence={
            "month": result.month,
            "applications": result.count,
            "most_shifted_bands": [b.model_dump() for b in shifted],
        },
    )


def csi_alerts(results: Sequence[CsiResult], *, as_of: str, limits: AlertThresholds) -> list[Alert]:
    """A critical alert naming every feature whose CSI reached ``limits.csi`` (retrain
    recommended), and a warning naming those between ``limits.csi_warning`` and it."""
    alerts = []
    levels = (
        ("critical", limits.csi, math.inf, "features"),
        ("warning", limits.csi_warning, limits.csi, "features-watch"),
    )
    for severity, low, high, subject in levels:
        hit = sorted(
            (r for r in results if r.csi is not None and low <= r.csi < high),
            key=lambda r: -(r.csi or 0.0),
        )
        if not hit:
            continue
        month = hit[0].month
        named = ", ".join(f"{r.feature} {r.csi:.3f}" for r in hit)
        critical = severity == "critical"
        alerts.append(
            Alert(
                kind="csi",
                severity="critical" if critical else "warning",
                subject=f"{subject}:{month}",
                as_of=as_of,
                value=max(r.csi or 0.0 for r in hit),
                threshold=low,
                retrain_recommended=critical,
                message=(
                    f"feature CSI >= {low} in {month}: {named}; "
                    + (
                        "these inputs have shifted from the release population; retrain recommended"
                        if critical
                        else "watch these inputs"
                    )
                ),
                evidence={
                    "month": month,
                    "features": {r.feature: r.csi for r in hit},
                    "most_shifted_bins": {
                        r.feature: [
                            b.model_dump()
                            for b in sorted(
                                r.bins, key=lambda b: abs(b.actual - b.expected), reverse=True
                            )[:3]
                        ]
                        for r in hit
                    },
                },
            )
        )
    return alerts


def auc_alert(
    auc: float | None,
    expected: float | None,
    *,
    release_auc: float | None,
    variance: float | None,
    loans: int,
    as_of: str,
    limits: AlertThresholds,
) -> Alert | None:
    """A critical alert when the matured AUC fell ``limits.auc_drop`` below the AUC expected of
    the same loans from their own PDs (:func:`~server.scoring.monitoring.queries.expected_auc`),
    and the drop is beyond ``limits.auc_min_z`` DeLong standard errors.

    Not the release's AUC: that one is measured over every applicant, while matured loans are
    the approved ones only, whose narrower PD range ranks less well without any drift.
    """
    if auc is None or expected is None:
        return None
    drop = expected - auc
    spread = None if variance is None else math.sqrt(max(variance, 0.0))
    if drop < limits.auc_drop or (spread is not None and drop < limits.auc_min_z * spread):
        return None
    return Alert(
        kind="auc_drop",
        severity="critical",
        subject="score",
        as_of=as_of,
        value=drop,
        threshold=limits.auc_drop,
        retrain_recommended=True,
        message=f"AUC on matured loans {auc:.3f} is {drop:.3f} below the {expected:.3f} their "
        "own PDs promise; the score ranks this book worse than it should: retrain recommended",
        evidence={
            "auc_matured": auc,
            "expected_auc": expected,
            "release_auc": release_auc,
            "standard_error": spread,
            "matured_loans": loans,
        },
    )


def segment_alerts(
    trends: Mapping[Dimension, Mapping[str, Sequence[RatePoint]]],
    portfolio: Sequence[RatePoint],
    *,
    as_of: str,
    limits: AlertThresholds,
) -> list[Alert]:
    """Warnings for segments whose 30+ rate rose against the portfolio's two consecutive months
    (``trends``: dimension -> value -> the last three months; ``portfolio``: the same months).

    The rise is measured as the excess over the portfolio's rate, so an ageing book whose every
    segment drifts up together raises nothing.
    """
    overall = {p.month: p.rate for p in portfolio}
    alerts = []
    for dim, values in trends.items():
        for value, points in values.items():
            if len(points) < 3 or points[-1].month != as_of:
                continue
            window = points[-3:]
            if any(p.month not in overall for p in window):
                continue
            if min(p.count for p in window) < limits.segment_min_active:
                continue
            excess = [p.rate - overall[p.month] for p in window]
            rising = all(b - a >= limits.segment_min_rise for a, b in pairwise(excess))
            last_portfolio = overall[as_of]
            if not rising or window[-1].rate < limits.segment_min_ratio * last_portfolio:
                continue
            a, b, c = window
            alerts.append(
                Alert(
                    kind="segment_delinquency",
                    severity="warning",
                    subject=f"{dim}={value}",
                    as_of=as_of,
                    value=c.rate,
                    threshold=limits.segment_min_ratio * last_portfolio,
                    retrain_recommended=False,
                    message=f"30+ delinquency of {dim}={value} rose against the portfolio two "
                    f"months running: {a.rate:.1%} -> {b.rate:.1%} -> {c.rate:.1%} (portfolio "
                    f"{last_portfolio:.1%})",
                    evidence={
                        "dimension": dim,
                        "value": value,
                        "months": [p.model_dump() for p in window],
                        "portfolio_rates": [overall[p.month] for p in window],
                    },
                )
            )
    return alerts


def bcard_alert(points: Sequence[RatePoint], *, limits: AlertThresholds) -> Alert | None:
    """A warning when the latest month's B-card warning rate spikes over the three before."""
    if len(points) < 4:
        return None
    last, before = points[-1], points[-4:-1]
    baseline = sum(p.rate for p in before) / len(before)
    if (
        last.rate < baseline * limits.bcard_spike_factor
        or last.rate - baseline < limits.bcard_min_increase
    ):
        return None
    return Alert(
        kind="bcard_warning_spike",
        severity="warning",
        subject="bcard",
        as_of=last.month,
        value=last.rate,
        threshold=baseline * limits.bcard_spike_factor,
        retrain_recommended=False,
        message=f"B-card early-warning rate {last.rate:.1%} in {last.month} against "
        f"{baseline:.1%} in the three months before",
        evidence={"months": [p.model_dump() for p in points[-4:]], "baseline": baseline},
    )


def store_alerts(connection: Connection, alerts: Sequence[Alert]) -> list[Alert]:
    """Insert the alerts not stored yet (one per kind, subject and month); returns those new."""
    stored = {
        (r.kind, r.subject, r.as_of)
        for r in connection.execute(
            select(monitoring_alerts.c.kind, monitoring_alerts.c.subject, monitoring_alerts.c.as_of)
        )
    }
    new = [a for a in alerts if (a.kind, a.subject, a.as_of) not in stored]
    if new:
        now = utc_now()
        connection.execute(
            insert(monitoring_alerts),
            [{**a.model_dump(mode="json"), "created_at": now} for a in new],
        )
    return new


def stored_alerts(connection: Connection, *, limit: int = 500) -> list[Alert]:
    """The latest stored alerts, newest first."""
    fields = set(Alert.model_fields)
    return [
        Alert(**{k: v for k, v in r._mapping.items() if k in fields})
        for r in connection.execute(
            select(monitoring_alerts).order_by(monitoring_alerts.c.alert_id.desc()).limit(limit)
        )
    ]


def send_alerts(
    url: str, alerts: Sequence[Alert], *, attempts: int = 3, timeout: float = 10.0
) -> int:
    """POST each alert as JSON to ``url`` (retried); returns how many were delivered."""
    from server.scoring.anchor import WebhookSender

    if not alerts:
        return 0
    sender = WebhookSender(url, attempts=attempts)
    for alert in alerts:
        sender.send(
            json.dumps({"type": "fedrisk.monitoring.alert", **alert.model_dump(mode="json")})
        )
    sender.close(timeout=timeout)
    return sender.delivered
