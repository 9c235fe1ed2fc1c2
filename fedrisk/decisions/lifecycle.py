"""Loan-lifecycle decisions: A-card approval, B-card limit actions, C-card collection treatments.

API
---
``decide_application(pd, score, *, policy, reasons=(), fraud_hits=(), ring_flag=False)
-> ApplicationDecision``
    approve / review / decline from cut-offs, limit and price tier from score bands; fraud hits
    (decline/review) and a ring flag override the model decision (never towards approval).
``decide_behaviour(pd, score, *, current_limit, signals, policy) -> BehaviourDecision``
    raise / keep / cut / freeze with the new limit, early warnings and reasons.
``decide_collection(recovery_probability, *, signals, policy) -> CollectionDecision``
    segment (short_oversight / ability_problem / unwilling) and action (reminder_message /
    agent_call / repayment_plan_offer / legal_referral) with reasons.
``LifecyclePolicy(application, behaviour, collection)``; ``load_policy(path=None)`` reads TOML
    (or YAML), None -> packaged ``fedrisk/decisions/policies/default_policy.toml``;
    ``policy_from_text``.
Inputs: ``BehaviourSignals``, ``FundsFlow``, ``CollectionSignals``. Outputs carry ``Finding(code,
text)`` items whose codes are stable strings (see ``BehaviourCode``, ``CollectionCode``).

Cut-off convention (both A- and B-card): with ``basis = "pd"`` a case is favourable when
``pd <= favourable cut-off`` and unfavourable when ``pd > unfavourable cut-off``; with
``basis = "score"`` favourable when ``score >= cut-off`` and unfavourable when ``score < cut-off``.
Everything in between is the middle band (manual review / keep). :func:`cutoff_bands` is the one
definition of this convention; the per-applicant decisions and the vectorised policy methods
(``ApplicationPolicy.decision_codes`` / ``band_indices``, ``BehaviourPolicy.risk_band_codes``,
used for batch scoring) all go through it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Literal, NamedTuple, Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedrisk.decisions.fraud_rules import FraudAction, RuleHit
from fedrisk.decisions.policy_files import parse_mapping, read_policy_file
from fedrisk.decisions.reasons import DEFAULT_MAX_REASONS, ReasonCode
from fedrisk.errors import DecisionError

__all__ = [
    "DEFAULT_POLICY_PATH",
    "ApplicationDecision",
    "ApplicationPolicy",
    "BehaviourAction",
    "BehaviourCode",
    "BehaviourDecision",
    "BehaviourPolicy",
    "BehaviourSignals",
    "CollectionAction",
    "CollectionCode",
    "CollectionDecision",
    "CollectionPolicy",
    "CollectionSegment",
    "CollectionSignals",
    "Decision",
    "Finding",
    "FundsFlow",
    "LifecyclePolicy",
    "LimitBand",
    "cutoff_bands",
    "decide_application",
    "decide_behaviour",
    "decide_collection",
    "load_policy",
    "policy_from_text",
]

DEFAULT_POLICY_PATH = Path(__file__).parent / "policies" / "default_policy.toml"

Basis = Literal["pd", "score"]
_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Decision(StrEnum):
    """A-card outcome, ordered approve < review < decline by severity."""

    APPROVE = "approve"
    REVIEW = "review"
    DECLINE = "decline"


_DECISION_ORDER = (Decision.APPROVE, Decision.REVIEW, Decision.DECLINE)
_DECISION_RANK = {decision: rank for rank, decision in enumerate(_DECISION_ORDER)}


class BehaviourAction(StrEnum):
    """B-card limit action."""

    RAISE = "raise"
    KEEP = "keep"
    CUT = "cut"
    FREEZE = "freeze"


class CollectionSegment(StrEnum):
    """C-card segment of a delinquent account."""

    SHORT_OVERSIGHT = "short_oversight"
    ABILITY_PROBLEM = "ability_problem"
    UNWILLING = "unwilling"


class CollectionAction(StrEnum):
    """C-card treatment."""

    REMINDER_MESSAGE = "reminder_message"
    AGENT_CALL = "agent_call"
    REPAYMENT_PLAN_OFFER = "repayment_plan_offer"
    LEGAL_REFERRAL = "legal_referral"


class BehaviourCode(StrEnum):
    """Stable codes of B-card warnings and reasons."""

    MULTI_LENDER = "BW-MULTI-LENDER"
    PROHIBITED_USE = "BW-PROHIBITED-USE"
    PAYMENT_DELAYS = "BW-PAYMENT-DELAYS"
    PAST_DUE = "BW-PAST-DUE"
    LOW_SCORE = "BR-LOW-SCORE"
    MIDDLE_SCORE = "BR-MIDDLE-SCORE"
    GOOD_SCORE = "BR-GOOD-SCORE"
    WARNINGS_BLOCK_RAISE = "BR-WARNINGS-BLOCK-RAISE"
    AT_MAX_LIMIT = "BR-AT-MAX-LIMIT"


class CollectionCode(StrEnum):
    """Stable codes of C-card reasons."""

    HIGH_RECOVERY = "CR-HIGH-RECOVERY"
    LOW_RECOVERY = "CR-LOW-RECOVERY"
    MIDDLE_RECOVERY = "CR-MIDDLE-RECOVERY"
    BROKEN_PROMISES = "CR-BROKEN-PROMISES"
    UNCONTACTABLE = "CR-UNCONTACTABLE"
    REPEAT_DELINQUENCY = "CR-REPEAT-DELINQUENCY"
    LONG_DELINQUENCY = "CR-LONG-DELINQUENCY"
    EARLY_DELINQUENCY = "CR-EARLY-DELINQUENCY"


class Finding(BaseModel):
    """A coded, human-readable warning or reason."""

    model_config = _FROZEN

    code: str
    text: str


# ---------------------------------------------------------------------------------------------
# shared helpers


def _check_pd_score(pd: float, score: float) -> None:
    if not (math.isfinite(pd) and 0.0 <= pd <= 1.0):
        raise DecisionError(f"pd must be a probability in [0, 1]; got {pd!r}")
    if not math.isfinite(score):
        raise DecisionError(f"score must be a finite number; got {score!r}")


def _check_cutoffs(basis: Basis, favourable: float, unfavourable: float, names: str) -> None:
    fav_name, unfav_name = names.split(",")
    for name, value in ((fav_name, favourable), (unfav_name, unfavourable)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite; got {value!r}")
        if basis == "pd" and not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be in (0, 1) when basis is 'pd'; got {value!r}")
    if basis == "pd" and not favourable < unfavourable:
        raise ValueError(
            f"{fav_name} must be < {unfav_name} when basis is 'pd' (lower PD is better); "
            f"got {fav_name}={favourable}, {unfav_name}={unfavourable}"
        )
    if basis == "score" and not favourable > unfavourable:
        raise ValueError(
            f"{fav_name} must be > {unfav_name} when basis is 'score' (higher score is better); "
            f"got {fav_name}={favourable}, {unfav_name}={unfavourable}"
        )


def cutoff_bands(
    pd: npt.ArrayLike,
    score: npt.ArrayLike,
    *,
    basis: Basis,
    favourable: float,
    unfavourable: float,
) -> npt.NDArray[np.int8]:
    """Band of each row under the cut-off convention: 0 favourable, 1 middle, 2 unfavourable.

    NaN compares false with both cut-offs, so a row without a PD (or score) is in the middle band.
    """
    if basis == "pd":
        good, bad = np.less_equal(pd, favourable), np.greater(pd, unfavourable)
    else:
        good, bad = np.greater_equal(score, favourable), np.less(score, unfavourable)
    return np.asarray(np.where(good, 0, np.where(bad, 2, 1)), dtype=np.int8)


_BANDS: tuple[Literal["favourable"], Literal["middle"], Literal["unfavourable"]] = (
    "favourable",
    "middle",
    "unfavourable",
)


def _risk_text(pd: float, score: float, basis: Basis) -> str:
    return f"PD {pd:.4f}" if basis == "pd" else f"score {score:.0f}"


# ---------------------------------------------------------------------------------------------
# A-card


class LimitBand(BaseModel):
    """Offer for scores at or above ``min_score`` (up to the next band's ``min_score``)."""

    model_config = _FROZEN

    min_score: float = Field(allow_inf_nan=False)
    limit: float = Field(ge=0, allow_inf_nan=False)
    price_tier: str = Field(min_length=1)
    apr: float | None = Field(default=None, ge=0, le=10, allow_inf_nan=False)


_DEFAULT_BANDS = (
    LimitBand(min_score=520, limit=1_000, price_tier="E", apr=0.36),
    LimitBand(min_score=560, limit=3_000, price_tier="D", apr=0.28),
    LimitBand(min_score=600, limit=8_000, price_tier="C", apr=0.20),
    LimitBand(min_score=640, limit=15_000, price_tier="B", apr=0.15),
    LimitBand(min_score=680, limit=30_000, price_tier="A", apr=0.10),
)


class ApplicationPolicy(BaseModel):
    """A-card policy: approve/decline cut-offs, limit and price bands, ring handling.

    Attributes
    ----------
    basis
        Whether cut-offs apply to ``pd`` or ``score``.
    approve_cutoff, decline_cutoff
        Approve at or better than ``approve_cutoff``; decline when worse than ``decline_cutoff``;
        manual review in between. On PD ``approve_cutoff < decline_cutoff``; on score ``>``.
    limit_bands
        Sorted by ascending ``min_score`` (strictly); limits never fall as the score rises.
    ring_action
        What a relationship-graph ring flag does: ``decline``, ``review`` or ``flag`` (note only).
    max_reasons
        Reason codes kept in a decision (adverse-action notices quote up to 4).
    """

    model_config = _FROZEN

    basis: Basis = "pd"
    approve_cutoff: float = 0.08
    decline_cutoff: float = 0.25
    limit_bands: tuple[LimitBand, ...] = _DEFAULT_BANDS
    ring_action: FraudAction = FraudAction.REVIEW
    max_reasons: int = Field(default=DEFAULT_MAX_REASONS, ge=0, le=DEFAULT_MAX_REASONS)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_cutoffs(
            self.basis, self.approve_cutoff, self.decline_cutoff, "approve_cutoff,decline_cutoff"
        )
        if not self.limit_bands:
            raise ValueError("limit_bands must list at least one band; got none")
        for lower, upper in zip(self.limit_bands, self.limit_bands[1:], strict=False):
            if not lower.min_score < upper.min_score:
                raise ValueError(
                    "limit_bands must be sorted by strictly ascending min_score; "
                    f"got {lower.min_score} then {upper.min_score}"
                )
            if upper.limit < lower.limit:
                raise ValueError(
                    "limit_bands limits must not decrease as min_score rises; got "
                    f"{lower.limit} at {lower.min_score} then {upper.limit} at {upper.min_score}"
                )
        return self

    def decision_codes(self, pd: npt.ArrayLike, score: npt.ArrayLike) -> npt.NDArray[np.int8]:
        """Vectorised :meth:`model_decision`: 0 approve, 1 review, 2 decline per row."""
        return cutoff_bands(
            pd,
            score,
            basis=self.basis,
            favourable=self.approve_cutoff,
            unfavourable=self.decline_cutoff,
        )

    def band_indices(self, score: npt.ArrayLike) -> npt.NDArray[np.intp]:
        """Vectorised :meth:`band_for`: each row's index into ``limit_bands``, -1 below all."""
        mins = np.array([band.min_score for band in self.limit_bands], dtype=np.float64)
        return np.asarray(np.searchsorted(mins, score, side="right") - 1, dtype=np.intp)

    def model_decision(self, pd: float, score: float) -> Decision:
        """The decision from the cut-offs alone."""
        return _DECISION_ORDER[int(self.decision_codes(pd, score))]

    def band_for(self, score: float) -> LimitBand | None:
        """The band with the highest ``min_score <= score``; None below every band."""
        index = int(self.band_indices(score))
        return None if index < 0 else self.limit_bands[index]


class ApplicationDecision(BaseModel):
    """A-card result.

    Attributes
    ----------
    decision
        Final decision after fraud, ring and limit-band overrides.
    model_decision
        Decision from the cut-offs alone.
    pd, score
        Model probability of default and scorecard points.
    credit_limit, price_tier, apr
        Offer from the limit band (approve and review); None on decline or below every band.
    reasons
        Up to ``max_reasons`` ranked reason codes (kept for every decision; quote them on decline).
    fraud_hits
        Rule hits passed in, for storage.
    ring_flag
        Whether the relationship graph flagged a possible ring.
    overrides
        Why ``decision`` differs from ``model_decision`` (rule ids, ring, missing band).
    """

    model_config = _FROZEN

    decision: Decision
    model_decision: Decision
    pd: float
    score: float
    credit_limit: float | None
    price_tier: str | None
    apr: float | None
    reasons: tuple[ReasonCode, ...]
    fraud_hits: tuple[RuleHit, ...]
    ring_flag: bool
    overrides: tuple[str, ...]


def _worse(a: Decision, b: Decision) -> Decision:
    return a if _DECISION_RANK[a] >= _DECISION_RANK[b] else b


def decide_application(
    pd: float,
    score: float,
    *,
    policy: ApplicationPolicy,
    reasons: Sequence[ReasonCode] = (),
    fraud_hits: Sequence[RuleHit] = (),
    ring_flag: bool = False,
) -> ApplicationDecision:
    """Decide an application from model output, fraud hits and the ring flag.

    Parameters
    ----------
    pd
        Calibrated probability of default in [0, 1].
    score
        Scorecard points for ``pd`` (from the model's ``ScorecardScaling``).
    policy
        A-card policy.
    reasons
        Ranked reason codes (``fedrisk.decisions.reasons``); truncated to ``policy.max_reasons``.
    fraud_hits
        Hits from ``fedrisk.decisions.fraud_rules``; ``decline`` hits decline, ``review`` hits send
        an
        approval to review, ``flag`` hits are recorded only.
    ring_flag
        Relationship-graph ring flag; handled by ``policy.ring_action``.

    Returns
    -------
    ApplicationDecision

    Raises
    ------
    DecisionError
        If ``pd`` is not a probability or ``score`` is not finite.
    """
    _check_pd_score(pd, score)
    model = policy.model_decision(pd, score)
    final = model
    overrides: list[str] = []
    for action, target in (
        (FraudAction.DECLINE, Decision.DECLINE),
        (FraudAction.REVIEW, Decision.REVIEW),
    ):
        ids = [hit.rule_id for hit in fraud_hits if hit.action is action]
        if ids and _worse(final, target) is not final:
            final = target
            overrides.append(f"fraud rules {', '.join(ids)}: {target.value}")
    if ring_flag and policy.ring_action is not FraudAction.FLAG:
        target = Decision(policy.ring_action.value)
        if _worse(final, target) is not final:
            final = target
            overrides.append(f"relationship ring: {target.value}")
    band = None if final is Decision.DECLINE else policy.band_for(score)
    if band is None and final is Decision.APPROVE:
        final = Decision.REVIEW
        overrides.append(f"score {score:.0f} is below every limit band: review")
    return ApplicationDecision(
        decision=final,
        model_decision=model,
        pd=pd,
        score=score,
        credit_limit=None if band is None else band.limit,
        price_tier=None if band is None else band.price_tier,
        apr=None if band is None else band.apr,
        reasons=tuple(reasons[: policy.max_reasons]),
        fraud_hits=tuple(fraud_hits),
        ring_flag=ring_flag,
        overrides=tuple(overrides),
    )


# ---------------------------------------------------------------------------------------------
# B-card


class FundsFlow(BaseModel):
    """Money observed flowing from the loan to a use, e.g. ``securities`` or ``real_estate``.

    ``amount`` None means the flow was flagged but its amount is unknown (always counts).
    """

    model_config = _FROZEN

    kind: str = Field(min_length=1)
    amount: float | None = Field(default=None, ge=0, allow_inf_nan=False)


class BehaviourSignals(BaseModel):
    """Early-warning signals of an account under review.

    Attributes
    ----------
    multi_lender_count
        Number of other lenders the borrower currently borrows from.
    prohibited_use_flows
        Observed flows of loan money by use.
    days_past_due
        Current days past due.
    payment_delays
        Late payments within the review window.
    """

    model_config = _FROZEN

    multi_lender_count: int = Field(default=0, ge=0)
    prohibited_use_flows: tuple[FundsFlow, ...] = ()
    days_past_due: int = Field(default=0, ge=0)
    payment_delays: int = Field(default=0, ge=0)


class BehaviourPolicy(BaseModel):
    """B-card policy.

    A raise needs a favourable risk band, no warning and room under ``max_limit``. Cut triggers:
    unfavourable risk band, ``multi_lender_count >= multi_lender_cut``, ``payment_delays >=
    delay_cut``, ``days_past_due >= dpd_cut`` or a prohibited-use flow when
    ``prohibited_action = "cut"``. Freeze triggers (strongest): ``days_past_due >= dpd_freeze``,
    or a prohibited-use flow when ``prohibited_action = "freeze"``. A prohibited-use flow is a
    flow whose kind is in ``prohibited_kinds`` and whose amount exceeds ``prohibited_min_amount``
    (or is unknown). New limits are rounded down to a multiple of ``limit_step``; a frozen account
    gets ``new_limit = 0`` (no new drawdowns).
    """

    model_config = _FROZEN

    basis: Basis = "score"
    raise_cutoff: float = 640.0
    cut_cutoff: float = 540.0
    raise_factor: float = Field(default=1.2, gt=1, le=10)
    cut_factor: float = Field(default=0.5, gt=0, lt=1)
    max_limit: float = Field(default=50_000.0, gt=0, allow_inf_nan=False)
    limit_step: float = Field(default=100.0, gt=0, allow_inf_nan=False)
    multi_lender_warn: int = Field(default=3, ge=1)
    multi_lender_cut: int = Field(default=6, ge=1)
    prohibited_kinds: tuple[str, ...] = ("securities", "real_estate")
    prohibited_min_amount: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    prohibited_action: Literal["cut", "freeze"] = "freeze"
    delay_warn: int = Field(default=1, ge=1)
    delay_cut: int = Field(default=3, ge=1)
    dpd_cut: int = Field(default=15, ge=1)
    dpd_freeze: int = Field(default=30, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        _check_cutoffs(self.basis, self.raise_cutoff, self.cut_cutoff, "raise_cutoff,cut_cutoff")
        for warn, cut in (
            ("multi_lender_warn", "multi_lender_cut"),
            ("delay_warn", "delay_cut"),
            ("dpd_cut", "dpd_freeze"),
        ):
            if getattr(self, warn) > getattr(self, cut):
                raise ValueError(
                    f"{warn} must be <= {cut}; got {warn}={getattr(self, warn)}, "
                    f"{cut}={getattr(self, cut)}"
                )
        return self

    def risk_band_codes(self, pd: npt.ArrayLike, score: npt.ArrayLike) -> npt.NDArray[np.int8]:
        """Risk band per row from the cut-offs alone: 0 raise-eligible, 1 keep, 2 cut."""
        return cutoff_bands(
            pd,
            score,
            basis=self.basis,
            favourable=self.raise_cutoff,
            unfavourable=self.cut_cutoff,
        )


class BehaviourDecision(BaseModel):
    """B-card result: the limit action, the new limit, early warnings and the action's reasons."""

    model_config = _FROZEN

    action: BehaviourAction
    current_limit: float
    new_limit: float
    pd: float
    score: float
    warnings: tuple[Finding, ...]
    reasons: tuple[Finding, ...]


def _floor_step(value: float, step: float) -> float:
    # the epsilon keeps 1200.0 / 100 from flooring to 11 through float error
    return math.floor(value / step + 1e-9) * step


class _Triggers(NamedTuple):
    """An account's early warnings, and those among them that force a freeze or a cut."""

    warnings: list[Finding]
    freeze: list[Finding]
    cut: list[Finding]


def _prohibited_uses(signals: BehaviourSignals, policy: BehaviourPolicy) -> list[str]:
    """Kinds of prohibited use the loan money flowed to (above the policy's minimum), sorted."""
    return sorted(
        {
            flow.kind
            for flow in signals.prohibited_use_flows
            if flow.kind in policy.prohibited_kinds
            and (flow.amount is None or flow.amount > policy.prohibited_min_amount)
        }
    )


def _behaviour_triggers(signals: BehaviourSignals, policy: BehaviourPolicy) -> _Triggers:
    """Every early warning in a fixed order: lenders, prohibited uses, delays, days past due."""
    triggers = _Triggers(warnings=[], freeze=[], cut=[])
    if signals.multi_lender_count >= policy.multi_lender_warn:
        found = Finding(
            code=BehaviourCode.MULTI_LENDER,
            text=f"Borrowing from {signals.multi_lender_count} other lenders",
        )
        triggers.warnings.append(found)
        if signals.multi_lender_count >= policy.multi_lender_cut:
            triggers.cut.append(found)
    for kind in _prohibited_uses(signals, policy):
        found = Finding(
            code=BehaviourCode.PROHIBITED_USE,
            text=f"Loan funds flowing to a prohibited use: {kind.replace('_', ' ')}",
        )
        triggers.warnings.append(found)
        (triggers.freeze if policy.prohibited_action == "freeze" else triggers.cut).append(found)
    if signals.payment_delays >= policy.delay_warn:
        found = Finding(
            code=BehaviourCode.PAYMENT_DELAYS,
            text=f"{signals.payment_delays} late payment(s) in the review window",
        )
        triggers.warnings.append(found)
        if signals.payment_delays >= policy.delay_cut:
            triggers.cut.append(found)
    if signals.days_past_due > 0:
        found = Finding(code=BehaviourCode.PAST_DUE, text=f"{signals.days_past_due} days past due")
        triggers.warnings.append(found)
        if signals.days_past_due >= policy.dpd_freeze:
            triggers.freeze.append(found)
        elif signals.days_past_due >= policy.dpd_cut:
            triggers.cut.append(found)
    return triggers


def _favourable_action(
    current_limit: float, *, warnings: Sequence[Finding], policy: BehaviourPolicy, risk_text: str
) -> tuple[BehaviourAction, float, list[Finding]]:
    """Raise a low-risk account's limit unless a warning or the policy maximum prevents it."""
    proposed = min(
        _floor_step(current_limit * policy.raise_factor, policy.limit_step), policy.max_limit
    )
    if warnings:
        blocked = Finding(
            code=BehaviourCode.WARNINGS_BLOCK_RAISE, text="Early warnings block a limit raise"
        )
        return BehaviourAction.KEEP, current_limit, [blocked]
    if proposed <= current_limit:
        at_max = Finding(
            code=BehaviourCode.AT_MAX_LIMIT, text="Limit is already at the policy maximum"
        )
        return BehaviourAction.KEEP, current_limit, [at_max]
    good = Finding(code=BehaviourCode.GOOD_SCORE, text=f"Behaviour risk is low ({risk_text})")
    return BehaviourAction.RAISE, proposed, [good]


def decide_behaviour(
    pd: float,
    score: float,
    *,
    current_limit: float,
    signals: BehaviourSignals,
    policy: BehaviourPolicy,
) -> BehaviourDecision:
    """Choose a limit action for an account from its behaviour score and early warnings.

    Parameters
    ----------
    pd, score
        B-card probability of default and scorecard points.
    current_limit
        The account's current credit limit (>= 0).
    signals
        Early-warning signals.
    policy
        B-card policy.

    Returns
    -------
    BehaviourDecision
        ``warnings`` lists every early warning seen; ``reasons`` explain the chosen action.

    Raises
    ------
    DecisionError
        If ``pd``, ``score`` or ``current_limit`` is invalid.
    """
    _check_pd_score(pd, score)
    if not (math.isfinite(current_limit) and current_limit >= 0):
        raise DecisionError(f"current_limit must be a finite number >= 0; got {current_limit!r}")
    warnings, freeze, cut = _behaviour_triggers(signals, policy)
    risk = _BANDS[int(policy.risk_band_codes(pd, score))]
    risk_text = _risk_text(pd, score, policy.basis)
    if risk == "unfavourable":
        cut.append(
            Finding(code=BehaviourCode.LOW_SCORE, text=f"Behaviour risk too high ({risk_text})")
        )

    action: BehaviourAction
    if freeze:
        action, new_limit, reasons = BehaviourAction.FREEZE, 0.0, freeze
    elif cut:
        action = BehaviourAction.CUT
        new_limit = _floor_step(current_limit * policy.cut_factor, policy.limit_step)
        reasons = cut
    elif risk == "favourable":
        action, new_limit, reasons = _favourable_action(
            current_limit, warnings=warnings, policy=policy, risk_text=risk_text
        )
    else:
        action, new_limit = BehaviourAction.KEEP, current_limit
        reasons = [
            Finding(
                code=BehaviourCode.MIDDLE_SCORE, text=f"Behaviour risk is moderate ({risk_text})"
            )
        ]
    return BehaviourDecision(
        action=action,
        current_limit=current_limit,
        new_limit=new_limit,
        pd=pd,
        score=score,
        warnings=tuple(warnings),
        reasons=tuple(reasons),
    )


# ---------------------------------------------------------------------------------------------
# C-card


class CollectionSignals(BaseModel):
    """Facts about a delinquent account.

    Attributes
    ----------
    days_past_due
        Current days past due.
    broken_promises
        Promises to pay that were not kept in this delinquency.
    contactable
        Whether the borrower can be reached on file contact details.
    prior_delinquencies
        Earlier delinquency episodes of this borrower.
    """

    model_config = _FROZEN

    days_past_due: int = Field(ge=0)
    broken_promises: int = Field(default=0, ge=0)
    contactable: bool = True
    prior_delinquencies: int = Field(default=0, ge=0)


class CollectionPolicy(BaseModel):
    """C-card policy.

    Segments, first match wins:

    1. ``short_oversight``: ``recovery >= oversight_min_recovery``, ``dpd <= oversight_max_dpd``,
       no broken promise, contactable, ``prior_delinquencies <= oversight_max_prior_delinquencies``.
    2. ``unwilling``: ``broken_promises >= unwilling_min_broken_promises``, or not contactable
       (when ``uncontactable_is_unwilling``), or ``recovery < unwilling_max_recovery``.
    3. ``ability_problem``: everything else.

    Actions: short_oversight -> reminder_message; ability_problem -> repayment_plan_offer when
    ``dpd >= plan_min_dpd`` else agent_call; unwilling -> legal_referral when
    ``dpd >= legal_min_dpd`` else agent_call.
    """

    model_config = _FROZEN

    oversight_min_recovery: float = Field(default=0.75, ge=0, le=1)
    oversight_max_dpd: int = Field(default=30, ge=0)
    oversight_max_prior_delinquencies: int = Field(default=1, ge=0)
    unwilling_max_recovery: float = Field(default=0.15, ge=0, le=1)
    unwilling_min_broken_promises: int = Field(default=2, ge=1)
    uncontactable_is_unwilling: bool = True
    plan_min_dpd: int = Field(default=30, ge=0)
    legal_min_dpd: int = Field(default=90, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not self.unwilling_max_recovery < self.oversight_min_recovery:
            raise ValueError(
                "unwilling_max_recovery must be < oversight_min_recovery; got "
                f"unwilling_max_recovery={self.unwilling_max_recovery}, "
                f"oversight_min_recovery={self.oversight_min_recovery}"
            )
        return self


class CollectionDecision(BaseModel):
    """C-card result: segment, treatment and the reasons for both."""

    model_config = _FROZEN

    segment: CollectionSegment
    action: CollectionAction
    recovery_probability: float
    reasons: tuple[Finding, ...]


def decide_collection(
    recovery_probability: float,
    *,
    signals: CollectionSignals,
    policy: CollectionPolicy,
) -> CollectionDecision:
    """Segment a delinquent account and choose its collection treatment.

    Parameters
    ----------
    recovery_probability
        C-card model probability that the account recovers (pays), in [0, 1].
    signals
        Delinquency facts.
    policy
        C-card policy.

    Returns
    -------
    CollectionDecision

    Raises
    ------
    DecisionError
        If ``recovery_probability`` is not a probability.
    """
    rp = recovery_probability
    if not (math.isfinite(rp) and 0.0 <= rp <= 1.0):
        raise DecisionError(f"recovery_probability must be in [0, 1]; got {rp!r}")
    dpd = signals.days_past_due
    reasons: list[Finding] = []
    if (
        rp >= policy.oversight_min_recovery
        and dpd <= policy.oversight_max_dpd
        and signals.broken_promises == 0
        and signals.contactable
        and signals.prior_delinquencies <= policy.oversight_max_prior_delinquencies
    ):
        reasons.append(
            Finding(
                code=CollectionCode.HIGH_RECOVERY, text=f"Recovery probability {rp:.2f} is high"
            )
        )
        reasons.append(
            Finding(code=CollectionCode.EARLY_DELINQUENCY, text=f"Only {dpd} days past due")
        )
        return CollectionDecision(
            segment=CollectionSegment.SHORT_OVERSIGHT,
            action=CollectionAction.REMINDER_MESSAGE,
            recovery_probability=rp,
            reasons=tuple(reasons),
        )
    if signals.broken_promises >= policy.unwilling_min_broken_promises:
        reasons.append(
            Finding(
                code=CollectionCode.BROKEN_PROMISES,
                text=f"{signals.broken_promises} promises to pay were broken",
            )
        )
    if not signals.contactable and policy.uncontactable_is_unwilling:
        reasons.append(
            Finding(code=CollectionCode.UNCONTACTABLE, text="Borrower cannot be contacted")
        )
    if rp < policy.unwilling_max_recovery:
        reasons.append(
            Finding(code=CollectionCode.LOW_RECOVERY, text=f"Recovery probability {rp:.2f} is low")
        )
    if reasons:
        segment = CollectionSegment.UNWILLING
        escalate = dpd >= policy.legal_min_dpd
        action = CollectionAction.LEGAL_REFERRAL if escalate else CollectionAction.AGENT_CALL
    else:
        segment = CollectionSegment.ABILITY_PROBLEM
        reasons.append(
            Finding(
                code=CollectionCode.MIDDLE_RECOVERY,
                text=f"Recovery probability {rp:.2f} suggests difficulty paying, not refusal",
            )
        )
        if signals.prior_delinquencies > policy.oversight_max_prior_delinquencies:
            reasons.append(
                Finding(
                    code=CollectionCode.REPEAT_DELINQUENCY,
                    text=f"{signals.prior_delinquencies} earlier delinquencies",
                )
            )
        escalate = dpd >= policy.plan_min_dpd
        action = CollectionAction.REPAYMENT_PLAN_OFFER if escalate else CollectionAction.AGENT_CALL
    if escalate:
        reasons.append(Finding(code=CollectionCode.LONG_DELINQUENCY, text=f"{dpd} days past due"))
    return CollectionDecision(
        segment=segment, action=action, recovery_probability=rp, reasons=tuple(reasons)
    )


# ---------------------------------------------------------------------------------------------
# bundle and loading


class LifecyclePolicy(BaseModel):
    """All lifecycle policies of a lender; the defaults equal ``default_policy.toml``."""

    model_config = _FROZEN

    format_version: Literal[1] = 1
    application: ApplicationPolicy = ApplicationPolicy()
    behaviour: BehaviourPolicy = BehaviourPolicy()
    collection: CollectionPolicy = CollectionPolicy()


def _describe(error: ValidationError) -> str:
    problems: list[str] = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "policy"
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] in {"value_error", "missing", "extra_forbidden"}:
            problems.append(f"{where}: {message}")
        else:
            problems.append(f"{where}: {message}; got {item.get('input')!r}")
    return "; ".join(problems)


def policy_from_text(
    text: str, *, fmt: Literal["toml", "yaml"] = "toml", source: str = "<string>"
) -> LifecyclePolicy:
    """Parse and validate a lifecycle policy from TOML or YAML text.

    Raises
    ------
    DecisionError
        On a syntax error or an invalid value; the message names every offending field.
    """
    data = parse_mapping(text, fmt=fmt, what="policy", source=source)
    try:
        return LifecyclePolicy.model_validate(data)
    except ValidationError as e:
        raise DecisionError(f"policy {source}: {_describe(e)}") from e


def load_policy(path: Path | None = None) -> LifecyclePolicy:
    """Load a lifecycle policy file (``.toml``, ``.yaml``, ``.yml``); None loads the default.

    Raises
    ------
    DecisionError
        If the file is missing, has another suffix, or is invalid.
    """
    chosen = DEFAULT_POLICY_PATH if path is None else path
    text, fmt = read_policy_file(chosen, what="policy")
    return policy_from_text(text, fmt=fmt, source=str(chosen))
