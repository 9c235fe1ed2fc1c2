"""Tests of scorecard scaling: hand-worked points, inverse, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fedrisk.decisions.scorecard import ScorecardScaling


def test_defaults_give_600_at_50_to_1_and_20_points_per_doubling() -> None:
    scaling = ScorecardScaling()

    at_50 = scaling.score_one(1 / 51)  # good:bad = 50:1
    at_100 = scaling.score_one(1 / 101)  # odds doubled
    at_25 = scaling.score_one(1 / 26)  # odds halved

    assert at_50 == pytest.approx(600.0)
    assert at_100 == pytest.approx(620.0)
    assert at_25 == pytest.approx(580.0)


def test_factor_and_offset_match_the_textbook_formulas() -> None:
    scaling = ScorecardScaling(base_score=500, base_odds=20, pdo=50)

    assert scaling.factor == pytest.approx(50 / math.log(2))
    assert scaling.offset == pytest.approx(500 - 50 / math.log(2) * math.log(20))
    assert scaling.score_one(1 / 21) == pytest.approx(500.0)
    assert scaling.score_one(0.5) == pytest.approx(scaling.offset)  # odds 1:1


def test_score_is_vectorised_and_decreases_with_pd() -> None:
    scores = ScorecardScaling().score(np.array([0.01, 0.1, 0.5, 0.9]))

    assert scores.shape == (4,)
    assert np.all(np.diff(scores) < 0)


def test_extreme_pd_is_clipped_to_finite_scores() -> None:
    scores = ScorecardScaling().score([0.0, 1.0])

    assert np.all(np.isfinite(scores))
    assert scores[0] > 1000 > 0 > scores[1]


def test_score_from_logit_agrees_with_score() -> None:
    scaling = ScorecardScaling()
    pd = np.array([0.001, 0.02, 0.3, 0.97])

    from_logit = scaling.score_from_logit(np.log(pd / (1 - pd)))

    np.testing.assert_allclose(from_logit, scaling.score(pd), rtol=1e-12)


def test_points_from_logit_delta_uses_the_factor() -> None:
    scaling = ScorecardScaling()

    points = scaling.points_from_logit_delta(math.log(2))

    assert float(points) == pytest.approx(20.0)


@given(st.floats(min_value=1e-6, max_value=1 - 1e-6))
def test_pd_from_score_inverts_score(pd: float) -> None:
    scaling = ScorecardScaling(base_score=650, base_odds=30, pdo=25)

    back = float(scaling.pd_from_score(scaling.score(pd)))

    assert back == pytest.approx(pd, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("field", ["base_score", "base_odds", "pdo"])
@pytest.mark.parametrize("value", [0.0, -1.0, math.inf, math.nan])
def test_non_positive_or_non_finite_fields_are_rejected(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=f"{field} must be a finite number > 0"):
        ScorecardScaling.model_validate({field: value})


def test_unknown_fields_are_rejected_and_instances_are_frozen() -> None:
    with pytest.raises(ValidationError):
        ScorecardScaling.model_validate({"pdo": 20, "points": 3})
    scaling = ScorecardScaling()
    with pytest.raises(ValidationError):
        scaling.pdo = 40  # type: ignore[misc]


def test_round_trips_through_json() -> None:
    scaling = ScorecardScaling(base_score=700, base_odds=40, pdo=30)

    again = ScorecardScaling.model_validate_json(scaling.model_dump_json())

    assert again == scaling
