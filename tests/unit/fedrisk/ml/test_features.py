"""Tests for additive feature statistics and the preprocessor fitted from them."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedrisk.data.schema import DatasetSchema, FeatureKind, FeatureSpec
from fedrisk.errors import ConfigError, SchemaError
from fedrisk.ml.features import UNKNOWN_CATEGORY, FeatureStats, Preprocessor

HOMES = ("own", "rent", "mortgage")


def make_schema() -> DatasetSchema:
    return DatasetSchema(
        name="unit",
        id_column="id",
        target_column="bad",
        features=(
            FeatureSpec(name="age", kind=FeatureKind.NUMERIC, min=18, max=100, nullable=True),
            FeatureSpec(name="income", kind=FeatureKind.NUMERIC, min=0, max=1e6, transform="log1p"),
            FeatureSpec(name="score", kind=FeatureKind.NUMERIC, nullable=True),
            FeatureSpec(name="home", kind=FeatureKind.CATEGORICAL, categories=HOMES, nullable=True),
        ),
    )


def make_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n).astype(float)
    age[rng.random(n) < 0.1] = np.nan
    score = rng.normal(600, 50, n)
    score[rng.random(n) < 0.05] = np.nan
    home = rng.choice(np.array([*HOMES, "boat"], dtype=object), n, p=[0.4, 0.3, 0.25, 0.05])
    home[rng.random(n) < 0.05] = None
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "bad": (rng.random(n) < 0.2).astype(int),
            "age": age,
            "income": rng.lognormal(10, 1, n),
            "score": score,
            "home": home,
        }
    )


rows = st.fixed_dictionaries(
    {
        "age": st.one_of(st.none(), st.floats(min_value=0, max_value=150)),
        "income": st.floats(min_value=0, max_value=2e6),
        "score": st.one_of(st.none(), st.floats(min_value=-1e4, max_value=1e4)),
        "home": st.sampled_from([*HOMES, "boat", None]),
        "bad": st.sampled_from([0, 1]),
    }
)


def frame_of(records: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=["age", "income", "score", "home", "bad"])
    for col in ("age", "income", "score"):
        frame[col] = frame[col].astype(float)
    return frame


def assert_stats_close(a: FeatureStats, b: FeatureStats) -> None:
    va, vb = a.to_vector(), b.to_vector()
    assert va.shape == vb.shape
    np.testing.assert_allclose(va, vb, rtol=1e-9, atol=1e-6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rows, min_size=0, max_size=40), st.lists(rows, min_size=0, max_size=40))
def test_merged_stats_equal_stats_of_union(
    left: list[dict[str, object]], right: list[dict[str, object]]
) -> None:
    # Arrange
    schema = make_schema()
    a, b = frame_of(left), frame_of(right)

    # Act
    merged = FeatureStats.from_frame(a, schema).merge(FeatureStats.from_frame(b, schema))
    union = FeatureStats.from_frame(pd.concat([a, b], ignore_index=True), schema)

    # Assert
    assert_stats_close(merged, union)
    assert merged.n_rows == len(left) + len(right)
    assert merged.category_counts("home") == union.category_counts("home")


@settings(max_examples=30, deadline=None)
@given(st.lists(rows, min_size=1, max_size=40), st.lists(rows, min_size=1, max_size=40))
def test_preprocessor_from_merged_stats_equals_fit_on_union(
    left: list[dict[str, object]], right: list[dict[str, object]]
) -> None:
    # Arrange
    schema = make_schema()
    a, b = frame_of(left), frame_of(right)
    union = pd.concat([a, b], ignore_index=True)

    # Act
    stats = FeatureStats.from_frame(a, schema).merge(FeatureStats.from_frame(b, schema))
    federated = Preprocessor(schema).fit_stats(stats)
    pooled = Preprocessor(schema).fit(union)

    # Assert
    np.testing.assert_allclose(
        federated.transform(union), pooled.transform(union), rtol=1e-5, atol=1e-5
    )


def test_vector_sum_equals_merged_vector_and_round_trips() -> None:
    # Arrange
    schema = make_schema()
    parts = [make_frame(200, seed) for seed in range(3)]
    stats = [FeatureStats.from_frame(p, schema) for p in parts]

    # Act
    summed = sum((s.to_vector() for s in stats), start=np.zeros_like(stats[0].to_vector()))
    merged = stats[0].merge(stats[1]).merge(stats[2])
    rebuilt = FeatureStats.from_vector(summed, schema, n_bins=64)

    # Assert
    np.testing.assert_allclose(summed, merged.to_vector(), rtol=1e-12)
    np.testing.assert_array_equal(
        FeatureStats.from_vector(merged.to_vector(), schema).to_vector(), merged.to_vector()
    )
    assert rebuilt.to_vector().shape == (FeatureStats.vector_length(schema, n_bins=64),)


def test_from_vector_rejects_wrong_length_nan_and_negative_counts() -> None:
    schema = make_schema()
    good = FeatureStats.from_frame(make_frame(50), schema).to_vector()
    with pytest.raises(SchemaError, match="must have"):
        FeatureStats.from_vector(good[:-1], schema)
    with pytest.raises(SchemaError, match="finite"):
        FeatureStats.from_vector(np.where(np.arange(good.size) == 3, np.nan, good), schema)
    bad = good.copy()
    bad[0] = -5.0
    with pytest.raises(SchemaError, match="non-negative"):
        FeatureStats.from_vector(bad, schema)


def test_merge_refuses_other_schema_or_resolution() -> None:
    schema = make_schema()
    other = schema.model_copy(update={"name": "other"})
    frame = make_frame(30)
    with pytest.raises(SchemaError, match="share a schema"):
        FeatureStats.from_frame(frame, schema).merge(FeatureStats.from_frame(frame, other))
    with pytest.raises(SchemaError, match="n_bins"):
        FeatureStats.from_frame(frame, schema, n_bins=8).merge(
            FeatureStats.from_frame(frame, schema, n_bins=16)
        )


def test_stats_accessors_match_numpy() -> None:
    # Arrange
    schema = make_schema()
    frame = make_frame(500)

    # Act
    stats = FeatureStats.from_frame(frame, schema)

    # Assert
    age = frame["age"].dropna().to_numpy()
    assert stats.count("age") == age.size
    assert stats.mean("age") == pytest.approx(age.mean(), rel=1e-12)
    assert stats.variance("age") == pytest.approx(age.var(), rel=1e-9)
    log_income = np.log1p(frame["income"].clip(0, 1e6).to_numpy())
    assert stats.mean("income") == pytest.approx(log_income.mean(), rel=1e-12)
    hist = stats.histogram("age")
    assert hist is not None and hist.sum() == age.size
    assert stats.histogram("score") is None
    counts = stats.category_counts("home")
    assert counts["own"] == (frame["home"] == "own").sum()
    assert counts[UNKNOWN_CATEGORY] == (frame["home"] == "boat").sum()
    assert counts["__missing__"] == frame["home"].isna().sum()
    assert stats.positive_rate == pytest.approx(frame["bad"].mean())


def test_stats_without_target_column_have_no_positive_rate() -> None:
    stats = FeatureStats.from_frame(make_frame(20).drop(columns=["bad"]), make_schema())
    assert stats.n_labelled == 0
    assert stats.positive_rate is None


def test_transform_shape_dtype_and_column_names() -> None:
    # Arrange
    schema = make_schema()
    frame = make_frame(300)

    # Act
    pre = Preprocessor(schema).fit(frame)
    out = pre.transform(frame)

    # Assert
    assert out.dtype == np.float32
    assert out.shape == (300, 3 + len(HOMES) + 1)
    assert pre.feature_names_out_ == [
        "age",
        "income",
        "score",
        "home=own",
        "home=rent",
        "home=mortgage",
        f"home={UNKNOWN_CATEGORY}",
    ]
    assert pre.columns_of("income") == [1]
    assert pre.columns_of("home") == [3, 4, 5, 6]
    with pytest.raises(SchemaError):
        pre.columns_of("nope")


def test_numeric_columns_are_standardised_and_nan_imputed_with_mean() -> None:
    # Arrange
    schema = make_schema()
    frame = make_frame(1000)
    pre = Preprocessor(schema).fit(frame)

    # Act
    out = pre.transform(frame)

    # Assert
    present = frame["age"].notna().to_numpy()
    age = out[:, pre.columns_of("age")[0]]
    assert age[present].mean() == pytest.approx(0.0, abs=1e-5)
    assert age[present].std() == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_array_equal(age[~present], 0.0)
    income = out[:, 1]
    expected = np.log1p(frame["income"].to_numpy())
    expected = (expected - expected.mean()) / expected.std()
    np.testing.assert_allclose(income, expected, atol=1e-5)


def test_unknown_and_missing_categories_go_to_unknown_column() -> None:
    # Arrange
    schema = make_schema()
    pre = Preprocessor(schema).fit(make_frame(100))
    frame = make_frame(4).assign(home=np.array(["rent", "castle", None, "own"], dtype=object))

    # Act
    block = pre.transform(frame)[:, pre.columns_of("home")]

    # Assert
    np.testing.assert_array_equal(block, [[0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0]])


def test_integer_coded_categories_match_their_string_names() -> None:
    schema = DatasetSchema(
        name="codes",
        id_column="id",
        target_column=None,
        features=(FeatureSpec(name="edu", kind=FeatureKind.CATEGORICAL, categories=("1", "2")),),
    )
    frame = pd.DataFrame({"edu": [1.0, 2.0, 3.0, np.nan]})
    pre = Preprocessor(schema).fit(frame)
    np.testing.assert_array_equal(
        pre.transform(frame), [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]]
    )


def test_transform_records_equals_transform_of_frame() -> None:
    schema = make_schema()
    frame = make_frame(50)
    pre = Preprocessor(schema).fit(frame)
    records: list[dict[str, object]] = [
        {str(k): (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]
    np.testing.assert_array_equal(pre.transform_records(records), pre.transform(frame))
    with pytest.raises(SchemaError, match="must be a number"):
        pre.transform_records([{**records[0], "age": "old"}])


def test_values_outside_schema_bounds_are_clipped() -> None:
    schema = make_schema()
    pre = Preprocessor(schema).fit(make_frame(100))
    frame = make_frame(2).assign(age=[100.0, 250.0])
    out = pre.transform(frame)
    assert out[0, 0] == out[1, 0]


def test_missing_feature_column_is_a_schema_error() -> None:
    pre = Preprocessor(make_schema()).fit(make_frame(10))
    with pytest.raises(SchemaError, match="missing \\['score'\\]") as info:
        pre.transform(make_frame(10).drop(columns=["score"]))
    assert info.value.problems == ["score: column missing"]


def test_non_numeric_values_in_numeric_column_are_a_schema_error() -> None:
    frame = make_frame(5).astype({"age": object})
    frame.loc[2, "age"] = "old"
    with pytest.raises(SchemaError, match="age must be numeric"):
        Preprocessor(make_schema()).fit(frame)


def test_unfitted_preprocessor_refuses_to_transform() -> None:
    with pytest.raises(ConfigError, match="fitted"):
        Preprocessor(make_schema()).transform(make_frame(3))


def test_to_dict_is_json_and_round_trips_exactly() -> None:
    # Arrange
    schema = make_schema()
    frame = make_frame(400)
    for pre in (
        Preprocessor(schema).fit(frame),
        Preprocessor(schema, binning="quantile", bin_features=["age", "income"]).fit(frame),
    ):
        # Act
        text = json.dumps(pre.to_dict())
        restored = Preprocessor.from_dict(json.loads(text))

        # Assert
        assert restored.to_dict() == pre.to_dict()
        assert restored.feature_names_out_ == pre.feature_names_out_
        np.testing.assert_array_equal(restored.transform(frame), pre.transform(frame))


def test_from_dict_rejects_malformed_state() -> None:
    state = Preprocessor(make_schema()).fit(make_frame(30)).to_dict()
    with pytest.raises(ConfigError, match="format"):
        Preprocessor.from_dict({**state, "format": "other"})
    with pytest.raises(ConfigError):
        Preprocessor.from_dict({k: v for k, v in state.items() if k != "features"})
    broken = json.loads(json.dumps(state))
    broken["features"][0]["scale"] = -1.0
    with pytest.raises(ConfigError, match="scale"):
        Preprocessor.from_dict(broken)


def test_quantile_bins_of_a_continuous_feature_are_roughly_equal_frequency() -> None:
    # Arrange
    schema = make_schema()
    frame = make_frame(5000).assign(age=np.random.default_rng(1).uniform(18, 100, 5000))

    # Act
    pre = Preprocessor(schema, binning="quantile", n_quantiles=4, bin_features=["age"]).fit(frame)
    block = pre.transform(frame)[:, pre.columns_of("age")]

    # Assert
    assert block.shape[1] == 4
    np.testing.assert_array_equal(block.sum(axis=1), 1.0)
    shares = block.mean(axis=0)
    np.testing.assert_allclose(shares, 0.25, atol=0.03)
    assert pre.feature_names_out_[pre.columns_of("age")[0]] == "age:q0"


def test_quantile_bins_of_a_discrete_feature_follow_its_values() -> None:
    schema = DatasetSchema(
        name="pay",
        id_column="id",
        target_column=None,
        features=(FeatureSpec(name="pay", kind=FeatureKind.NUMERIC, min=-2, max=9),),
    )
    values = np.repeat([-2.0, -1.0, 0.0, 1.0, 2.0, 5.0], [100, 200, 500, 100, 80, 20])
    frame = pd.DataFrame({"pay": values})
    pre = Preprocessor(schema, binning="quantile", n_quantiles=10).fit(frame)
    out = pre.transform(pd.DataFrame({"pay": [-2.0, -1.0, 0.0, 1.0, 2.0, 5.0, np.nan]}))
    codes = out.argmax(axis=1)
    # -2, -1, 0 and 1 get their own bins; the 10 % tail (2 and 5) shares the top one.
    assert codes.tolist()[:6] == [0, 1, 2, 3, 4, 4]
    assert out.shape[1] == 5


def test_quantile_binning_refuses_unbounded_or_categorical_features() -> None:
    schema = make_schema()
    with pytest.raises(ConfigError, match=r"unbounded \['score'\]"):
        Preprocessor(schema, binning="quantile")
    with pytest.raises(ConfigError, match=r"categorical \['home'\]"):
        Preprocessor(schema, binning="quantile", bin_features=["home"])


def test_fit_stats_tolerates_ckks_noise() -> None:
    # Arrange
    schema = make_schema()
    frame = make_frame(400)
    vector = FeatureStats.from_frame(frame, schema).to_vector()
    noisy = vector + np.random.default_rng(0).normal(0, 1e-8, vector.size)

    # Act
    exact = Preprocessor(schema, binning="quantile", bin_features=["age"]).fit(frame)
    approx = Preprocessor(schema, binning="quantile", bin_features=["age"]).fit_stats(
        FeatureStats.from_vector(noisy, schema)
    )

    # Assert
    np.testing.assert_allclose(approx.transform(frame), exact.transform(frame), atol=1e-6)


def test_reference_row_holds_means_and_modal_categories() -> None:
    schema = make_schema()
    frame = make_frame(1000)
    row = Preprocessor(schema).fit(frame).reference_row()
    assert row["age"] == pytest.approx(frame["age"].mean())
    assert row["income"] == pytest.approx(math.expm1(np.log1p(frame["income"]).mean()))
    assert row["home"] == "own"


def test_feature_with_no_values_imputes_to_range_centre() -> None:
    schema = make_schema()
    frame = make_frame(20).assign(age=np.nan)
    pre = Preprocessor(schema).fit(frame)
    assert pre.reference_row()["age"] == pytest.approx(59.0)
    np.testing.assert_array_equal(pre.transform(frame)[:, 0], 0.0)
