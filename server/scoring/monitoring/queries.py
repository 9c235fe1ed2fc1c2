"""The monitoring SQL: SQLAlchemy Core queries that run unchanged on SQLite and PostgreSQL.

Every aggregation happens in the database; Python only finishes ratios and statistics on the
few aggregated rows it gets back (one per band, score, month or segment).

Definitions
-----------
- A loan is **bad** once a month shows 90+ days past due or a charge-off.
- A loan has **matured** when it has ``window`` months on book, or went bad within them; its
  label is "bad within the first ``window`` months".
- **Active** in a month: a balance outstanding or charged off that month. **Overdue**: active
  with 1+ days past due. **30+**: active with 30+ days past due.
- Net yield of a segment: (interest and fees - charge-offs + recoveries) / principal; loss rate:
  (charge-offs - recoveries) / principal; both over every month recorded so far.

The per-loan figures (months on book, first bad month, sums of income, charge-offs and
recoveries) come from the ``loans`` columns the import keeps, so the views read one row per
loan rather than aggregating every month of every loan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import ColumnElement, Select, and_, case, cast, func, literal, or_, select
from sqlalchemy import String as SqlString
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased

from fedrisk.release.reference import FeatureReference, ScoreReference
from server.scoring.db.tables import (
    decisions,
    feature_bin_counts,
    loans,
    outcomes,
    review_items,
)
from server.scoring.monitoring.models import (
    BandPerformance,
    ChampionChallenger,
    CsiBin,
    CsiPoint,
    CsiResult,
    DecisionMixRow,
    Dimension,
    Direction,
    Discrimination,
    DrillDown,
    LoanRow,
    PsiBand,
    PsiPoint,
    PsiResult,
    RatePoint,
    RollRates,
    SegmentRow,
    VintageCurve,
)
from server.scoring.monitoring.statistics import (
    auc_from_groups,
    delong_variance,
    ks_from_groups,
    normal_quantile,
    psi_from_shares,
    ratio,
)
from server.scoring.outcomes import add_months, is_bad_month, months_between

WINDOW: Final = 12
VERDICTS: Final = ("approve", "decline")
"""Decisions a person's review can confirm or override."""
BUCKETS: Final = ("current", "1-29", "30-59", "60-89", "90+")
BUCKET_LOWER: Final = (0, 1, 30, 60, 90)


def month_of(column: Any) -> ColumnElement[str]:
    """``YYYY-MM`` of an ISO timestamp column."""
    return func.substr(column, 1, 7)


def latest_month(connection: Connection) -> str | None:
    """The latest calendar month with outcomes (the default ``as_of``)."""
    value = connection.execute(select(func.max(outcomes.c.month))).scalar()
    return None if value is None else str(value)


def _band(column: Any, edges: Sequence[float]) -> ColumnElement[int]:
    """Band index of a PD column: the number of ``edges`` that are ``<=`` it."""
    if not edges:
        return literal(0)
    return case(*((column < edge, i) for i, edge in enumerate(edges)), else_=len(edges))


def _bounds(reference: ScoreReference, band: int) -> tuple[float, float]:
    edges = [0.0, *reference.pd_edges, 1.0]
    return edges[band], edges[band + 1]


_is_bad = is_bad_month()


# ------------------------------------------------------------------------------ decisions
def decision_mix(connection: Connection) -> list[DecisionMixRow]:
    """Application decisions by month and outcome, with the review override rate by month of
    resolution: the share of resolved reviews (manual reviews and applicants' human-review
    requests, resolved approve or decline) whose resolution differs from the model's own
    decision. A referral from the score's review band carries no automated verdict to
    override, so it is left out (as on the dashboard's overview)."""
    month = month_of(decisions.c.created_at)
    counts: dict[str, dict[str, int]] = {}
    for row in connection.execute(
        select(month.label("m"), decisions.c.outcome, func.count().label("n"))
        .where(decisions.c.stage == "application")
        .group_by(month, decisions.c.outcome)
    ):
        counts.setdefault(row.m, {})[row.outcome] = int(row.n)
    model_decision = decisions.c.details["model_decision"].as_string()
    reviews: dict[str, tuple[int, int]] = {}
    review_month = month_of(review_items.c.resolved_at)
    overridden = case((review_items.c.resolution != model_decision, 1), else_=0)
    for row in connection.execute(
        select(review_month.label("m"), func.count().label("n"), func.sum(overridden).label("o"))
        .join_from(review_items, decisions, decisions.c.decision_id == review_items.c.decision_id)
        .where(
            review_items.c.kind.in_(("manual_review", "human_review_request")),
            review_items.c.resolution.in_(VERDICTS),
            model_decision.in_(VERDICTS),
        )
        .group_by(review_month)
    ):
        reviews[row.m] = (int(row.n), int(row.o or 0))
    out = []
    for m in sorted(set(counts) | set(reviews)):
        by = counts.get(m, {})
        total = sum(by.values())
        resolved, overrides = reviews.get(m, (0, 0))
        out.append(
            DecisionMixRow(
                month=m,
                total=total,
                counts=by,
                shares={k: v / total for k, v in by.items()} if total else {},
                reviews_resolved=resolved,
                overrides=overrides,
                override_rate=ratio(overrides, resolved),
            )
        )
    return out


def _psi_counts(
    connection: Connection, reference: ScoreReference, *, month: str | None
) -> dict[tuple[str, int], int]:
    created = month_of(decisions.c.created_at)
    band = _band(decisions.c.probability, reference.pd_edges)
    query = (
        select(created.label("m"), band.label("band"), func.count().label("n"))
        .where(
            decisions.c.stage == "application",
            decisions.c.role == "champion",
            decisions.c.probability.is_not(None),
        )
        .group_by(created, band)
    )
    if month is not None:
        # a range on the indexed column, not a function of it
        query = query.where(
            decisions.c.created_at >= month, decisions.c.created_at < add_months(month, 1)
        )
    return {(r.m, int(r.band)): int(r.n) for r in connection.execute(query)}


def _psi_of(reference: ScoreReference, counts: dict[int, int], month: str | None) -> PsiResult:
    total = sum(counts.values())
    shares = [counts.get(i, 0) / total if total else 0.0 for i in range(len(reference.shares))]
    bands = [
        PsiBand(
            band=i,
            pd_low=_bounds(reference, i)[0],
            pd_high=_bounds(reference, i)[1],
            expected=reference.shares[i],
            actual=shares[i],
            count=counts.get(i, 0),
        )
        for i in range(len(reference.shares))
    ]
    value = psi_from_shares(reference.shares, shares) if total else None
    return PsiResult(month=month, psi=value, count=total, bands=bands)


def score_psi(connection: Connection, reference: ScoreReference, *, month: str) -> PsiResult:
    """PSI of the champion's application PDs decided in ``month`` against the reference bands."""
    counts = _psi_counts(connection, reference, month=month)
    return _psi_of(reference, {band: n for (_, band), n in counts.items()}, month)


def psi_trend(connection: Connection, reference: ScoreReference) -> list[PsiPoint]:
    """PSI of every decision month."""
    by_month: dict[str, dict[int, int]] = {}
    for (m, band), n in _psi_counts(connection, reference, month=None).items():
        by_month.setdefault(m, {})[band] = n
    points = []
    for m in sorted(by_month):
        result = _psi_of(reference, by_month[m], m)
        if result.psi is not None:
            points.append(PsiPoint(month=m, psi=result.psi, count=result.count))
    return points


def _csi_counts(
    connection: Connection, reference: ScoreReference, *, month: str | None
) -> dict[tuple[str, str, int], int]:
    """Champion applications by decision month, reference feature and bin, read from the
    ``feature_bin_counts`` rollup the writer keeps (a few rows per month, not every decision's
    bins)."""
    counts = feature_bin_counts
    query = select(counts.c.month, counts.c.feature, counts.c.bin, counts.c.n).where(
        counts.c.stage == "application",
        counts.c.role == "champion",
        counts.c.feature.in_([f.name for f in reference.features]),
    )
    if month is not None:
        query = query.where(counts.c.month == month)
    return {(r.month, r.feature, int(r.bin)): int(r.n) for r in connection.execute(query)}


def _csi_of(feature: FeatureReference, counts: dict[int, int], month: str | None) -> CsiResult:
    # a bin outside the reference (a decision binned by another release) is not comparable
    counts = {b: n for b, n in counts.items() if 0 <= b < len(feature.shares)}
    total = sum(counts.values())
    shares = [counts.get(i, 0) / total if total else 0.0 for i in range(len(feature.shares))]
    return CsiResult(
        feature=feature.name,
        month=month,
        csi=psi_from_shares(feature.shares, shares) if total else None,
        count=total,
        bins=[
            CsiBin(
                bin=i,
                label=feature.labels[i],
                expected=feature.shares[i],
                actual=shares[i],
                count=counts.get(i, 0),
            )
            for i in range(len(feature.shares))
        ],
    )


def feature_csi(
    connection: Connection, reference: ScoreReference, *, month: str
) -> list[CsiResult]:
    """CSI of every reference feature over the champion's applications decided in ``month``
    (the same formula and floor as the score PSI)."""
    by_feature: dict[str, dict[int, int]] = {}
    for (_, feature, b), n in _csi_counts(connection, reference, month=month).items():
        by_feature.setdefault(feature, {})[b] = n
    return [_csi_of(f, by_feature.get(f.name, {}), month) for f in reference.features]


def csi_trend(connection: Connection, reference: ScoreReference) -> list[CsiPoint]:
    """CSI of every reference feature in every decision month with binned applications."""
    grouped: dict[tuple[str, str], dict[int, int]] = {}
    for (m, feature, b), n in _csi_counts(connection, reference, month=None).items():
        grouped.setdefault((feature, m), {})[b] = n
    points = []
    for f in reference.features:
        for m in sorted(m for name, m in grouped if name == f.name):
            result = _csi_of(f, grouped[(f.name, m)], m)
            if result.csi is not None:
                points.append(CsiPoint(feature=f.name, month=m, csi=result.csi, count=result.count))
    return points


def latest_decision_month(connection: Connection) -> str | None:
    """The latest month with application decisions."""
    value = connection.execute(
        select(func.max(decisions.c.created_at)).where(decisions.c.stage == "application")
    ).scalar()
    return None if value is None else str(value)[:7]


# ------------------------------------------------------------------------------ performance
def _matured(window: int) -> Select[Any]:
    """Matured loans (from the per-loan performance to date) with their decision's score."""
    bad = case((loans.c.first_bad_mob <= window, 1), else_=0)
    return (
        select(
            loans.c.decision_id,
            bad.label("bad"),
            decisions.c.score,
            decisions.c.probability,
            decisions.c.role,
        )
        .join_from(loans, decisions, decisions.c.decision_id == loans.c.decision_id)
        .where(or_(loans.c.months_on_book >= window, loans.c.first_bad_mob <= window))
    )


def _score_groups(
    connection: Connection, window: int
) -> dict[str, tuple[list[float], list[int], list[int]]]:
    matured = _matured(window).subquery("matured")
    query = (
        select(
            matured.c.role,
            matured.c.score,
            func.sum(matured.c.bad).label("bads"),
            func.count().label("n"),
        )
        .where(matured.c.score.is_not(None))
        .group_by(matured.c.role, matured.c.score)
    )
    groups: dict[str, tuple[list[float], list[int], list[int]]] = {}
    for row in connection.execute(query):
        scores, bads, goods = groups.setdefault(row.role, ([], [], []))
        scores.append(float(row.score))
        bads.append(int(row.bads))
        goods.append(int(row.n) - int(row.bads))
    return groups


def _discrimination(scores: list[float], bads: list[int], goods: list[int]) -> Discrimination:
    return Discrimination(
        loans=sum(bads) + sum(goods),
        bads=sum(bads),
        auc=auc_from_groups(scores, bads, goods),
        ks=ks_from_groups(scores, bads, goods),
        auc_variance=delong_variance(scores, bads, goods),
    )


def matured_discrimination(
    connection: Connection, *, window: int = WINDOW, role: str = "champion"
) -> Discrimination:
    """AUC and KS of the score on matured loans decided by ``role``."""
    scores, bads, goods = _score_groups(connection, window).get(role, ([], [], []))
    return _discrimination(scores, bads, goods)


def expected_auc(
    connection: Connection, *, window: int = WINDOW, role: str = "champion"
) -> float | None:
    """The AUC the score would reach on the same matured loans if each loan's stored PD were
    its true chance of going bad: every loan counts ``pd`` as a bad and ``1 - pd`` as a good.

    The baseline of the AUC-drop alert. A book holds only the loans that were approved, so its
    realised AUC sits below the release's (measured on every applicant) without any drift;
    against this baseline, only a loss of ranking on this very population counts.
    """
    matured = _matured(window).subquery("matured")
    rows = connection.execute(
        select(
            matured.c.score,
            func.sum(matured.c.probability).label("pd_sum"),
            func.count().label("n"),
        )
        .where(
            matured.c.role == role,
            matured.c.score.is_not(None),
            matured.c.probability.is_not(None),
        )
        .group_by(matured.c.score)
    ).all()
    return auc_from_groups(
        [float(r.score) for r in rows],
        [float(r.pd_sum) for r in rows],
        [int(r.n) - float(r.pd_sum) for r in rows],
    )


def champion_challenger(
    connection: Connection, *, window: int = WINDOW, confidence: float = 0.95
) -> ChampionChallenger:
    """Challenger AUC minus champion AUC on matured loans, with a DeLong interval (the two
    models decided disjoint applicants, so the variances add)."""
    groups = _score_groups(connection, window)
    champion = _discrimination(*groups.get("champion", ([], [], [])))
    challenger = _discrimination(*groups.get("challenger", ([], [], [])))
    difference = low = high = None
    better = None
    if champion.auc is not None and challenger.auc is not None:
        difference = challenger.auc - champion.auc
        if champion.auc_variance is not None and challenger.auc_variance is not None:
            half = normal_quantile(confidence) * (
                (champion.auc_variance + challenger.auc_variance) ** 0.5
            )
            low, high = difference - half, difference + half
            better = low > 0
    return ChampionChallenger(
        champion=champion,
        challenger=challenger,
        auc_difference=difference,
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        challenger_better=better,
    )


def bad_rate_by_band(
    connection: Connection, reference: ScoreReference, *, window: int = WINDOW
) -> list[BandPerformance]:
    """Matured champion loans by reference PD band: realised against reference bad rate."""
    matured = _matured(window).subquery("matured")
    band = _band(matured.c.probability, reference.pd_edges)
    rows = {
        int(r.band): r
        for r in connection.execute(
            select(
                band.label("band"),
                func.count().label("n"),
                func.sum(matured.c.bad).label("bads"),
                func.avg(matured.c.probability).label("mean_pd"),
            )
            .where(matured.c.role == "champion", matured.c.probability.is_not(None))
            .group_by(band)
        )
    }
    out = []
    for i in range(len(reference.shares)):
        row = rows.get(i)
        n = 0 if row is None else int(row.n)
        bads = 0 if row is None else int(row.bads)
        low, high = _bounds(reference, i)
        out.append(
            BandPerformance(
                band=i,
                pd_low=low,
                pd_high=high,
                loans=n,
                bads=bads,
                bad_rate=ratio(bads, n),
                mean_pd=None if row is None else float(row.mean_pd),
                reference_bad_rate=reference.bad_rates[i],
            )
        )
    return out


def vintages(connection: Connection, *, as_of: str) -> list[VintageCurve]:
    """Cumulative bad rate by month on book for each origination month, up to the months each
    cohort has been on book at ``as_of``."""
    sizes = {
        r.originated: int(r.n)
        for r in connection.execute(
            select(loans.c.originated, func.count().label("n")).group_by(loans.c.originated)
        )
    }
    bads: dict[str, dict[int, int]] = {}
    for row in connection.execute(
        select(loans.c.originated, loans.c.first_bad_mob, func.count().label("n"))
        .where(loans.c.first_bad_mob.is_not(None))
        .group_by(loans.c.originated, loans.c.first_bad_mob)
    ):
        bads.setdefault(row.originated, {})[int(row.first_bad_mob)] = int(row.n)
    curves = []
    for originated in sorted(sizes):
        age = months_between(originated, as_of)
        if age < 1:
            continue
        n = sizes[originated]
        cumulative, rates = 0, []
        for mob in range(1, age + 1):
            cumulative += bads.get(originated, {}).get(mob, 0)
            rates.append(cumulative / n)
        curves.append(VintageCurve(originated=originated, loans=n, bad_rate_by_mob=rates))
    return curves


def _bucket(dpd: Any) -> ColumnElement[int]:
    return case(
        *((dpd >= lower, i) for i, lower in reversed(list(enumerate(BUCKET_LOWER)))), else_=0
    )


def roll_rates(connection: Connection, *, as_of: str, months: int = 1) -> RollRates:
    """Bucket-to-bucket transitions of every loan between consecutive months, for the
    ``months`` transitions ending at ``as_of``."""
    before, after = aliased(outcomes, name="before"), aliased(outcomes, name="after")
    first = add_months(as_of, -(months - 1))
    src, dst = _bucket(before.c.dpd), _bucket(after.c.dpd)
    counts = [[0] * len(BUCKETS) for _ in BUCKETS]
    for row in connection.execute(
        select(src.label("src"), dst.label("dst"), func.count().label("n"))
        .join_from(
            after,
            before,
            and_(
                before.c.decision_id == after.c.decision_id,
                before.c.month_on_book == after.c.month_on_book - 1,
            ),
        )
        # from loans still owing: not paid off, not charged off before. The range on
        # before.month is implied (month = origination + month on book) but lets PostgreSQL
        # read both sides from the covering month index instead of one lookup per loan
        .where(
            after.c.month >= first,
            after.c.month <= as_of,
            before.c.month >= add_months(first, -1),
            before.c.month <= add_months(as_of, -1),
            before.c.balance > 0,
        )
        .group_by(src, dst)
    ):
        counts[int(row.src)][int(row.dst)] = int(row.n)
    rates = [[ratio(n, sum(r)) for n in r] for r in counts]
    return RollRates(
        buckets=list(BUCKETS),
        from_month=add_months(first, -1),
        to_month=as_of,
        counts=counts,
        rates=rates,
    )


# ------------------------------------------------------------------------------ direction
_active = or_(outcomes.c.balance > 0, outcomes.c.charge_off > 0)


def _segment_name(dims: Sequence[Dimension], values: Sequence[str]) -> str:
    return " × ".join(f"{d}={v}" for d, v in zip(dims, values, strict=True))


def direction(
    connection: Connection,
    dims: Sequence[Dimension],
    *,
    as_of: str,
    filters: dict[str, str] | None = None,
    high_default_factor: float = 1.5,
) -> Direction:
    """Overdue loans and amount at ``as_of`` and risk-return to date, by ``dims`` (one or two
    of industry, purpose, customer type, region), optionally inside ``filters`` (drill-down).

    A segment is "high-default but profitable" when its default rate is at least
    ``high_default_factor`` times the portfolio's and its net yield is still positive.
    """
    keys = [loans.c[d] for d in dims]
    where = [loans.c[k] == v for k, v in (filters or {}).items()]
    overdue = and_(_active, outcomes.c.dpd > 0)
    snapshot = {
        tuple(r[: len(dims)]): r
        for r in connection.execute(
            select(
                *keys,
                func.sum(case((_active, 1), else_=0)).label("active"),
                func.sum(case((overdue, 1), else_=0)).label("overdue"),
                func.sum(case((overdue, outcomes.c.balance), else_=0.0)).label("overdue_amount"),
                func.sum(case((_active, outcomes.c.balance), else_=0.0)).label("balance"),
            )
            .join_from(outcomes, loans, loans.c.decision_id == outcomes.c.decision_id)
            .where(outcomes.c.month == as_of, *where)
            .group_by(*keys)
        )
    }
    lifetime = {
        tuple(r[: len(dims)]): r
        for r in connection.execute(
            select(
                *keys,
                func.count().label("loans"),
                func.sum(loans.c.principal).label("principal"),
                func.sum(loans.c.income).label("income"),
                func.sum(loans.c.charged_off).label("charge_off"),
                func.sum(loans.c.recovered).label("recoveries"),
                func.sum(case((loans.c.first_bad_mob.is_not(None), 1), else_=0)).label("bads"),
            )
            .where(*where)
            .group_by(*keys)
        )
    }
    all_loans = sum(int(r.loans) for r in lifetime.values())
    all_bads = sum(int(r.bads) for r in lifetime.values())
    portfolio_default = ratio(all_bads, all_loans)
    rows = []
    for key in sorted(lifetime):
        life, snap = lifetime[key], snapshot.get(key)
        principal = float(life.principal)
        net_loss = float(life.charge_off) - float(life.recoveries)
        default_rate = ratio(int(life.bads), int(life.loans))
        net_yield = ratio(float(life.income) - net_loss, principal)
        active = 0 if snap is None else int(snap.active)
        overdue_n = 0 if snap is None else int(snap.overdue)
        amount = 0.0 if snap is None else float(snap.overdue_amount)
        rows.append(
            SegmentRow(
                segment=_segment_name(dims, [str(k) for k in key]),
                tags={d: str(k) for d, k in zip(dims, key, strict=True)},
                loans=int(life.loans),
                active_loans=active,
                overdue_loans=overdue_n,
                overdue_rate=ratio(overdue_n, active),
                overdue_amount=amount,
                overdue_amount_rate=ratio(amount, 0.0 if snap is None else float(snap.balance)),
                principal=principal,
                default_rate=default_rate,
                loss_rate=ratio(net_loss, principal),
                income_rate=ratio(float(life.income), principal),
                net_yield=net_yield,
                high_default_profitable=bool(
                    default_rate is not None
                    and portfolio_default is not None
                    and default_rate >= high_default_factor * portfolio_default
                    and net_yield is not None
                    and net_yield > 0
                ),
            )
        )
    return Direction(
        as_of=as_of, dimensions=list(dims), portfolio_default_rate=portfolio_default, rows=rows
    )


def drill_down(
    connection: Connection,
    *,
    as_of: str,
    filters: dict[str, str],
    limit: int = 100,
    offset: int = 0,
) -> DrillDown:
    """The loans of a segment at ``as_of``, most days past due first (loan-level data)."""
    where = [outcomes.c.month == as_of, *(loans.c[k] == v for k, v in filters.items())]
    base = select(outcomes.c.decision_id).join_from(
        outcomes, loans, loans.c.decision_id == outcomes.c.decision_id
    )
    total = connection.execute(
        select(func.count()).select_from(base.where(*where).subquery())
    ).scalar_one()
    query = (
        select(
            loans,
            outcomes.c.month_on_book,
            outcomes.c.dpd,
            outcomes.c.balance,
            decisions.c.score,
            decisions.c.probability,
        )
        .join_from(outcomes, loans, loans.c.decision_id == outcomes.c.decision_id)
        .join(decisions, decisions.c.decision_id == loans.c.decision_id)
        .where(*where)
        .order_by(outcomes.c.dpd.desc(), outcomes.c.balance.desc(), loans.c.decision_id)
        .limit(limit)
        .offset(offset)
    )
    fields = set(LoanRow.model_fields)
    rows = [
        LoanRow(**{k: v for k, v in r._mapping.items() if k in fields})
        for r in connection.execute(query)
    ]
    return DrillDown(as_of=as_of, filters=dict(filters), total=int(total), loans=rows)


def delinquency_trend(
    connection: Connection, dim: Dimension | None, *, as_of: str, months: int = 3
) -> dict[str, list[RatePoint]]:
    """30+ rate of each value of ``dim`` (of the whole portfolio, key ``all``, for None) in the
    ``months`` months ending at ``as_of``."""
    first = add_months(as_of, -(months - 1))
    late = and_(_active, outcomes.c.dpd >= 30)
    value = literal("all") if dim is None else loans.c[dim]
    query = select(
        value.label("value"),
        outcomes.c.month,
        func.sum(case((_active, 1), else_=0)).label("active"),
        func.sum(case((late, 1), else_=0)).label("late"),
    ).where(outcomes.c.month >= first, outcomes.c.month <= as_of)
    if dim is not None:
        query = query.join_from(outcomes, loans, loans.c.decision_id == outcomes.c.decision_id)
        query = query.group_by(loans.c[dim], outcomes.c.month)
    else:
        query = query.group_by(outcomes.c.month)
    out: dict[str, list[RatePoint]] = {}
    for row in connection.execute(query):
        active = int(row.active)
        if active:
            out.setdefault(str(row.value), []).append(
                RatePoint(month=row.month, rate=int(row.late) / active, count=active)
            )
    return {k: sorted(v, key=lambda p: p.month) for k, v in out.items()}


def bcard_warning_rate(connection: Connection) -> list[RatePoint]:
    """Share of B-card decisions with at least one early warning, by month."""
    month = month_of(decisions.c.created_at)
    warned = case((cast(decisions.c.rules_hit, SqlString) != "[]", 1), else_=0)
    return [
        RatePoint(month=r.m, rate=int(r.w) / int(r.n), count=int(r.n))
        for r in connection.execute(
            select(month.label("m"), func.count().label("n"), func.sum(warned).label("w"))
            .where(decisions.c.stage == "behaviour")
            .group_by(month)
            .order_by(month)
        )
    ]


def count_outcomes(connection: Connection) -> int:
    """Plain ``count(*)`` of ``outcomes`` (the benchmark's yardstick)."""
    return int(connection.execute(select(func.count()).select_from(outcomes)).scalar_one())
