"""Typed results of the monitoring queries (pydantic, ``extra="forbid"``): one shape for the
JSON API, the dashboard and the static report."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Dimension = Literal["industry", "purpose", "customer_type", "region"]
DIMENSIONS: tuple[Dimension, ...] = ("industry", "purpose", "customer_type", "region")
Severity = Literal["info", "warning", "critical"]


class Result(BaseModel):
    """Base of every monitoring result."""

    model_config = ConfigDict(extra="forbid")


class DecisionMixRow(Result):
    """Application decisions of one month by outcome, and its review override rate."""

    month: str
    total: int
    counts: dict[str, int]
    shares: dict[str, float]
    reviews_resolved: int
    overrides: int
    override_rate: float | None


class PsiBand(Result):
    """One PD band of the PSI: its bounds, the reference share and the monitored share."""

    band: int
    pd_low: float
    pd_high: float
    expected: float
    actual: float
    count: int


class PsiResult(Result):
    """Score PSI of one month's application decisions against the artifact's reference."""

    month: str | None
    psi: float | None
    count: int
    bands: list[PsiBand]


class PsiPoint(Result):
    """PSI of one month (the drift trend)."""

    month: str
    psi: float
    count: int


class CsiBin(Result):
    """One reference bin of a feature: its label, the reference share and the monitored one."""

    bin: int
    label: str
    expected: float
    actual: float
    count: int


class CsiResult(Result):
    """CSI of one feature over one month's champion applications against the release's bins."""

    feature: str
    month: str | None
    csi: float | None
    count: int
    bins: list[CsiBin]


class CsiPoint(Result):
    """CSI of one feature in one month (the per-feature drift trend)."""

    feature: str
    month: str
    csi: float
    count: int


class BandPerformance(Result):
    """Matured loans of one PD band: realised bad rate against the reference's."""

    band: int
    pd_low: float
    pd_high: float
    loans: int
    bads: int
    bad_rate: float | None
    mean_pd: float | None
    reference_bad_rate: float | None


class Discrimination(Result):
    """AUC and KS of the score on matured loans (bad: 90+ days past due or charged off within
    the performance window)."""

    loans: int
    bads: int
    auc: float | None
    ks: float | None
    auc_variance: float | None = None


class VintageCurve(Result):
    """Cumulative bad rate of one origination month by month on book."""

    originated: str
    loans: int
    bad_rate_by_mob: list[float] = Field(description="index 0 is month on book 1")


class RollRates(Result):
    """Transitions between delinquency buckets from one month to the next."""

    buckets: list[str]
    from_month: str | None
    to_month: str | None
    counts: list[list[int]]
    rates: list[list[float | None]]


class ChampionChallenger(Result):
    """Champion against challenger on matured loans: AUC difference with a DeLong interval."""

    champion: Discrimination
    challenger: Discrimination
    auc_difference: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    challenger_better: bool | None


class SegmentRow(Result):
    """One segment of the direction analysis: overdue at ``as_of`` and lifetime risk-return."""

    segment: str
    tags: dict[str, str]
    loans: int
    active_loans: int
    overdue_loans: int
    overdue_rate: float | None
    overdue_amount: float
    overdue_amount_rate: float | None
    principal: float
    default_rate: float | None
    loss_rate: float | None
    income_rate: float | None
    net_yield: float | None
    high_default_profitable: bool


class Direction(Result):
    """Direction analysis over one or two crossed dimensions at month ``as_of``."""

    as_of: str | None
    dimensions: list[Dimension]
    portfolio_default_rate: float | None
    rows: list[SegmentRow]


class LoanRow(Result):
    """One loan of a drill-down (loan-level: ``risk_officer`` only)."""

    decision_id: str
    account_id: str | None
    originated: str
    principal: float
    industry: str
    purpose: str
    purpose_text: str
    customer_type: str
    region: str
    month_on_book: int
    dpd: int
    balance: float
    score: float | None
    probability: float | None


class DrillDown(Result):
    """The loans of one segment at ``as_of``, most overdue first."""

    as_of: str | None
    filters: dict[str, str]
    total: int
    loans: list[LoanRow]


class RatePoint(Result):
    """A rate in one month with its denominator."""

    month: str
    rate: float
    count: int


class Alert(Result):
    """A monitoring alert; drift and performance alerts carry ``retrain_recommended``."""

    kind: Literal["psi", "csi", "auc_drop", "segment_delinquency", "bcard_warning_spike"]
    severity: Severity
    subject: str
    as_of: str
    value: float
    threshold: float
    retrain_recommended: bool
    message: str
    evidence: dict[str, object]


class Summary(Result):
    """Everything ``fedrisk monitor`` writes and ``GET /v1/monitoring/summary`` answers."""

    as_of: str | None
    psi: float | None
    psi_trend: list[PsiPoint]
    csi: dict[str, float] = Field(
        default_factory=dict, description="feature -> CSI of the latest decision month"
    )
    csi_trend: list[CsiPoint] = Field(default_factory=list)
    auc_matured: float | None
    ks_matured: float | None
    release_auc: float | None
    expected_auc_matured: float | None = Field(
        default=None, description="the AUC the matured loans' own PDs promise (alert baseline)"
    )
    decision_mix: list[DecisionMixRow]
    bad_rate_by_band: list[BandPerformance]
    vintages: list[VintageCurve]
    roll_rates: RollRates
    champion_challenger: ChampionChallenger
    direction: list[SegmentRow]
    bcard_warning_rate: list[RatePoint]
    alerts: list[Alert]
