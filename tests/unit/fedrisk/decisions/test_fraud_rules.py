"""Tests of the anti-fraud rules engine: each rule kind, history lookups, file validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedrisk.decisions.fraud_rules import (
    DEFAULT_FRAUD_RULES_PATH,
    FraudAction,
    FraudRuleEngine,
    InMemoryHistory,
    RuleHit,
    Severity,
    evaluate,
    load_default_rules,
    load_rules,
    rules_from_text,
    strongest_action,
)
from fedrisk.errors import DecisionError

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
EMPTY_LISTS = {"device_blacklist": [], "id_blacklist": [], "phone_blacklist": []}


def clean_application() -> dict[str, object]:
    return {
        "applicant_name": "Ada  Lovelace",
        "phone_owner_name": "ada lovelace",
        "id_number": "AB-123 456",
        "phone_registered_id": "ab123456",
        "device_id": "dev-1",
        "phone": "+44 20 7946 0000",
        "age": 36,
    }


def default_engine(**lists: list[str]) -> FraudRuleEngine:
    return FraudRuleEngine(load_default_rules(), lists={**EMPTY_LISTS, **lists})


def hit_ids(hits: list[RuleHit]) -> list[str]:
    return [h.rule_id for h in hits]


def test_default_rules_load_and_a_clean_application_has_no_hits() -> None:
    engine = default_engine()

    hits = engine.evaluate(clean_application(), history=InMemoryHistory(), now=NOW)

    assert DEFAULT_FRAUD_RULES_PATH.is_file()
    assert engine.needs_history
    assert hits == []


def test_name_mismatch_with_phone_owner_is_a_review_hit() -> None:
    application = clean_application() | {"phone_owner_name": "Charles Babbage"}

    hits = default_engine().evaluate(application, history=InMemoryHistory(), now=NOW)

    assert hits == [
        RuleHit(
            rule_id="FR-NAME-PHONE-MISMATCH",
            kind="mismatch",
            severity=Severity.MEDIUM,
            action=FraudAction.REVIEW,
            message="Applicant name differs from the registered owner of the phone number",
        )
    ]


def test_id_mismatch_with_phone_registration_ignores_punctuation_but_not_digits() -> None:
    application = clean_application() | {"phone_registered_id": "AB123457"}

    hits = default_engine().evaluate(application, history=InMemoryHistory(), now=NOW)

    assert hit_ids(hits) == ["FR-ID-PHONE-MISMATCH"]


def test_mismatch_with_a_missing_field_skips_or_hits_as_configured() -> None:
    text = """
[[rules]]
id = "M1"
kind = "mismatch"
fields = ["a", "b"]
severity = "low"
action = "flag"
message = "differ"

[[rules]]
id = "M2"
kind = "mismatch"
fields = ["a", "b"]
on_missing = "hit"
severity = "low"
action = "flag"
message = "missing"
"""
    rules = rules_from_text(text)

    assert hit_ids(evaluate(rules, {"a": "x", "b": None}, now=NOW)) == ["M2"]
    assert hit_ids(evaluate(rules, {"a": "x", "b": " "}, now=NOW)) == ["M2"]
    assert hit_ids(evaluate(rules, {"a": "x", "b": "y"}, now=NOW)) == ["M1", "M2"]
    assert evaluate(rules, {"a": "x", "b": "X"}, now=NOW) == []


def test_blacklisted_device_id_and_phone_are_declined() -> None:
    engine = default_engine(
        device_blacklist=["dev-1"], phone_blacklist=["+44 (20) 7946-0000"], id_blacklist=[]
    )

    hits = engine.evaluate(clean_application(), history=InMemoryHistory(), now=NOW)

    assert hit_ids(hits) == ["FR-DEVICE-BLACKLIST", "FR-PHONE-BLACKLIST"]
    assert strongest_action(hits) is FraudAction.DECLINE


def test_blacklist_with_inline_values_and_static_lists() -> None:
    text = """
[lists]
bad_ids = ["X-1"]

[[rules]]
id = "B1"
kind = "blacklist"
field = "id_number"
list_name = "bad_ids"
values = ["y-2"]
normalize = "alnum"
severity = "critical"
action = "decline"
message = "blacklisted"
"""
    rules = rules_from_text(text)

    assert hit_ids(evaluate(rules, {"id_number": "x1"}, now=NOW)) == ["B1"]
    assert hit_ids(evaluate(rules, {"id_number": "Y 2"}, now=NOW)) == ["B1"]
    assert evaluate(rules, {"id_number": "Z3"}, now=NOW) == []
    # the engine's lists replace the static list of the same name
    assert evaluate(rules, {"id_number": "x1"}, now=NOW, lists={"bad_ids": []}) == []


def test_engine_requires_every_external_list() -> None:
    with pytest.raises(DecisionError, match="lists must provide 'device_blacklist'"):
        FraudRuleEngine(load_default_rules())


def test_velocity_rule_counts_earlier_applications_within_the_window() -> None:
    engine = default_engine()
    history = InMemoryHistory(fields=["device_id", "id_number"])
    history.record({"device_id": "dev-1"}, at=NOW - timedelta(hours=30))  # outside 24 h
    for hours in (20, 5, 1):
        history.record({"device_id": "dev-1"}, at=NOW - timedelta(hours=hours))
    application = clean_application()

    hits = engine.evaluate(application, history=history, now=NOW)
    later = engine.evaluate(application, history=history, now=NOW + timedelta(hours=6))

    # three earlier in 24 h + this one = 4 > 3
    assert hit_ids(hits) == ["FR-DEVICE-VELOCITY"]
    # six hours later the one from 20 h before noon has left the window: 2 + 1 = 3
    assert later == []


def test_velocity_rule_does_not_fire_at_the_limit() -> None:
    history = InMemoryHistory()
    for hours in (3, 2):
        history.record(
            {"device_id": "dev-1", "id_number": "other"}, at=NOW - timedelta(hours=hours)
        )

    hits = default_engine().evaluate(clean_application(), history=history, now=NOW)

    assert hits == []  # 2 earlier + this one = 3, not more than 3


def test_velocity_rule_needs_a_history() -> None:
    with pytest.raises(DecisionError, match="history must be given"):
        default_engine().evaluate(clean_application(), now=NOW)


@pytest.mark.parametrize(
    ("age", "fires"),
    [(17, True), (18, False), (70, False), (70.5, True), ("30", False), (None, False)],
)
def test_age_outside_policy_is_declined(age: object, fires: bool) -> None:
    application = clean_application() | {"age": age}

    hits = default_engine().evaluate(application, history=InMemoryHistory(), now=NOW)

    assert hit_ids(hits) == (["FR-AGE-POLICY"] if fires else [])


def test_range_rule_rejects_a_non_numeric_value() -> None:
    application = clean_application() | {"age": "thirty"}

    with pytest.raises(DecisionError, match="age must be a number; got 'thirty'"):
        default_engine().evaluate(application, history=InMemoryHistory(), now=NOW)


def test_disabled_rules_do_not_fire() -> None:
    text = """
[[rules]]
id = "R1"
kind = "range"
field = "age"
min = 18
enabled = false
severity = "low"
action = "decline"
message = "young"
"""
    assert evaluate(rules_from_text(text), {"age": 3}, now=NOW) == []


def test_naive_now_is_rejected() -> None:
    with pytest.raises(DecisionError, match="now must be a timezone-aware datetime"):
        default_engine().evaluate(
            clean_application(), history=InMemoryHistory(), now=datetime(2025, 1, 1)
        )


def test_strongest_action_orders_decline_review_flag() -> None:
    def h(action: FraudAction) -> RuleHit:
        return RuleHit(rule_id="r", kind="k", severity=Severity.LOW, action=action, message="m")

    assert strongest_action([]) is None
    assert strongest_action([h(FraudAction.FLAG), h(FraudAction.REVIEW)]) is FraudAction.REVIEW
    assert strongest_action([h(FraudAction.DECLINE), h(FraudAction.FLAG)]) is FraudAction.DECLINE


# -- file validation ---------------------------------------------------------------------------

VELOCITY = """
[[rules]]
id = "FR-VEL"
kind = "velocity"
field = "device_id"
window_hours = 24
max_applications = 3
severity = "high"
action = "review"
message = "too many"
"""


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            VELOCITY.replace("window_hours = 24", "window_hours = -1"),
            r"rule 'FR-VEL' \(rules\[0\]\) field window_hours: .*greater than 0; got -1",
        ),
        (
            VELOCITY.replace('field = "device_id"\n', ""),
            r"rule 'FR-VEL' \(rules\[0\]\) field field: Field required",
        ),
        (
            VELOCITY + 'colour = "red"\n',
            r"rule 'FR-VEL' \(rules\[0\]\) field colour: Extra inputs are not permitted",
        ),
        (
            VELOCITY.replace('action = "review"', 'action = "block"'),
            r"rule 'FR-VEL' \(rules\[0\]\) field action: .*'decline', 'review' or 'flag'",
        ),
        (
            VELOCITY.replace('kind = "velocity"', 'kind = "magic"'),
            r"rule 'FR-VEL' \(rules\[0\]\).*does not match any of the expected tags",
        ),
        (
            VELOCITY.replace('id = "FR-VEL"', 'id = "bad id!"'),
            r"rule 'bad id!' \(rules\[0\]\) field id",
        ),
        (VELOCITY + VELOCITY, "rule ids must be unique; got 'FR-VEL' twice"),
        (
            "[[rules]]\nid='R'\nkind='range'\nfield='age'\nmin=5\nmax=1\nseverity='low'\n"
            "action='flag'\nmessage='m'\n",
            r"rule 'R' \(rules\[0\]\): min must be <= max; got min=5.0, max=1.0",
        ),
        (
            "[[rules]]\nid='B'\nkind='blacklist'\nfield='x'\nlist_name='nope'\nseverity='low'\n"
            "action='flag'\nmessage='m'\n",
            r"rule 'B' field list_name must name a list in \[lists\] or external_lists; "
            r"got 'nope'",
        ),
        (
            "[[rules]]\nid='B'\nkind='blacklist'\nfield='x'\nseverity='low'\naction='flag'\n"
            "message='m'\n",
            r"rule 'B' \(rules\[0\]\): list_name or values must be given",
        ),
        (
            "[[rules]]\nid='M'\nkind='mismatch'\nfields=['a','a']\nseverity='low'\naction='flag'\n"
            "message='m'\n",
            "fields must name two different fields",
        ),
        ("rules = [", "must be valid TOML"),
        ("format_version = 2\n", "format_version"),
    ],
)
def test_invalid_rule_files_name_the_rule_and_field(text: str, match: str) -> None:
    with pytest.raises(DecisionError, match=match):
        rules_from_text(text, source="rules.toml")


def test_yaml_rules_have_the_same_structure(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - id: FR-AGE\n"
        "    kind: range\n"
        "    field: age\n"
        "    min: 21\n"
        "    severity: medium\n"
        "    action: decline\n"
        "    message: too young\n"
    )

    rules = load_rules(path)

    assert hit_ids(evaluate(rules, {"age": 20}, now=NOW)) == ["FR-AGE"]


def test_yaml_errors_are_reported(tmp_path: Path) -> None:
    bad_syntax = tmp_path / "a.yml"
    bad_syntax.write_text("rules: [\n")
    not_mapping = tmp_path / "b.yml"
    not_mapping.write_text("- 1\n- 2\n")

    with pytest.raises(DecisionError, match="must be valid YAML"):
        load_rules(bad_syntax)
    with pytest.raises(DecisionError, match="must be a mapping at top level; got list"):
        load_rules(not_mapping)


def test_load_rules_rejects_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DecisionError, match=r"must end in \.toml, \.yaml or \.yml"):
        load_rules(tmp_path / "rules.json")
    with pytest.raises(DecisionError, match="must be readable"):
        load_rules(tmp_path / "absent.toml")


# -- in-memory history -------------------------------------------------------------------------


def test_history_prune_and_field_filter() -> None:
    history = InMemoryHistory(fields=["device_id"])
    history.record({"device_id": "d", "ip": "1.2.3.4"}, at=NOW - timedelta(days=3))
    history.record({"device_id": "d"}, at=NOW)

    dropped = history.prune(NOW - timedelta(days=1))

    assert dropped == 1
    assert history.count_recent("device_id", "d", NOW - timedelta(days=10)) == 1
    assert history.count_recent("ip", "1.2.3.4", NOW - timedelta(days=10)) == 0


def test_history_rejects_naive_times() -> None:
    with pytest.raises(DecisionError, match="at must be a timezone-aware datetime"):
        InMemoryHistory().record({"device_id": "d"}, at=datetime(2025, 1, 1))


@given(
    st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 100)), max_size=40),
    st.integers(0, 100),
)
def test_history_count_matches_brute_force(events: list[tuple[str, int]], since: int) -> None:
    history = InMemoryHistory()
    for value, minute in events:
        history.record({"device_id": value}, at=NOW + timedelta(minutes=minute))

    counted = history.count_recent("device_id", "a", NOW + timedelta(minutes=since))

    assert counted == sum(1 for v, m in events if v == "a" and m >= since)
