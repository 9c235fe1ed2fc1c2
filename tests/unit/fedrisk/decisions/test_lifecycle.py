"""Tests of A/B/C-card decisions and lifecycle policy loading: every branch of every policy."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fedrisk.decisions.fraud_rules import FraudAction, RuleHit, Severity
from fedrisk.decisions.lifecycle import (
    DEFAULT_POLICY_PATH,
    ApplicationPolicy,
    BehaviourAction,
    BehaviourCode,
    BehaviourPolicy,
    BehaviourSignals,
    CollectionAction,
    CollectionCode,
    CollectionPolicy,
    CollectionSegment,
    CollectionSignals,
    Decision,
    FundsFlow,
    LifecyclePolicy,
    LimitBand,
    decide_application,
    decide_behaviour,
    decide_collection,
    load_policy,
    policy_from_text,
)
from fedrisk.decisions.reasons import ReasonCode
from fedrisk.errors import DecisionError

A_POLICY = ApplicationPolicy()  # pd basis: approve <= 0.08, decline > 0.25
B_POLICY = BehaviourPolicy()  # score basis: raise >= 640, cut < 540
C_POLICY = CollectionPolicy()


def hit(action: FraudAction, rule_id: str = "FR-X") -> RuleHit:
    return RuleHit(
        rule_id=rule_id, kind="blacklist", severity=Severity.HIGH, action=action, message="m"
    )


def reason(i: int) -> ReasonCode:
    return ReasonCode(code=f"RC-{i}", feature=f"f{i}", text=f"t{i}", points=10.0 - i)


# -- A-card ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pd", "expected"),
    [
        (0.01, Decision.APPROVE),
        (0.08, Decision.APPROVE),  # at the approve cut-off
        (0.081, Decision.REVIEW),
        (0.25, Decision.REVIEW),  # at the decline cut-off: not yet worse than it
        (0.2501, Decision.DECLINE),
    ],
)
def test_application_pd_cutoffs(pd: float, expected: Decision) -> None:
    result = decide_application(pd, 650.0, policy=A_POLICY)

    assert result.decision is expected
    assert result.model_decision is expected


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (620.0, Decision.APPROVE),
        (600.0, Decision.APPROVE),
        (570.0, Decision.REVIEW),
        (540.0, Decision.REVIEW),
        (539.9, Decision.DECLINE),
    ],
)
def test_application_score_cutoffs(score: float, expected: Decision) -> None:
    policy = ApplicationPolicy(basis="score", approve_cutoff=600, decline_cutoff=540)

    assert decide_application(0.5, score, policy=policy).decision is expected


def test_approval_gets_the_offer_of_its_score_band() -> None:
    result = decide_application(0.02, 615.0, policy=A_POLICY)

    assert (result.credit_limit, result.price_tier, result.apr) == (8000, "C", 0.20)
    assert result.overrides == ()


def test_review_keeps_a_tentative_offer_and_decline_has_none() -> None:
    review = decide_application(0.15, 530.0, policy=A_POLICY)
    decline = decide_application(0.40, 500.0, policy=A_POLICY)

    assert (review.decision, review.credit_limit, review.price_tier) == (Decision.REVIEW, 1000, "E")
    assert decline.decision is Decision.DECLINE
    assert (decline.credit_limit, decline.price_tier, decline.apr) == (None, None, None)


def test_approval_below_every_band_goes_to_review() -> None:
    result = decide_application(0.05, 510.0, policy=A_POLICY)

    assert result.model_decision is Decision.APPROVE
    assert result.decision is Decision.REVIEW
    assert result.credit_limit is None
    assert "below every limit band" in result.overrides[0]


def test_fraud_decline_hit_overrides_an_approval() -> None:
    result = decide_application(
        0.01, 700.0, policy=A_POLICY, fraud_hits=[hit(FraudAction.DECLINE, "FR-BL")]
    )

    assert result.model_decision is Decision.APPROVE
    assert result.decision is Decision.DECLINE
    assert result.credit_limit is None
    assert result.overrides == ("fraud rules FR-BL: decline",)
    assert result.fraud_hits[0].rule_id == "FR-BL"


def test_fraud_review_hit_sends_an_approval_to_review_but_never_softens_a_decline() -> None:
    hits = [hit(FraudAction.REVIEW, "FR-VEL")]

    approved = decide_application(0.01, 700.0, policy=A_POLICY, fraud_hits=hits)
    declined = decide_application(0.5, 500.0, policy=A_POLICY, fraud_hits=hits)

    assert approved.decision is Decision.REVIEW
    assert approved.overrides == ("fraud rules FR-VEL: review",)
    assert approved.credit_limit == 30000
    assert declined.decision is Decision.DECLINE
    assert declined.overrides == ()


def test_fraud_flag_hit_changes_nothing_but_is_kept() -> None:
    result = decide_application(0.01, 700.0, policy=A_POLICY, fraud_hits=[hit(FraudAction.FLAG)])

    assert result.decision is Decision.APPROVE
    assert len(result.fraud_hits) == 1


@pytest.mark.parametrize(
    ("ring_action", "expected"),
    [
        (FraudAction.REVIEW, Decision.REVIEW),
        (FraudAction.DECLINE, Decision.DECLINE),
        (FraudAction.FLAG, Decision.APPROVE),
    ],
)
def test_ring_flag_follows_the_policy(ring_action: FraudAction, expected: Decision) -> None:
    policy = ApplicationPolicy(ring_action=ring_action)

    flagged = decide_application(0.01, 700.0, policy=policy, ring_flag=True)
    clean = decide_application(0.01, 700.0, policy=policy, ring_flag=False)

    assert flagged.decision is expected
    assert flagged.ring_flag is True
    assert clean.decision is Decision.APPROVE


def test_reasons_are_truncated_to_max_reasons() -> None:
    reasons = [reason(i) for i in range(6)]

    default = decide_application(0.3, 500.0, policy=A_POLICY, reasons=reasons)
    two = decide_application(0.3, 500.0, policy=ApplicationPolicy(max_reasons=2), reasons=reasons)

    assert [r.code for r in default.reasons] == ["RC-0", "RC-1", "RC-2", "RC-3"]
    assert len(two.reasons) == 2


@pytest.mark.parametrize(
    ("pd", "score"), [(-0.1, 600.0), (1.5, 600.0), (float("nan"), 600.0), (0.1, float("inf"))]
)
def test_application_rejects_invalid_model_output(pd: float, score: float) -> None:
    with pytest.raises(DecisionError, match="must be"):
        decide_application(pd, score, policy=A_POLICY)


@given(st.floats(0, 1), st.floats(0, 1))
def test_higher_pd_never_gets_a_better_decision(pd1: float, pd2: float) -> None:
    low, high = sorted([pd1, pd2])
    rank = {Decision.APPROVE: 0, Decision.REVIEW: 1, Decision.DECLINE: 2}

    better = A_POLICY.model_decision(low, 600.0)
    worse = A_POLICY.model_decision(high, 600.0)

    assert rank[better] <= rank[worse]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"approve_cutoff": 0.3, "decline_cutoff": 0.2}, "approve_cutoff must be < decline_cutoff"),
        ({"approve_cutoff": 0.0}, r"approve_cutoff must be in \(0, 1\)"),
        (
            {"basis": "score", "approve_cutoff": 500, "decline_cutoff": 600},
            "approve_cutoff must be > decline_cutoff",
        ),
        (
            {
                "limit_bands": [
                    LimitBand(min_score=600, limit=1, price_tier="A"),
                    LimitBand(min_score=550, limit=2, price_tier="B"),
                ]
            },
            "sorted by strictly ascending min_score",
        ),
        (
            {
                "limit_bands": [
                    LimitBand(min_score=500, limit=5, price_tier="A"),
                    LimitBand(min_score=550, limit=2, price_tier="B"),
                ]
            },
            "limits must not decrease",
        ),
        ({"limit_bands": []}, "at least one band"),
        ({"max_reasons": 5}, "max_reasons"),
    ],
)
def test_application_policy_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        ApplicationPolicy.model_validate(kwargs)


# -- B-card ------------------------------------------------------------------------------------


def behave(
    score: float, limit: float = 10_000, policy: BehaviourPolicy = B_POLICY, **signals: object
) -> tuple[BehaviourAction, float, list[str], list[str]]:
    result = decide_behaviour(
        0.05,
        score,
        current_limit=limit,
        signals=BehaviourSignals.model_validate(signals),
        policy=policy,
    )
    return (
        result.action,
        result.new_limit,
        [w.code for w in result.warnings],
        [r.code for r in result.reasons],
    )


def test_good_score_without_warnings_raises_the_limit() -> None:
    assert behave(660, 10_050) == (
        BehaviourAction.RAISE,
        12_000,
        [],
        [BehaviourCode.GOOD_SCORE],
    )  # 10_050 * 1.2 = 12_060, rounded down to a multiple of 100


def test_raise_is_capped_at_max_limit_and_keeps_at_the_cap() -> None:
    assert behave(660, 45_000)[:2] == (BehaviourAction.RAISE, 50_000)
    assert behave(660, 50_000) == (BehaviourAction.KEEP, 50_000, [], [BehaviourCode.AT_MAX_LIMIT])


def test_warnings_block_a_raise() -> None:
    action, limit, warnings, reasons = behave(660, multi_lender_count=3)

    assert (action, limit) == (BehaviourAction.KEEP, 10_000)
    assert warnings == [BehaviourCode.MULTI_LENDER]
    assert reasons == [BehaviourCode.WARNINGS_BLOCK_RAISE]


def test_middle_score_keeps_the_limit() -> None:
    assert behave(600) == (BehaviourAction.KEEP, 10_000, [], [BehaviourCode.MIDDLE_SCORE])


def test_low_score_cuts_the_limit() -> None:
    assert behave(530) == (BehaviourAction.CUT, 5_000, [], [BehaviourCode.LOW_SCORE])


@pytest.mark.parametrize(
    ("signals", "code"),
    [
        ({"multi_lender_count": 6}, BehaviourCode.MULTI_LENDER),
        ({"payment_delays": 3}, BehaviourCode.PAYMENT_DELAYS),
        ({"days_past_due": 15}, BehaviourCode.PAST_DUE),
    ],
)
def test_severe_warnings_cut_even_with_a_good_score(signals: dict[str, int], code: str) -> None:
    action, limit, warnings, reasons = behave(700, **signals)

    assert (action, limit) == (BehaviourAction.CUT, 5_000)
    assert warnings == [code]
    assert reasons == [code]


def test_mild_delays_and_dpd_only_warn() -> None:
    action, _, warnings, _ = behave(600, payment_delays=1, days_past_due=5)

    assert action is BehaviourAction.KEEP
    assert warnings == [BehaviourCode.PAYMENT_DELAYS, BehaviourCode.PAST_DUE]


def test_long_dpd_freezes() -> None:
    assert behave(700, days_past_due=30)[:2] == (BehaviourAction.FREEZE, 0.0)


def test_prohibited_use_freezes_and_names_each_kind() -> None:
    flows = [
        {"kind": "securities", "amount": 2_000.0},
        {"kind": "real_estate"},  # flagged, amount unknown
        {"kind": "groceries", "amount": 50.0},  # allowed use
    ]

    result = decide_behaviour(
        0.01,
        700,
        current_limit=10_000,
        signals=BehaviourSignals.model_validate({"prohibited_use_flows": flows}),
        policy=B_POLICY,
    )

    assert result.action is BehaviourAction.FREEZE
    assert result.new_limit == 0.0
    texts = [w.text for w in result.warnings]
    assert texts == [
        "Loan funds flowing to a prohibited use: real estate",
        "Loan funds flowing to a prohibited use: securities",
    ]
    assert all(w.code == BehaviourCode.PROHIBITED_USE for w in result.warnings)


def test_prohibited_use_below_the_minimum_amount_is_ignored_and_cut_action_is_configurable() -> (
    None
):
    small = behave(700, prohibited_use_flows=[FundsFlow(kind="securities", amount=0.0)])
    cut_policy = BehaviourPolicy(prohibited_action="cut")
    cut = behave(700, policy=cut_policy, prohibited_use_flows=[FundsFlow(kind="securities")])

    assert small[0] is BehaviourAction.RAISE
    assert cut[:2] == (BehaviourAction.CUT, 5_000)


def test_freeze_outranks_cut_and_reasons_name_the_freeze_triggers() -> None:
    action, _, warnings, reasons = behave(500, multi_lender_count=9, days_past_due=40)

    assert action is BehaviourAction.FREEZE
    assert warnings == [BehaviourCode.MULTI_LENDER, BehaviourCode.PAST_DUE]
    assert reasons == [BehaviourCode.PAST_DUE]


def test_behaviour_on_pd_basis() -> None:
    policy = BehaviourPolicy(basis="pd", raise_cutoff=0.02, cut_cutoff=0.10)
    signals = BehaviourSignals()

    low = decide_behaviour(0.01, 0.0, current_limit=1000, signals=signals, policy=policy)
    mid = decide_behaviour(0.05, 0.0, current_limit=1000, signals=signals, policy=policy)
    high = decide_behaviour(0.2, 0.0, current_limit=1000, signals=signals, policy=policy)

    assert [low.action, mid.action, high.action] == [
        BehaviourAction.RAISE,
        BehaviourAction.KEEP,
        BehaviourAction.CUT,
    ]


def test_behaviour_rejects_invalid_inputs() -> None:
    with pytest.raises(DecisionError, match="current_limit must be"):
        decide_behaviour(0.1, 600, current_limit=-1, signals=BehaviourSignals(), policy=B_POLICY)
    with pytest.raises(ValidationError):
        BehaviourSignals(multi_lender_count=-1)
    with pytest.raises(ValidationError):
        FundsFlow(kind="securities", amount=-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"multi_lender_warn": 7}, "multi_lender_warn must be <= multi_lender_cut"),
        ({"delay_warn": 4}, "delay_warn must be <= delay_cut"),
        ({"dpd_cut": 60}, "dpd_cut must be <= dpd_freeze"),
        ({"raise_cutoff": 500}, "raise_cutoff must be > cut_cutoff"),
        ({"cut_factor": 1.5}, "cut_factor"),
        ({"raise_factor": 0.9}, "raise_factor"),
    ],
)
def test_behaviour_policy_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        BehaviourPolicy.model_validate(kwargs)


# -- C-card ------------------------------------------------------------------------------------


def collect(
    rp: float, policy: CollectionPolicy = C_POLICY, **signals: object
) -> tuple[CollectionSegment, CollectionAction, list[str]]:
    result = decide_collection(rp, signals=CollectionSignals.model_validate(signals), policy=policy)
    return result.segment, result.action, [r.code for r in result.reasons]


def test_high_recovery_early_delinquency_is_short_oversight() -> None:
    assert collect(0.9, days_past_due=5) == (
        CollectionSegment.SHORT_OVERSIGHT,
        CollectionAction.REMINDER_MESSAGE,
        [CollectionCode.HIGH_RECOVERY, CollectionCode.EARLY_DELINQUENCY],
    )


@pytest.mark.parametrize(
    "signals",
    [
        {"days_past_due": 45},  # too late for an oversight
        {"days_past_due": 5, "broken_promises": 1},
        {"days_past_due": 5, "prior_delinquencies": 2},
    ],
)
def test_high_recovery_is_not_oversight_when_another_fact_speaks_against(
    signals: dict[str, int],
) -> None:
    segment, _, _ = collect(0.9, **signals)

    assert segment is CollectionSegment.ABILITY_PROBLEM


def test_ability_problem_early_gets_a_call_later_a_repayment_plan() -> None:
    early = collect(0.5, days_past_due=10)
    late = collect(0.5, days_past_due=30)

    assert early == (
        CollectionSegment.ABILITY_PROBLEM,
        CollectionAction.AGENT_CALL,
        [CollectionCode.MIDDLE_RECOVERY],
    )
    assert late == (
        CollectionSegment.ABILITY_PROBLEM,
        CollectionAction.REPAYMENT_PLAN_OFFER,
        [CollectionCode.MIDDLE_RECOVERY, CollectionCode.LONG_DELINQUENCY],
    )


def test_repeat_delinquency_is_named() -> None:
    _, _, reasons = collect(0.5, days_past_due=10, prior_delinquencies=3)

    assert CollectionCode.REPEAT_DELINQUENCY in reasons


@pytest.mark.parametrize(
    ("rp", "signals", "code"),
    [
        (0.6, {"days_past_due": 20, "broken_promises": 2}, CollectionCode.BROKEN_PROMISES),
        (0.6, {"days_past_due": 20, "contactable": False}, CollectionCode.UNCONTACTABLE),
        (0.1, {"days_past_due": 20}, CollectionCode.LOW_RECOVERY),
    ],
)
def test_unwilling_early_gets_a_call(rp: float, signals: dict[str, object], code: str) -> None:
    assert collect(rp, **signals) == (
        CollectionSegment.UNWILLING,
        CollectionAction.AGENT_CALL,
        [code],
    )


def test_unwilling_long_delinquency_goes_to_legal() -> None:
    segment, action, reasons = collect(0.1, days_past_due=120, broken_promises=3)

    assert (segment, action) == (CollectionSegment.UNWILLING, CollectionAction.LEGAL_REFERRAL)
    assert reasons == [
        CollectionCode.BROKEN_PROMISES,
        CollectionCode.LOW_RECOVERY,
        CollectionCode.LONG_DELINQUENCY,
    ]


def test_uncontactable_can_be_configured_as_not_unwilling() -> None:
    policy = CollectionPolicy(uncontactable_is_unwilling=False)

    segment, _, _ = collect(0.5, policy=policy, days_past_due=20, contactable=False)

    assert segment is CollectionSegment.ABILITY_PROBLEM


def test_collection_rejects_invalid_inputs_and_policies() -> None:
    with pytest.raises(DecisionError, match=r"recovery_probability must be in \[0, 1\]"):
        decide_collection(1.2, signals=CollectionSignals(days_past_due=3), policy=C_POLICY)
    with pytest.raises(ValidationError, match="unwilling_max_recovery must be <"):
        CollectionPolicy(unwilling_max_recovery=0.8)
    with pytest.raises(ValidationError):
        CollectionSignals(days_past_due=-1)


# -- bundle and loading ------------------------------------------------------------------------


def test_default_file_equals_the_code_defaults() -> None:
    assert load_policy() == LifecyclePolicy()
    assert load_policy(DEFAULT_POLICY_PATH) == LifecyclePolicy()


def test_partial_file_overrides_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[application]\napprove_cutoff = 0.05\n[collection]\nlegal_min_dpd = 60\n")

    policy = load_policy(path)

    assert policy.application.approve_cutoff == 0.05
    assert policy.application.decline_cutoff == 0.25
    assert policy.collection.legal_min_dpd == 60
    assert policy.behaviour == BehaviourPolicy()


def test_yaml_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("behaviour:\n  max_limit: 20000\n")

    assert load_policy(path).behaviour.max_limit == 20000


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[application]\napprove_cutoff = 0.5\n", "application: approve_cutoff must be <"),
        ("[application]\nfoo = 1\n", "application.foo: Extra inputs are not permitted"),
        ("[behaviour]\nmax_limit = -3\n", "behaviour.max_limit: .*; got -3"),
        (
            "[[application.limit_bands]]\nmin_score = 600\nlimit = 1\nprice_tier = 'A'\n"
            "[[application.limit_bands]]\nmin_score = 500\nlimit = 2\nprice_tier = 'B'\n",
            "application: limit_bands must be sorted",
        ),
        ("[application\n", "must be valid TOML"),
        ("format_version = 2\n", "format_version"),
    ],
)
def test_invalid_policy_text_names_the_field(text: str, match: str) -> None:
    with pytest.raises(DecisionError, match=match):
        policy_from_text(text, source="test.toml")


def test_load_policy_rejects_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(DecisionError, match="must be readable"):
        load_policy(tmp_path / "absent.toml")
    with pytest.raises(DecisionError, match=r"must end in \.toml, \.yaml or \.yml"):
        load_policy(tmp_path / "policy.json")


def test_decisions_serialise_to_json() -> None:
    result = decide_application(
        0.01, 700.0, policy=A_POLICY, reasons=[reason(1)], fraud_hits=[hit(FraudAction.FLAG)]
    )

    data = result.model_dump(mode="json")

    assert data["decision"] == "approve"
    assert data["fraud_hits"][0]["action"] == "flag"
    assert data["reasons"][0]["code"] == "RC-1"
