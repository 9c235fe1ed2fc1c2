"""WOE scorecard binning: CKKS-pooled statistics give the central bins and IVs; classing holds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from fedrisk.data.schema import DatasetSchema, FeatureKind, FeatureSpec
from fedrisk.decisions.reasons import ReasonCodeTable, ReasonRanker
from fedrisk.errors import ConfigError
from fedrisk.ml.woe import (
    BinningConfig,
    ScorecardStats,
    WoeEncoder,
    fit_woe_encoder,
    scorecard_statistics,
)
from fedrisk.release.artifact import ModelArtifact, pipeline_from_artifact
from secure_agg.aggregation import CkksAggregation
from secure_agg.keys import generate_context, public_context
from secure_agg.params import HEParams
from tests.support.scorecards import bin_points, expected_reasons, reason_costs, scorecard_artifact

SCHEMA = DatasetSchema(
    name="woe-test",
    id_column="id",
    target_column="bad",
    features=(
        FeatureSpec(name="score", kind=FeatureKind.NUMERIC, min=0, max=100),
        FeatureSpec(name="score_copy", kind=FeatureKind.NUMERIC, min=0, max=100),
        FeatureSpec(name="noise", kind=FeatureKind.NUMERIC, min=0, max=1),
        FeatureSpec(
            name="income",
            kind=FeatureKind.NUMERIC,
            min=0,
            max=1e6,
            transform="log1p",
            nullable=True,
        ),
        FeatureSpec(
            name="home",
            kind=FeatureKind.CATEGORICAL,
            categories=("own", "rent", "mortgage", "never_seen"),
            nullable=True,
        ),
    ),
)
CONFIG = BinningConfig(fine_bins=12, histogram_bins=64, min_bin_share=0.05, min_bad_count=5)


def _frame(n: int, rng: np.random.Generator) -> pd.DataFrame:
    score = rng.uniform(0, 100, n)
    income = np.exp(rng.normal(8, 1, n))
    home = rng.choice(np.array(["own", "rent", "mortgage"], dtype=object), n, p=[0.4, 0.4, 0.2])
    logit = -1.5 - 0.04 * (score - 50) - 0.5 * (np.log(income) - 8) + 0.6 * (home == "rent")
    bad = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    income[rng.uniform(size=n) < 0.08] = np.nan
    home[rng.uniform(size=n) < 0.03] = None
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "score": score,
            "score_copy": np.clip(score + rng.normal(0, 2, n), 0, 100),
            "noise": rng.uniform(0, 1, n),
            "income": income,
            "home": home,
            "bad": bad,
        }
    )


@dataclass(frozen=True)
class Fitted:
    parties: list[pd.DataFrame]
    pooled: pd.DataFrame
    test: pd.DataFrame
    central: WoeEncoder
    federated: WoeEncoder


@pytest.fixture(scope="module")
def fitted() -> Fitted:
    """Three parties' binning through real CKKS ciphertexts, and the central one (fitted once)."""
    rng = np.random.default_rng(7)
    parties = [_frame(n, rng) for n in (1500, 900, 400)]
    pooled = pd.concat(parties, ignore_index=True)
    secret = generate_context(HEParams())
    party, server = CkksAggregation(secret), CkksAggregation(public_context(secret))
    n_bins = CONFIG.histogram_bins

    def pooled_pass(candidate: WoeEncoder | None) -> ScorecardStats:
        records = [
            party.encode(scorecard_statistics(f, SCHEMA, n_bins=n_bins, candidate=candidate))
            for f in parties
        ]
        # the server sums blind; every party decrypts the same sum
        total = party.decode(server.sum_records(records, min_parties=3))
        return ScorecardStats(SCHEMA, total, n_bins=n_bins)

    candidate = WoeEncoder(SCHEMA, CONFIG).fit_stats(pooled_pass(None))
    federated = WoeEncoder(SCHEMA, CONFIG).fit_stats(pooled_pass(candidate))
    return Fitted(
        parties=parties,
        pooled=pooled,
        test=_frame(600, rng),
        central=fit_woe_encoder(pooled, SCHEMA, CONFIG),
        federated=federated,
    )


def test_encrypted_pooled_binning_equals_the_central_binning(fitted: Fitted) -> None:
    # arrange
    central, federated = fitted.central, fitted.federated

    # act
    central_iv, federated_iv = central.iv_, federated.iv_

    # assert
    assert central_iv.keys() == federated_iv.keys()
    for name, iv in central_iv.items():
        assert abs(federated_iv[name] - iv) <= 1e-9, name
    for c, f in zip(central.binnings_, federated.binnings_, strict=True):
        assert (c.edges, c.groups, c.labels) == (f.edges, f.groups, f.labels)
        np.testing.assert_allclose(f.woe, c.woe, rtol=0, atol=1e-9)
    assert federated.selected_ == central.selected_
    np.testing.assert_allclose(
        federated.transform(fitted.test), central.transform(fitted.test), atol=1e-6
    )


def test_selection_drops_weak_and_correlated_features(fitted: Fitted) -> None:
    # act
    encoder = fitted.federated
    strongest = encoder.selected_[0]
    twin = "score_copy" if strongest == "score" else "score"

    # assert
    assert strongest in {"score", "score_copy"}
    assert {strongest, "income", "home"} == set(encoder.selected_)
    dropped = encoder.dropped_
    assert dropped["noise"].startswith("IV ")
    assert dropped[twin].startswith("|corr|") and strongest in dropped[twin]
    # unselected features contribute a zero column
    x = encoder.transform(fitted.test)
    assert not x[:, encoder.columns_of("noise")[0]].any()


def test_coarse_bins_are_monotonic_large_enough_and_keep_missing_apart(fitted: Fitted) -> None:
    # arrange
    encoder = fitted.central
    total = len(fitted.pooled)

    # act
    by_name = {b.name: b for b in encoder.binnings_}

    # assert
    for b in encoder.binnings_:
        regular_woe = np.asarray(b.woe[:-1])
        counts = np.add(b.goods[:-1], b.bads[:-1])
        if len(regular_woe) > 1:
            steps = np.diff(regular_woe)
            assert (steps > 0).all() or (steps < 0).all(), b.name
            assert (counts >= CONFIG.min_bin_share * counts.sum()).all(), b.name
            assert min(b.bads[:-1]) >= CONFIG.min_bad_count, b.name
        assert sum(b.goods) + sum(b.bads) == total
    # bad rate falls with score: WOE (good share over bad share) rises
    assert by_name["score"].trend == "descending"
    income = by_name["income"]
    assert income.labels[-1] == "Missing / other" and income.goods[-1] + income.bads[-1] > 0
    assert fitted.pooled["income"].isna().sum() == income.goods[-1] + income.bads[-1]
    # an unseen category is merged into a neighbour, never a bin of its own
    assert all(len(g) >= 1 for g in by_name["home"].groups)
    assert "never_seen" in {c for g in by_name["home"].groups for c in g}


def test_a_forced_trend_against_the_data_collapses_the_feature() -> None:
    # arrange
    frame = _frame(2000, np.random.default_rng(3))
    config = CONFIG.model_copy(update={"trend": "ascending"})

    # act
    encoder = fit_woe_encoder(frame, SCHEMA, config)

    # assert: score's bad rate falls, so an ascending trend leaves one bin with no information
    score = next(b for b in encoder.binnings_ if b.name == "score")
    assert len(score.woe) == 2 and score.iv < 1e-12
    assert "score" not in encoder.selected_


def test_auto_trend_keeps_a_real_valley_and_refuses_a_turn_the_data_did_not_ask_for() -> None:
    # arrange: a bad rate that falls, then rises, over x (a U), and one that only falls
    rng = np.random.default_rng(5)
    n = 6000
    x = rng.uniform(0, 100, n)
    # two numeric features on [0, 100]: "score" gets the U, "score_copy" (below) the fall
    schema = DatasetSchema.model_validate(
        {
            **SCHEMA.model_dump(),
            "name": "woe-shapes",
            "features": SCHEMA.model_dump()["features"][:2],
        }
    )
    u_bad = rng.uniform(size=n) < 0.15 + 0.6 * ((x - 50) / 50) ** 2
    frame = pd.DataFrame({"id": np.arange(n), "score": x, "score_copy": x, "bad": u_bad})
    falling = frame.assign(bad=rng.uniform(size=n) < 0.6 - 0.5 * x / 100)
    monotonic = CONFIG.model_copy(update={"trend": "auto_monotonic"})

    # act
    auto = fit_woe_encoder(frame, schema, CONFIG)
    forced = fit_woe_encoder(frame, schema, monotonic)
    plain = fit_woe_encoder(falling, schema, CONFIG)

    # assert: the U is kept as a valley of the bad rate, far above the best monotonic IV
    valley = auto.binnings_[0]
    rates = np.divide(valley.bads[:-1], np.add(valley.goods[:-1], valley.bads[:-1]))
    turn = int(np.argmin(rates))
    assert valley.trend == "valley" and 0 < turn < len(rates) - 1
    assert (np.diff(rates[: turn + 1]) < 0).all() and (np.diff(rates[turn:]) > 0).all()
    assert valley.iv > 2 * forced.binnings_[0].iv
    # a feature whose bad rate only falls stays monotonic: noise earns no turn
    assert plain.binnings_[1].trend == "descending"
    assert all(b.trend in ("ascending", "descending") for b in plain.binnings_)


def test_state_round_trips_and_the_reference_row_sits_in_every_best_bin(fitted: Fitted) -> None:
    # arrange
    encoder = fitted.federated

    # act
    again = WoeEncoder.from_dict(encoder.to_dict())
    reference = encoder.transform(pd.DataFrame([encoder.reference_row()]))[0]

    # assert
    np.testing.assert_array_equal(again.transform(fitted.test), encoder.transform(fitted.test))
    np.testing.assert_array_equal(
        again.transform_records(fitted.test.to_dict("records")), encoder.transform(fitted.test)
    )
    for j, b in enumerate(encoder.binnings_):
        if b.name in encoder.selected_:
            assert reference[j] == pytest.approx(max(b.woe[:-1]), abs=1e-6)
    with pytest.raises(ConfigError, match="format must be"):
        WoeEncoder.from_dict({**encoder.to_dict(), "format": "fedrisk.preprocessor/1"})


@pytest.fixture(scope="module")
def artifact(fitted: Fitted) -> ModelArtifact:
    return scorecard_artifact(
        fitted.pooled, SCHEMA, model_id="acard-scorecard", stage="application", woe_config=CONFIG
    )


def test_points_of_an_applicants_bins_add_up_to_its_score(
    fitted: Fitted, artifact: ModelArtifact
) -> None:
    # arrange
    pipeline = pipeline_from_artifact(artifact)

    # act
    points, features = bin_points(artifact, fitted.test)
    scores = artifact.scorecard.score_from_logit(pipeline.decision_function(fitted.test))

    # assert: each table entry is rounded to 0.01
    assert artifact.model_kind == "scorecard"
    np.testing.assert_allclose(points.sum(axis=1), scores, atol=0.005 * len(features) + 1e-9)


def test_reason_codes_are_the_bins_costing_most_points_against_the_best_bin(
    fitted: Fitted, artifact: ModelArtifact
) -> None:
    # arrange: the ranker exactly as the scoring registry builds it
    pipeline = pipeline_from_artifact(artifact)
    ranker = ReasonRanker(
        pipeline.scorer_.logits,
        pipeline.preprocessor_,
        artifact.baseline,
        table=ReasonCodeTable.from_schema(SCHEMA),
        scaling=artifact.scorecard,
        features=SCHEMA.feature_names,
    )
    rows = fitted.test.iloc[:50]
    costs = reason_costs(artifact, rows)

    # act
    reasons = ranker.rank_frame(rows)

    # assert
    for got, cost in zip(reasons, costs, strict=True):
        expected = expected_reasons(cost)
        assert [r.feature for r in got if r.points > 0.02][: len(expected)] == expected
        for r in got:
            assert r.points == pytest.approx(cost[r.feature], abs=0.011)
