"""Tests for the C-card target derived from the Taiwan data (taiwan-collection)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrisk.data.datasets import (
    COLLECTION_MONTHS,
    DATASET_NAMES,
    DERIVED_DATASET_NAMES,
    dataset_paths,
    dataset_schema,
    derive_collection_frame,
    load_dataset,
)
from fedrisk.data.validation import validate_frame
from fedrisk.errors import ConfigError, SchemaError

# Taiwan's status columns in calendar order: April ... September 2005.
STATUS = ["PAY_6", "PAY_5", "PAY_4", "PAY_3", "PAY_2", "PAY_0"]
BILL = [f"BILL_AMT{k}" for k in range(6, 0, -1)]
PAID = [f"PAY_AMT{k}" for k in range(6, 0, -1)]

# id -> repayment status April ... September (>= 1: months past due).
HISTORIES = {
    1: [-1, 0, 2, 2, 0, 0],  # enters June, still late in July -> not cured (1)
    2: [2, -1, -1, -1, -1, -1],  # enters April, paid in May -> cured (0), no earlier months
    3: [0, 0, 0, 0, 0, 0],  # never delinquent -> not in collections
    4: [0, 0, 0, 0, 0, 2],  # late only in September: no following month -> left out
    5: [0, 0, 0, 0, 3, 1],  # enters August, September status 1 (part paid) -> still late (1)
    6: [-2, 2, 0, 3, 4, -2],  # enters May, paid in June -> 0; the later relapse is ignored
    7: [0, 0, 0, 2, -2, 5],  # enters July, August "no consumption" counts as paid -> 0
}
EXPECTED = {
    # id: (entry month, months late at entry, not_cured)
    1: ("2005-06", 2.0, 1),
    2: ("2005-04", 2.0, 0),
    5: ("2005-08", 3.0, 1),
    6: ("2005-05", 2.0, 0),
    7: ("2005-07", 2.0, 0),
}


def hand_made_accounts() -> pd.DataFrame:
    """Taiwan-shaped rows; bill = 1000 * id + month, payment = 100 * id + month (traceable)."""
    rows = []
    for account, statuses in HISTORIES.items():
        row: dict[str, object] = {
            "ID": account,
            "LIMIT_BAL": 10_000.0 * account,
            "SEX": "2",
            "EDUCATION": "1",
            "MARRIAGE": "2",
            "AGE": 30.0 + account,
            "default.payment.next.month": 1,
        }
        for month in range(6):
            row[STATUS[month]] = statuses[month]
            row[BILL[month]] = 1000.0 * account + month
            row[PAID[month]] = 100.0 * account + month
        rows.append(row)
    return pd.DataFrame(rows)


def test_hand_made_accounts_get_the_known_targets() -> None:
    accounts = hand_made_accounts()

    derived = derive_collection_frame(accounts)

    assert derived["ID"].tolist() == list(EXPECTED)
    for account, (month, late, target) in EXPECTED.items():
        row = derived.loc[derived["ID"] == account].iloc[0]
        assert row["ENTRY_MONTH"] == month, account
        assert row["MONTHS_LATE"] == late, account
        assert row["not_cured"] == target, account
    assert derived["not_cured"].dtype == np.int64


def test_features_come_from_the_entry_month_and_the_two_before() -> None:
    derived = derive_collection_frame(hand_made_accounts()).set_index("ID")

    june = derived.loc[1]  # entry month index 2 (June)
    assert june["BILL_AMT"] == 1000 * 1 + 2
    assert june["BILL_AMT_PREV1"] == 1000 * 1 + 1
    assert june["BILL_AMT_PREV2"] == 1000 * 1 + 0
    assert june["PAY_AMT"] == 100 * 1 + 2
    assert june["PAY_AMT_PREV1"] == 100 * 1 + 1
    assert june["STATUS_PREV1"] == 0
    assert june["STATUS_PREV2"] == -1
    assert june["UTILISATION"] == pytest.approx(1002 / 10_000)
    april = derived.loc[2]  # nothing is known before April 2005
    assert np.isnan(april[["BILL_AMT_PREV1", "PAY_AMT_PREV2", "STATUS_PREV1"]].astype(float)).all()
    may = derived.loc[6]
    assert may["STATUS_PREV1"] == -2
    assert np.isnan(may["STATUS_PREV2"])
    assert "default.payment.next.month" not in derived.columns


def test_nothing_after_the_entry_month_changes_the_features() -> None:
    accounts = hand_made_accounts()
    before = derive_collection_frame(accounts)
    changed = accounts.copy()
    for index, account in enumerate(changed["ID"]):
        if account not in EXPECTED:
            continue
        entry = COLLECTION_MONTHS.index(EXPECTED[account][0])
        for month in range(entry + 1, 6):
            changed.loc[index, BILL[month]] = -999.0
            changed.loc[index, PAID[month]] = 12345.0
        for month in range(entry + 2, 6):  # status of month m + 1 is the target itself
            changed.loc[index, STATUS[month]] = 8

    after = derive_collection_frame(changed)

    pd.testing.assert_frame_equal(before, after)


def test_only_the_status_of_the_next_month_sets_the_target() -> None:
    accounts = hand_made_accounts()
    accounts.loc[accounts["ID"] == 2, "PAY_5"] = 2  # account 2 now late in May too

    derived = derive_collection_frame(accounts).set_index("ID")

    assert derived.loc[2, "not_cured"] == 1
    assert derived.loc[2, "ENTRY_MONTH"] == "2005-04"


def test_missing_columns_are_listed() -> None:
    accounts = hand_made_accounts().drop(columns=["PAY_3", "BILL_AMT2"])

    with pytest.raises(SchemaError) as excinfo:
        derive_collection_frame(accounts)

    assert excinfo.value.problems == ["PAY_3: column missing", "BILL_AMT2: column missing"]


def test_derived_frame_satisfies_the_collection_schema() -> None:
    schema = dataset_schema("taiwan-collection")

    derived = derive_collection_frame(hand_made_accounts())

    validate_frame(derived, schema, source="hand-made")
    assert schema.target_column == "not_cured"
    assert set(schema.feature_names) | {"ID", "not_cured"} == set(derived.columns)


def test_derived_names_are_known_but_kept_apart_from_the_shipped_files() -> None:
    assert "taiwan-collection" in DERIVED_DATASET_NAMES
    assert "taiwan-collection" not in DATASET_NAMES
    assert dataset_paths("taiwan-collection")[0].name == "UCI_Credit_Card.csv.gz"
    with pytest.raises(ConfigError, match="taiwan-collection"):
        load_dataset("taiwan-colection")


@pytest.mark.realdata
def test_real_collection_dataset_rows_and_bad_rate() -> None:
    path = dataset_paths("taiwan-collection")[0]
    if not path.is_file():
        pytest.skip(f"real dataset 'taiwan' is not available: {path} is missing")

    dataset = load_dataset("taiwan-collection")
    raw = pd.read_csv(path)

    frame = dataset.frame
    assert len(frame) == 7_700
    assert frame["not_cured"].mean() == pytest.approx(0.6325, abs=5e-4)
    validate_frame(frame, dataset.schema, source="taiwan-collection")
    merged = frame.merge(raw, on="ID", validate="one_to_one")
    entry = merged["ENTRY_MONTH"].map(COLLECTION_MONTHS.index).to_numpy()
    statuses = merged[STATUS].to_numpy()
    rows = np.arange(len(merged))
    # Independently recomputed from the raw file: status at entry >= 1, every earlier month
    # in the window <= 0, and the target is the next month's status >= 1.
    assert (statuses[rows, entry] >= 1).all()
    assert all((statuses[i, : entry[i]] <= 0).all() for i in range(len(merged)))
    assert (merged["not_cured"].to_numpy() == (statuses[rows, entry + 1] >= 1)).all()
    assert (merged["MONTHS_LATE"].to_numpy() == statuses[rows, entry]).all()
