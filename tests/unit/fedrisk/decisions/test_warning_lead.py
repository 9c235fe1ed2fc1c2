"""Lead-time counting of early warnings before default, on a hand-made table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedrisk.decisions.warning_lead import summarise_lead_times, warning_lead_times
from fedrisk.errors import DecisionError

# months 0..3; default_month 4 = the month right after the window
WARNED = np.array(
    [
        [False, True, True, False],  # defaults in month 3: first warning month 1 -> lead 2
        [True, False, False, False],  # defaults in month 4: warned in month 0 -> lead 4
        [False, False, True, True],  # defaults in month 2: warning only at default -> 0
        [True, True, True, True],  # defaults in month 0: cannot be warned ahead
        [False, True, False, False],  # never defaults, warned: a false warning
        [False, False, False, False],  # never defaults, never warned
        [False, False, False, True],  # defaults in month 4: warned in month 3 -> lead 1
    ]
)
DEFAULT_MONTH = np.array([3, 4, 2, 0, -1, -1, 4])


def test_lead_times_count_from_first_warning_before_default() -> None:
    lead = warning_lead_times(WARNED, DEFAULT_MONTH)
    assert lead.tolist() == [2, 4, 0, 0, -1, -1, 1]


def test_summary_figures() -> None:
    s = summarise_lead_times(WARNED, DEFAULT_MONTH)
    assert s.defaulters == 5
    assert s.not_warnable == 1
    assert s.warned_before_default == pytest.approx(3 / 4)
    assert s.lead_mean == pytest.approx(7 / 3)
    assert s.lead_median == 2.0
    assert s.lead_at_least_2 == pytest.approx(2 / 3)
    assert s.lead_at_least_3 == pytest.approx(1 / 3)
    assert s.lead_histogram == {1: 1, 2: 1, 4: 1}
    assert s.non_defaulters == 2
    assert s.false_warning_rate == pytest.approx(1 / 2)
    assert s.false_warning_month_rate == pytest.approx(1 / 8)
    assert s.to_dict()["lead_histogram"] == {"1": 1, "2": 1, "4": 1}


def test_no_defaulters_gives_nan_shares() -> None:
    s = summarise_lead_times(np.zeros((2, 3), dtype=bool), np.array([-1, -1]))
    assert math.isnan(s.warned_before_default) and math.isnan(s.lead_mean)
    assert s.false_warning_rate == 0.0


@pytest.mark.parametrize(
    ("warned", "months", "match"),
    [
        (np.zeros(3, dtype=bool), np.array([-1, -1, -1]), "2-D"),
        (np.zeros((2, 3)), np.array([-1, -1]), "booleans"),
        (np.zeros((2, 3), dtype=bool), np.array([-1]), "one per account"),
        (np.zeros((2, 3), dtype=bool), np.array([5, -1]), "0..3"),
    ],
)
def test_bad_input_is_refused(warned: np.ndarray, months: np.ndarray, match: str) -> None:
    with pytest.raises(DecisionError, match=match):
        warning_lead_times(warned, months)
