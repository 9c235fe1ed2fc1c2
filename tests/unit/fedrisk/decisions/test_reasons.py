"""Reason codes on the real path: stable codes, table loading, and occlusion ranking through the
fitted ``Preprocessor`` and ``NumpyScorer`` (LR and MLP)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedrisk.data.schema import DatasetSchema, FeatureKind, FeatureSpec
from fedrisk.decisions.reasons import (
    ColumnwiseTransform,
    ReasonCodeEntry,
    ReasonCodeTable,
    ReasonRanker,
    rank_reasons,
    reason_code_for,
)
from fedrisk.decisions.scorecard import ScorecardScaling
from fedrisk.errors import DecisionError
from fedrisk.ml.features import Preprocessor
from fedrisk.ml.inference import ModelSpec, NumpyScorer, count_parameters

SCHEMA = DatasetSchema(
    name="toy",
    id_column="id",
    target_column="bad",
    features=(
        FeatureSpec(name="a", kind=FeatureKind.NUMERIC, description="Recent payment delays"),
        FeatureSpec(name="b", kind=FeatureKind.NUMERIC, min=0, max=100),
        FeatureSpec(
            name="c",
            kind=FeatureKind.CATEGORICAL,
            categories=("x", "y"),
            description="Housing status",
        ),
    ),
)
SCALING = ScorecardScaling()
TABLE = ReasonCodeTable.from_schema(SCHEMA)


# Fitted so that the model matrix is exact: a is standardised with mean 0 and scale 1, b (bounded
# to [0, 100]) with mean 50 and scale 25, and c is one-hot over [x, y, __unknown__] with x modal.
# The output columns are [a, (b - 50) / 25, c=x, c=y, c=__unknown__].
FIT_FRAME = pd.DataFrame(
    {
        "id": np.arange(8),
        "bad": [0, 1] * 4,
        "a": [-1.0, 1.0] * 4,
        "b": [25.0, 75.0, 75.0, 25.0] * 2,
        "c": ["x", "x", "x", "y"] * 2,
    }
)
PRE = Preprocessor(SCHEMA).fit(FIT_FRAME)
BASELINE = PRE.reference_row()  # {"a": 0.0, "b": 50.0, "c": "x"}

# Higher a, lower b and c == "y" raise the bad logit: +1 per unit of a, -0.5 per 25 of b, +2 for y.
LR = NumpyScorer(ModelSpec(kind="lr", n_features=5), [1.0, -0.5, 0.0, 2.0, 0.0, -1.0])


def test_the_fitted_preprocessor_gives_the_exact_matrix_the_tests_rely_on() -> None:
    x = PRE.transform(pd.DataFrame({"a": [3.0], "b": [100.0], "c": ["y"]}))

    assert BASELINE == {"a": 0.0, "b": 50.0, "c": "x"}
    assert x.tolist() == [[3.0, 2.0, 0.0, 1.0, 0.0]]
    assert isinstance(PRE, ColumnwiseTransform)


def test_reason_code_is_a_stable_hash_of_the_feature_name() -> None:
    # pinned values: changing them would break stored decisions and notices
    assert reason_code_for("PAY_0") == "RC-F350C2"
    assert reason_code_for("LIMIT_BAL") == "RC-510C8A"
    assert reason_code_for("income") == "RC-00CF14"


def test_table_from_schema_uses_descriptions_and_readable_defaults() -> None:
    table = ReasonCodeTable.from_schema(SCHEMA)

    assert table.features == ["a", "b", "c"]
    assert table.entry("a").text == "Recent payment delays"
    assert table.entry("b").text == "Value of b is less favourable than for a typical applicant"
    assert table.entry("c").code == reason_code_for("c")


def test_table_overrides_replace_derived_entries() -> None:
    override = ReasonCodeEntry(feature="b", code="B01", text="Low savings balance")

    table = ReasonCodeTable.from_schema(SCHEMA, overrides=[override])

    assert table.entry("b") == override
    assert table.entry("a").code == reason_code_for("a")


def test_table_rejects_override_of_unknown_feature() -> None:
    with pytest.raises(DecisionError, match="override feature must be one of"):
        ReasonCodeTable.from_schema(
            SCHEMA, overrides=[ReasonCodeEntry(feature="zz", code="Z1", text="t")]
        )


def test_table_rejects_duplicate_codes() -> None:
    with pytest.raises(DecisionError, match="codes must be unique"):
        ReasonCodeTable.from_schema(
            SCHEMA, overrides=[ReasonCodeEntry(feature="b", code=reason_code_for("a"), text="t")]
        )


def test_table_toml_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "reasons.toml"
    table = ReasonCodeTable.from_schema(
        SCHEMA, overrides=[ReasonCodeEntry(feature="b", code="B01", text='Low "savings"')]
    )
    path.write_text(table.to_toml(), encoding="utf-8")

    again = ReasonCodeTable.from_toml(path)

    assert again == table


def test_table_from_toml_fills_missing_features_from_schema(tmp_path: Path) -> None:
    path = tmp_path / "reasons.toml"
    path.write_text('[[reasons]]\nfeature = "c"\ncode = "HOUSING"\ntext = "Renting"\n')

    table = ReasonCodeTable.from_toml(path, schema=SCHEMA)

    assert table.entry("c").code == "HOUSING"
    assert table.entry("a").code == reason_code_for("a")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[[reasons]]\nfeature = "a"\ncode = "bad code"\ntext = "t"\n', "reasons.0.code|code"),
        ('[[reasons]]\nfeature = "a"\ncode = "A1"\n', "text"),
        ('[[reasons]]\nfeature = "a"\ncode = "A1"\ntext = "t"\nextra = 1\n', "extra"),
        ("reasons = [", "must be readable TOML"),
        ("other = 1\n", "must hold only a \\[\\[reasons\\]\\] array"),
    ],
)
def test_table_from_toml_reports_bad_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "reasons.toml"
    path.write_text(text)

    with pytest.raises(DecisionError, match=match):
        ReasonCodeTable.from_toml(path)


def test_rank_on_a_real_lr_matches_hand_computed_points() -> None:
    applicant = {"a": 3.0, "b": 100.0, "c": "y"}

    reasons = rank_reasons(LR.logits, PRE, applicant, BASELINE, table=TABLE, scaling=SCALING)

    # a: logit +3 vs baseline; c=y: +2; b: -1 (helps the applicant, so not a reason)
    assert [r.feature for r in reasons] == ["a", "c"]
    assert reasons[0].points == pytest.approx(3 * 20 / math.log(2))
    assert reasons[1].points == pytest.approx(2 * 20 / math.log(2))
    assert reasons[0].code == reason_code_for("a")
    assert reasons[0].text == "Recent payment delays"


def test_rank_with_a_bare_transform_callable_gives_the_same_answer() -> None:
    applicant = {"a": 3.0, "b": 100.0, "c": "y"}

    reasons = rank_reasons(
        LR.logits, PRE.transform, applicant, BASELINE, table=TABLE, scaling=SCALING
    )

    assert [(r.feature, round(r.points, 9)) for r in reasons] == [
        ("a", round(3 * 20 / math.log(2), 9)),
        ("c", round(2 * 20 / math.log(2), 9)),
    ]


def test_rank_returns_nothing_when_no_feature_lowers_the_score() -> None:
    reasons = rank_reasons(
        LR.logits,
        PRE,
        {"a": -1.0, "b": 75.0, "c": "x"},
        BASELINE,
        table=TABLE,
        scaling=SCALING,
    )

    assert reasons == []


def test_rank_keeps_at_most_max_reasons_and_breaks_ties_in_baseline_order() -> None:
    applicant = {"a": 2.0, "b": 50.0, "c": "y"}  # a and c both cost exactly 2 logits

    one = rank_reasons(
        LR.logits, PRE, applicant, BASELINE, table=TABLE, scaling=SCALING, max_reasons=1
    )
    both = rank_reasons(LR.logits, PRE, applicant, BASELINE, table=TABLE, scaling=SCALING)

    assert [r.feature for r in one] == ["a"]
    assert [r.feature for r in both] == ["a", "c"]
    assert both[0].points == both[1].points


def test_ranker_calls_the_model_once_per_batch() -> None:
    calls: list[int] = []

    def counting_logit(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        calls.append(x.shape[0])
        return LR.logits(x)

    ranker = ReasonRanker(counting_logit, PRE, BASELINE, table=TABLE, scaling=SCALING)
    x = PRE.transform(
        pd.DataFrame({"a": [3.0, 0.0, 1.0], "b": [100.0, 0.0, 50.0], "c": ["y", "x", "x"]})
    )

    batch = ranker.rank_transformed(x)

    assert calls == [3 + 3 * 3]  # own rows plus one occluded row per feature, in one pass
    assert [[r.feature for r in row] for row in batch] == [["a", "c"], ["b"], ["a"]]


def test_rank_frame_and_rank_agree_with_the_transformed_path() -> None:
    frame = pd.DataFrame({"a": [3.0, 0.0, 1.0], "b": [100.0, 0.0, 50.0], "c": ["y", "x", "x"]})
    ranker = ReasonRanker(LR.logits, PRE, BASELINE, table=TABLE, scaling=SCALING)

    by_frame = ranker.rank_frame(frame)
    one_by_one = [ranker.rank(row) for row in frame.to_dict("records")]

    assert by_frame == one_by_one == ranker.rank_transformed(PRE.transform(frame))


def test_ranker_accepts_precomputed_logits() -> None:
    ranker = ReasonRanker(LR.logits, PRE, BASELINE, table=TABLE, scaling=SCALING)
    x = PRE.transform(pd.DataFrame({"a": [3.0], "b": [100.0], "c": ["y"]}))

    with_logits = ranker.rank_transformed(x, logits=LR.logits(x))

    assert with_logits == ranker.rank_transformed(x)


def test_ranker_rejects_wrong_width_and_missing_inputs() -> None:
    ranker = ReasonRanker(LR.logits, PRE, BASELINE, table=TABLE, scaling=SCALING)

    with pytest.raises(DecisionError, match=r"x must have shape \(m, 5\)"):
        ranker.rank_transformed(np.zeros((2, 3)))
    with pytest.raises(DecisionError, match="applicant must give every model feature"):
        ranker.rank({"a": 1.0, "b": 2.0})


def test_ranker_rejects_features_without_baseline_or_table_entry() -> None:
    with pytest.raises(DecisionError, match="baseline must give a value"):
        ReasonRanker(
            LR.logits,
            PRE,
            {"a": 0.0, "b": 0.0},
            table=TABLE,
            scaling=SCALING,
            features=["a", "b", "c"],
        )
    small = ReasonCodeTable(entries=(TABLE.entry("a"),))
    with pytest.raises(DecisionError, match="reason-code table"):
        ReasonRanker(LR.logits, PRE, BASELINE, table=small, scaling=SCALING)


# -- random real models: the fast path against raw occlusion, LR points against weights ----------


def _fitted_preprocessor(rng: np.random.Generator) -> tuple[Preprocessor, pd.DataFrame]:
    n = 200
    frame = pd.DataFrame(
        {
            "id": np.arange(n),
            "bad": rng.integers(0, 2, n),
            "a": rng.normal(0, 2, n),
            "b": rng.uniform(0, 100, n),
            "c": rng.choice(["x", "y"], n),
        }
    )
    return Preprocessor(SCHEMA).fit(frame), frame


def _scorer(kind: str, width: int, rng: np.random.Generator) -> NumpyScorer:
    spec = ModelSpec(kind=kind, n_features=width, hidden=(8, 4))  # type: ignore[arg-type]
    return NumpyScorer(spec, rng.normal(0, 1, count_parameters(spec)))


@pytest.mark.parametrize("kind", ["lr", "mlp"])
def test_fast_path_equals_raw_occlusion_for_real_models(kind: str) -> None:
    rng = np.random.default_rng(7)
    pre, frame = _fitted_preprocessor(rng)
    scorer = _scorer(kind, pre.n_features_out, rng)
    baseline = pre.reference_row()
    ranker = ReasonRanker(scorer.logits, pre, baseline, table=TABLE, scaling=SCALING)

    for _, row in frame.head(20).iterrows():
        applicant = {"a": float(row["a"]), "b": float(row["b"]), "c": str(row["c"])}

        fast = ranker.rank(applicant)
        slow = rank_reasons(
            scorer.logits, pre.transform, applicant, baseline, table=TABLE, scaling=SCALING
        )

        assert [r.feature for r in fast] == [r.feature for r in slow]
        np.testing.assert_allclose([r.points for r in fast], [r.points for r in slow], atol=1e-4)


def test_lr_points_equal_weight_times_column_differences() -> None:
    rng = np.random.default_rng(3)
    pre, _ = _fitted_preprocessor(rng)
    width = pre.n_features_out
    vector = rng.normal(0, 1, width + 1)  # LR layout: weight (1, width) then bias (1,)
    scorer = NumpyScorer(ModelSpec(kind="lr", n_features=width), vector)
    weights = vector[:width]
    baseline = pre.reference_row()
    applicant = {"a": 5.0, "b": 90.0, "c": "y"}
    x = pre.transform(pd.DataFrame([applicant]))[0].astype(np.float64)
    base = pre.transform(pd.DataFrame([baseline]))[0].astype(np.float64)

    reasons = rank_reasons(scorer.logits, pre, applicant, baseline, table=TABLE, scaling=SCALING)

    for reason in reasons:
        cols = pre.columns_of(reason.feature)
        expected = SCALING.factor * float(weights[cols] @ (x[cols] - base[cols]))
        assert reason.points == pytest.approx(expected, rel=1e-5)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(min_value=-5, max_value=5), min_size=5, max_size=5),
    st.floats(min_value=-10, max_value=10),
    st.floats(min_value=0, max_value=100),
    st.sampled_from(["x", "y"]),
)
def test_reasons_are_positive_sorted_and_at_most_four(
    weights: list[float], a: float, b: float, c: str
) -> None:
    scorer = NumpyScorer(ModelSpec(kind="lr", n_features=5), [*weights, 0.0])

    reasons = rank_reasons(
        scorer.logits, PRE, {"a": a, "b": b, "c": c}, BASELINE, table=TABLE, scaling=SCALING
    )

    points = [r.points for r in reasons]
    assert len(reasons) <= 4
    assert all(p > 0 for p in points)
    assert points == sorted(points, reverse=True)
    assert len({r.feature for r in reasons}) == len(reasons)
