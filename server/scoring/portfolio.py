"""A realistic generated loan portfolio: decisions, booked loans and 12-24 months of outcomes.

Used by the tests, the demo and the monitoring benchmark. Each applicant has an industry, a loan
purpose with a free-text description (English or Chinese), a customer type, a region and an
income. The "released" champion model scores a PD from income, debt ratio and customer type;
the true monthly default hazard follows that PD and a segment effect the model does not see
(industry x purpose), so some segments default more than predicted. Approved loans then run
month by month: blips of 1-29 days past due that cure, and defaults that roll 30 -> 60 -> 90 ->
charge-off at 120 days, with partial recoveries afterwards.

``drift_region`` injects drift: that region's applicants originated from ``drift_from`` on earn
``1 - drift_income_drop`` of their income, which raises their PD (a score drift the PSI sees),
and in the last ``shock_months`` months the region's borrowers default ``shock_factor`` times
more often (a delinquency rise the direction analysis sees). ``concept_drift`` weakens the
link between the champion's score and the true risk from ``drift_from`` on (an AUC drop on
matured loans).

The generated release reference carries per-feature CSI bins as a federated release does
(:func:`fedrisk.release.reference.feature_reference` of the development sample's
:class:`fedrisk.ml.features.FeatureStats`), and every generated application decision stores its
bin per feature, as the service does; the raw feature values stay in :class:`Portfolio` only
(the tests' oracle).

All randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from fedrisk.data.schema import DatasetSchema, FeatureKind, FeatureSpec
from fedrisk.ml.features import FeatureStats
from fedrisk.ml.metrics import score_histograms
from fedrisk.release.reference import (
    ScoreReference,
    feature_reference,
    reference_from_histograms,
)
from server.scoring.audit import audited_transaction, canonical_json
from server.scoring.db.tables import decisions, loans
from server.scoring.outcomes import ImportReport, add_months, import_rows, months_between
from server.scoring.writer import DecisionWrite, write_decisions

FloatArray = npt.NDArray[np.float64]

REGIONS: Final = ("north", "south", "east", "west", "central")
REGION_WEIGHTS: Final = (0.2, 0.2, 0.25, 0.15, 0.2)
INDUSTRIES: Final = (
    "manufacturing",
    "retail",
    "construction",
    "hospitality",
    "technology",
    "agriculture",
    "transport",
    "healthcare",
)
CUSTOMER_TYPES: Final = ("salaried", "self_employed", "small_business", "student")
CUSTOMER_WEIGHTS: Final = (0.5, 0.2, 0.2, 0.1)
PURPOSES: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "home_renovation": (
        ("renovate the kitchen", "repair the roof", "new flooring for the flat"),
        ("装修厨房", "翻新房子的屋顶", "给公寓换新地板"),
    ),
    "education": (
        ("tuition for a master's degree", "professional certification course", "school fees"),
        ("支付研究生学费", "职业资格培训课程", "孩子的学费"),
    ),
    "working_capital": (
        ("buy inventory for the shop", "pay suppliers before the season", "cash flow for orders"),
        ("为店铺采购库存", "旺季前支付供应商货款", "周转订单资金"),
    ),
    "equipment": (
        ("buy a delivery van", "new machines for the workshop", "upgrade kitchen equipment"),
        ("购买送货车", "为车间购置新机器", "升级厨房设备"),
    ),
    "medical": (
        ("pay for surgery", "dental treatment", "hospital bills"),
        ("支付手术费用", "牙科治疗", "住院费用"),
    ),
    "consumption": (
        ("a new phone and laptop", "wedding expenses", "family holiday"),
        ("买新手机和电脑", "婚礼开销", "家庭旅游"),
    ),
}
# segment effects the champion does not model (log-odds of the true hazard)
INDUSTRY_EFFECT: Final = {
    "manufacturing": 0.0,
    "retail": 0.2,
    "construction": 0.5,
    "hospitality": 0.6,
    "technology": -0.4,
    "agriculture": 0.3,
    "transport": 0.1,
    "healthcare": -0.3,
}
PURPOSE_EFFECT: Final = {
    "home_renovation": -0.2,
    "education": 0.1,
    "working_capital": 0.3,
    "equipment": 0.0,
    "medical": 0.2,
    "consumption": 0.4,
}
CUSTOMER_EFFECT: Final = {
    "salaried": -0.3,
    "self_employed": 0.3,
    "small_business": 0.2,
    "student": 0.5,
}
# higher-risk purposes are priced higher: what makes some high-default segments profitable
PURPOSE_APR: Final = {
    "home_renovation": 0.08,
    "education": 0.10,
    "working_capital": 0.16,
    "equipment": 0.12,
    "medical": 0.14,
    "consumption": 0.28,
}
CHAMPION_ID: Final = "demo-lr-v1"
CHALLENGER_ID: Final = "demo-lr-v2"
APPROVE_BELOW: Final = 0.12
REVIEW_BELOW: Final = 0.2
SCORE_OFFSET: Final = 600.0
SCORE_FACTOR: Final = 20.0 / math.log(2.0)
"""Points: 600 at odds 1:1 (bad:good), 20 points to double the good:bad odds."""


FEATURE_SCHEMA: Final = DatasetSchema(
    name="demo-portfolio",
    id_column="applicant_id",
    target_column="bad",
    features=(
        FeatureSpec(
            name="income", kind=FeatureKind.NUMERIC, min=0.0, max=1_000_000.0, transform="log1p"
        ),
        FeatureSpec(name="debt_ratio", kind=FeatureKind.NUMERIC, min=0.0, max=1.0),
        FeatureSpec(name="customer_type", kind=FeatureKind.CATEGORICAL, categories=CUSTOMER_TYPES),
        FeatureSpec(name="region", kind=FeatureKind.CATEGORICAL, categories=REGIONS),
    ),
)
"""The application features the generated champion scores from (its reference carries their
CSI bins)."""


REFERENCE_FINE_BINS: Final = 1024
"""Resolution of the development sample's pooled feature histograms."""


class PortfolioConfig(BaseModel):
    """Size, calendar and drift of a generated portfolio."""

    model_config = ConfigDict(extra="forbid")

    applicants: int = Field(default=2000, ge=10, le=5_000_000)
    start: str = Field(default="2025-01", pattern=r"^\d{4}-(0[1-9]|1[0-2])$")
    origination_months: int = Field(default=12, ge=1, le=60)
    challenger_share: float = Field(default=0.2, ge=0.0, le=0.5)
    drift_region: str | None = None
    drift_from: int = Field(default=6, ge=0, description="origination month index drift starts")
    drift_income_drop: float = Field(default=0.85, gt=0.0, lt=1.0)
    shock_months: int = Field(
        default=3,
        ge=0,
        description="the drift region's borrowers default more in the last N months",
    )
    shock_factor: float = Field(default=6.0, ge=1.0)
    concept_drift: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="share of the champion's ranking that stops holding for applicants "
        "originated from drift_from on (their true risk follows only 1 - this of the "
        "champion's logit around its mean): the score ranks worse, the AUC drops",
    )
    behaviour_every: int = Field(default=3, ge=1, description="B-card review every N months")
    review_items: bool = Field(
        default=False,
        description="queue every manual_review decision for a person, as the service does",
    )
    policy_review_share: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="share of the model's approvals a policy rule (income unverified) sends to "
        "manual review instead: reviews with an automated verdict a person can override",
    )


@dataclass
class Portfolio:
    """Generated decisions (rows for ``decisions``) and outcome input rows."""

    decisions: list[dict[str, Any]]
    outcome_rows: list[dict[str, Any]]
    as_of: str
    reference: ScoreReference | None
    """The generated release reference; None for outcomes of stored decisions (whose
    reference is their champion artifact's)."""
    behaviour: list[dict[str, Any]] = field(default_factory=list)
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Raw application features by decision id (never stored in the database)."""
    reviews: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Review-queue rows by decision id (with ``review_items``)."""

    def feature_bins(self, decision_id: str) -> dict[str, int]:
        """The decision's bin per reference feature (what the service stores)."""
        values = self.features.get(decision_id)
        if values is None or self.reference is None:
            return {}
        return {f.name: f.bin_of(values.get(f.name)) for f in self.reference.features}


def pd_to_score(pd: FloatArray) -> FloatArray:
    """Integer points from PDs (higher is better)."""
    logit = np.log(pd) - np.log1p(-pd)
    points: FloatArray = np.rint(SCORE_OFFSET - SCORE_FACTOR * logit)
    return points


def _champion_logit(
    income: FloatArray, debt: FloatArray, ctype: npt.NDArray[np.int64]
) -> FloatArray:
    customer = np.array([CUSTOMER_EFFECT[c] for c in CUSTOMER_TYPES])[ctype]
    logit: FloatArray = -2.4 - 1.1 * np.log(income / 4000.0) + 2.0 * (debt - 0.35) + customer
    return logit


def _applicants(cfg: PortfolioConfig, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    region = rng.choice(len(REGIONS), size=n, p=REGION_WEIGHTS)
    ctype = rng.choice(len(CUSTOMER_TYPES), size=n, p=CUSTOMER_WEIGHTS)
    industry = rng.integers(0, len(INDUSTRIES), size=n)
    purpose = rng.integers(0, len(PURPOSES), size=n)
    income = np.exp(rng.normal(math.log(4000.0), 0.45, size=n)) * (1.0 - 0.4 * (ctype == 3))
    debt = np.clip(rng.beta(2.0, 4.0, size=n), 0.0, 0.95)
    month = rng.integers(0, cfg.origination_months, size=n)
    return {
        "region": region,
        "ctype": ctype,
        "industry": industry,
        "purpose": purpose,
        "income": income,
        "debt": debt,
        "month": month,
    }


def development_reference(rng: np.random.Generator, *, n: int = 20_000) -> ScoreReference:
    """The release's reference bands: a pre-drift development sample's pooled histograms."""
    a = _applicants(PortfolioConfig(), n, rng)
    pd = 1.0 / (1.0 + np.exp(-_champion_logit(a["income"], a["debt"], a["ctype"])))
    y = rng.random(n) < pd
    frame = pd_frame(a).assign(bad=y.astype(int), applicant_id=np.arange(n))
    # as fine as a tree run's pooled histograms: a 64-bin histogram over log1p(0..1e6) would
    # leave income only seven equal-mass bins
    stats = FeatureStats.from_frame(frame, FEATURE_SCHEMA, n_bins=REFERENCE_FINE_BINS)
    return reference_from_histograms(
        score_histograms(y.astype(int), pd), features=feature_reference(stats)
    )


def pd_frame(a: dict[str, np.ndarray]) -> pandas.DataFrame:
    """The applicants' model features as a frame of :data:`FEATURE_SCHEMA`'s columns."""
    return pandas.DataFrame(
        {
            "income": a["income"],
            "debt_ratio": a["debt"],
            "customer_type": np.array(CUSTOMER_TYPES)[a["ctype"]],
            "region": np.array(REGIONS)[a["region"]],
        }
    )


def _performance(
    rng: np.random.Generator,
    *,
    true_pd: float,
    principal: float,
    apr: float,
    term: int,
    months: int,
    shock_mob: int | None = None,
    shock_factor: float = 1.0,
) -> Iterator[dict[str, Any]]:
    """Monthly rows of one loan: amortizing balance, blips, default roll and recoveries; from
    month on book ``shock_mob`` on, the default hazard is ``shock_factor`` times higher."""
    hazard = 1.0 - float((1.0 - true_pd) ** (1.0 / 12.0))

    def hazard_at(mob: int) -> float:
        shocked = shock_mob is not None and mob >= shock_mob
        return min(1.0, hazard * shock_factor) if shocked else hazard

    onset = next((m for m in range(1, months + 1) if rng.random() < hazard_at(m)), None)
    balance = principal
    installment = principal / term
    charged = False
    for mob in range(1, months + 1):
        row = {"dpd": 0, "paid": 0.0, "interest_fees": 0.0, "charge_off": 0.0, "recoveries": 0.0}
        if charged:
            if rng.random() < 0.15:
                row["recoveries"] = round(principal * rng.uniform(0.01, 0.05), 2)
            assert onset is not None
            row.update(dpd=30 * (mob - onset + 1), balance=0.0)
            yield {**row, "month_on_book": mob}
            continue
        interest = round(balance * apr / 12.0, 2)
        if onset is not None and mob >= onset:
            stage = mob - onset
            row["dpd"] = 30 * (stage + 1)
            row["interest_fees"] = round(0.25 * interest, 2) if stage == 0 else 0.0
            if row["dpd"] >= 120:
                row["charge_off"] = round(balance, 2)
                balance = 0.0
                charged = True
        elif rng.random() < 0.04:  # a late payment that cures next month
            row["dpd"] = int(rng.integers(1, 30))
            row["interest_fees"] = round(interest + 15.0, 2)
        else:
            pay = min(balance, installment)
            balance = round(balance - pay, 2)
            row["paid"] = round(pay + interest, 2)
            row["interest_fees"] = interest
        row["balance"] = round(balance, 2)
        yield {**row, "month_on_book": mob}
        if balance <= 0.0 and not charged:
            return


def static_region(a: dict[str, np.ndarray], i: int) -> str:
    """Region name of applicant ``i``."""
    return REGIONS[int(a["region"][i])]


@dataclass(frozen=True)
class LoanSeed:
    """What a booked loan's performance is generated from: its decision, tags and true PD."""

    decision_id: str
    account_id: str
    originated: str
    income: float
    true_pd: float
    industry: str
    purpose: str
    customer_type: str
    region: str


def _book_loan(
    rng: np.random.Generator,
    cfg: PortfolioConfig,
    loan: LoanSeed,
    *,
    as_of: str,
    behaviour: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The loan's monthly outcome rows up to ``as_of`` (capped by its term) and, with
    ``behaviour``, its generated B-card reviews; the drift region's borrowers default
    ``shock_factor`` times more often in the last ``shock_months`` months."""
    english, chinese = PURPOSES[loan.purpose]
    texts = chinese if rng.random() < 0.4 else english
    principal = float(np.round(loan.income * rng.uniform(1.0, 4.0), -1))
    term = int(rng.choice([12, 18, 24]))
    age = months_between(loan.originated, as_of)
    shocked = cfg.drift_region is not None and loan.region == cfg.drift_region
    shock_mob = age - cfg.shock_months + 1 if shocked and cfg.shock_months else None
    static = {
        "decision_id": loan.decision_id,
        "account_id": loan.account_id,
        "originated": loan.originated,
        "principal": principal,
        "industry": loan.industry,
        "purpose": loan.purpose,
        "purpose_text": str(texts[int(rng.integers(0, len(texts)))]),
        "customer_type": loan.customer_type,
        "region": loan.region,
    }
    months = list(
        _performance(
            rng,
            true_pd=loan.true_pd,
            principal=principal,
            apr=PURPOSE_APR[loan.purpose],
            term=term,
            months=min(term, age),
            shock_mob=shock_mob,
            shock_factor=cfg.shock_factor,
        )
    )
    reviews = (
        list(_behaviour(loan.decision_id, loan.originated, months, cfg.behaviour_every, rng))
        if behaviour
        else []
    )
    return [{**static, **m} for m in months], reviews


def generate_portfolio(cfg: PortfolioConfig, rng: np.random.Generator) -> Portfolio:
    """Generate decisions for every applicant and outcomes for every approved one.

    The observation date ``as_of`` is 12 months after the last origination month, so every
    loan has 12 to ``12 + origination_months - 1`` months of history (capped by its term).
    """
    n = cfg.applicants
    a = _applicants(cfg, n, rng)
    if cfg.drift_region is not None:
        drifted = (np.array(REGIONS)[a["region"]] == cfg.drift_region) & (
            a["month"] >= cfg.drift_from
        )
        a["income"] = np.where(drifted, a["income"] * (1.0 - cfg.drift_income_drop), a["income"])
    champion_logit = _champion_logit(a["income"], a["debt"], a["ctype"])
    segment = (
        np.array([INDUSTRY_EFFECT[i] for i in INDUSTRIES])[a["industry"]]
        + np.array([PURPOSE_EFFECT[p] for p in PURPOSES])[a["purpose"]]
    )
    ranked = champion_logit
    if cfg.concept_drift > 0.0:
        centre = float(champion_logit.mean())
        ranked = np.where(
            a["month"] >= cfg.drift_from,
            centre + (1.0 - cfg.concept_drift) * (champion_logit - centre),
            champion_logit,
        )
    true_logit = ranked + segment + rng.normal(0.0, 0.3, size=n)
    challenger = rng.random(n) < cfg.challenger_share
    # the challenger also sees part of the segment effect: it should rank better
    model_logit = np.where(challenger, champion_logit + 0.7 * segment, champion_logit)
    pd = 1.0 / (1.0 + np.exp(-model_logit))
    true_pd = 1.0 / (1.0 + np.exp(-true_logit))
    score = pd_to_score(pd)
    # drawn only when asked for, so books without policy reviews stay the same for a seed
    unverified = (
        rng.random(n) < cfg.policy_review_share
        if cfg.policy_review_share > 0.0
        else np.zeros(n, dtype=bool)
    )
    as_of = add_months(cfg.start, cfg.origination_months - 1 + 12)
    purposes = list(PURPOSES)
    decisions: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    behaviour: list[dict[str, Any]] = []
    reviews: dict[str, dict[str, Any]] = {}
    for i in range(n):
        originated = add_months(cfg.start, int(a["month"][i]))
        decision_id = f"d{i:09d}"
        model_decision = (
            "approve"
            if pd[i] < APPROVE_BELOW
            else "manual_review"
            if pd[i] < REVIEW_BELOW
            else "decline"
        )
        policy = model_decision == "approve" and bool(unverified[i])
        outcome = "manual_review" if policy else model_decision
        created_at = f"{originated}-{1 + i % 28:02d}T10:00:00.000000+00:00"
        if cfg.review_items and outcome == "manual_review":
            reviews[decision_id] = {
                "decision_id": decision_id,
                "stage": "application",
                "kind": "manual_review",
                "status": "open",
                "reason": "income unverified" if policy else "score in review band",
                "created_at": created_at,
            }
        decisions.append(
            {
                "decision_id": decision_id,
                "created_at": created_at,
                "stage": "application",
                "subject_hash": f"{i:064x}",
                "fingerprint": f"{i + n:064x}",
                "model_id": CHALLENGER_ID if challenger[i] else CHAMPION_ID,
                "role": "challenger" if challenger[i] else "champion",
                "score": float(score[i]),
                "probability": float(pd[i]),
                "outcome": outcome,
                "reasons": [],
                "rules_hit": [],
                "details": {
                    "model_decision": model_decision,
                    "overrides": ["income_unverified"] if policy else [],
                },
            }
        )
        if outcome != "approve":
            continue
        loan = LoanSeed(
            decision_id=decision_id,
            account_id=f"acct-{i:09d}",
            originated=originated,
            income=float(a["income"][i]),
            true_pd=float(true_pd[i]),
            industry=INDUSTRIES[int(a["industry"][i])],
            purpose=purposes[int(a["purpose"][i])],
            customer_type=CUSTOMER_TYPES[int(a["ctype"][i])],
            region=static_region(a, i),
        )
        loan_rows, reviews_b = _book_loan(rng, cfg, loan, as_of=as_of)
        rows.extend(loan_rows)
        behaviour.extend(reviews_b)
    features = pd_frame(a).to_dict(orient="records")
    return Portfolio(
        decisions=decisions,
        outcome_rows=rows,
        as_of=as_of,
        reference=development_reference(rng),
        behaviour=behaviour,
        reviews=reviews,
        features={
            d["decision_id"]: {str(k): v for k, v in f.items()}
            for d, f in zip(decisions, features, strict=True)
        },
    )


def outcomes_for_decisions(
    connection: Connection,
    cfg: PortfolioConfig,
    rng: np.random.Generator,
    *,
    months: int = 12,
    tags: Mapping[str, Mapping[str, str]] | None = None,
) -> Portfolio:
    """Outcomes for the approved application decisions already stored in the database.

    Each approved decision without a loan yet becomes a loan originated in its decision month,
    with ``months`` months of performance after the latest one (capped by its term). Its
    default risk is the decision's own stored PD plus the segment effect the model does not
    see; the drift region's borrowers default ``shock_factor`` times more often in the last
    ``shock_months`` months. Segment tags (industry, purpose, customer_type, region) are drawn
    unless ``tags`` gives them for the decision id; the tagged decisions draw theirs first, in
    the order of ``tags``, the others in decision order.
    No B-card reviews are generated (the service's own B-card model decides those).
    The returned portfolio holds no decisions (they are stored already): import its outcome
    rows with :func:`load_portfolio` or :func:`server.scoring.outcomes.import_rows`.
    """
    found = connection.execute(
        select(decisions.c.decision_id, decisions.c.created_at, decisions.c.probability)
        .where(
            decisions.c.stage == "application",
            decisions.c.outcome == "approve",
            decisions.c.probability.is_not(None),
            decisions.c.decision_id.not_in(select(loans.c.decision_id)),
        )
        .order_by(decisions.c.created_at, decisions.c.decision_id)
    ).all()
    given = tags or {}
    # the tagged decisions first, in the caller's order: decisions that arrived concurrently
    # get the same outcomes from the same seed
    position = {decision_id: i for i, decision_id in enumerate(given)}
    found = sorted(found, key=lambda r: position.get(r.decision_id, len(position)))
    originated = [str(r.created_at)[:7] for r in found]
    as_of = add_months(max(originated), months) if originated else add_months(cfg.start, months)
    rows: list[dict[str, Any]] = []
    purposes = list(PURPOSES)
    for row, month in zip(found, originated, strict=True):
        tag = given.get(row.decision_id, {})
        industry = tag.get("industry") or INDUSTRIES[int(rng.integers(0, len(INDUSTRIES)))]
        purpose = tag.get("purpose") or purposes[int(rng.integers(0, len(purposes)))]
        ctype = tag.get("customer_type") or str(rng.choice(CUSTOMER_TYPES, p=CUSTOMER_WEIGHTS))
        region = tag.get("region") or str(rng.choice(REGIONS, p=REGION_WEIGHTS))
        income = float(np.exp(rng.normal(math.log(4000.0), 0.45)))  # the principal's scale
        pd_ = min(max(float(row.probability), 1e-6), 1.0 - 1e-6)
        logit = (
            math.log(pd_ / (1.0 - pd_))
            + INDUSTRY_EFFECT[industry]
            + PURPOSE_EFFECT[purpose]
            + rng.normal(0.0, 0.3)
        )
        loan = LoanSeed(
            decision_id=row.decision_id,
            account_id=f"acct-{row.decision_id}",
            originated=month,
            income=income,
            true_pd=1.0 / (1.0 + math.exp(-logit)),
            industry=industry,
            purpose=purpose,
            customer_type=ctype,
            region=region,
        )
        # no generated B-card decisions: the service's own B-card decides those
        rows.extend(_book_loan(rng, cfg, loan, as_of=as_of, behaviour=False)[0])
    return Portfolio(decisions=[], outcome_rows=rows, as_of=as_of, reference=None)


def _behaviour(
    decision_id: str,
    originated: str,
    months: list[dict[str, Any]],
    every: int,
    rng: np.random.Generator,
) -> Iterator[dict[str, Any]]:
    """B-card reviews every ``every`` months: a warning fires when the account is late now or
    goes 30+ within the next three months (with noise both ways)."""
    for index in range(every - 1, len(months), every):
        ahead = months[index : index + 4]
        late = any(m["dpd"] >= 30 for m in ahead) or months[index]["dpd"] > 0
        warn = late if rng.random() > 0.1 else not late
        month = add_months(originated, months[index]["month_on_book"])
        yield {
            "decision_id": f"b{decision_id[1:]}m{index:02d}",
            "created_at": f"{month}-15T10:00:00.000000+00:00",
            "stage": "behaviour",
            "subject_hash": f"{int(decision_id[1:]):064x}",
            "fingerprint": f"{index:064x}",
            "model_id": "demo-bcard-v1",
            "role": "champion",
            "score": None,
            "probability": None,
            "outcome": "cut" if warn else "keep",
            "reasons": [],
            "rules_hit": ["early_warning"] if warn else [],
            "details": {},
        }


def load_portfolio(engine: Engine, portfolio: Portfolio, *, chunk_rows: int = 5000) -> ImportReport:
    """Write the portfolio's decisions (audited, as the service would) and import its outcomes.

    Two transactions: decisions first, then the outcome import (which needs them).
    """
    writes = [
        DecisionWrite(
            row=d,
            review=portfolio.reviews.get(d["decision_id"]),
            feature_bins=portfolio.feature_bins(d["decision_id"]),
        )
        for d in portfolio.decisions
    ]
    writes.extend(DecisionWrite(row=d) for d in portfolio.behaviour)

    def decide(connection: Any, chain: Any) -> None:
        for start in range(0, len(writes), 5000):
            write_decisions(connection, chain, writes[start : start + 5000])

    audited_transaction(engine, decide)
    located = ((f"row {i + 1}", row) for i, row in enumerate(portfolio.outcome_rows))
    return audited_transaction(
        engine, lambda c, ch: import_rows(c, ch, located, chunk_rows=chunk_rows)
    )


def reference_json(reference: ScoreReference) -> str:
    """Canonical JSON of a reference (what the monitor CLI reads with ``--reference``)."""
    return canonical_json(reference.model_dump(mode="json"))
