"""Aligned views for vertical runs: the plain-join alignment, partial overlap, per-party
preprocessing, and the vertical datasets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrisk.data.datasets import resolve_data_dir
from fedrisk.data.vertical import (
    TAIWAN_THREE_WAY,
    AlignedView,
    PartyColumns,
    VerticalDataError,
    VerticalDataset,
    align_by_join,
    host_view_from_positions,
    load_vertical,
)
from fedrisk.ml.vertical import KNOWN_COLUMN, PartyPreprocessor


def _toy() -> VerticalDataset:
    guest = pd.DataFrame({"id": range(1, 41), "y": [0, 1] * 20, "g": np.arange(40.0)})
    host = pd.DataFrame({"id": [2, 4, 6, 8, 99] * 1, "h": [20.0, 40.0, 60.0, 80.0, 990.0]})
    return VerticalDataset(
        "toy",
        PartyColumns("bank", guest, "id", ("g",), label="y"),
        (PartyColumns("shop", host, "id", ("h",)),),
    )


def test_join_keeps_every_guest_customer_and_marks_what_a_host_knows() -> None:
    guest, host = align_by_join(_toy(), rng=np.random.default_rng(0))

    assert guest.known.all() and len(guest.split) == 40
    assert host.known.sum() == 4 and list(np.flatnonzero(host.known)) == [1, 3, 5, 7]
    assert host.features["h"].isna().sum() == 36  # the host's id 99 is not the guest's
    np.testing.assert_array_equal(guest.split, host.split)
    assert host.labels is None and guest.labels is not None
    assert set(np.unique(guest.split)) == {0, 1, 2}


def test_aligned_view_round_trips_through_its_file_form() -> None:
    _, host = align_by_join(_toy(), rng=np.random.default_rng(0))
    back = AlignedView.from_frame(host.to_frame(), name="shop", numeric=("h",))
    assert back.role == "host"
    np.testing.assert_array_equal(back.known, host.known)
    with pytest.raises(VerticalDataError, match="must hold columns"):
        AlignedView.from_frame(host.to_frame().drop(columns="_split"), name="shop", numeric=("h",))


def test_a_host_preprocesses_from_its_own_known_rows_and_zeroes_the_rest() -> None:
    _, host = align_by_join(_toy(), rng=np.random.default_rng(0))
    rows = np.arange(40)
    prep = PartyPreprocessor(("h",), ()).fit(host.features, host.known, rows=rows)

    matrix = prep.transform(host.features, host.known)

    assert prep.means_["h"] == pytest.approx(50.0)
    assert prep.columns == ["h", KNOWN_COLUMN]
    assert np.all(matrix[~host.known] == 0.0)
    np.testing.assert_array_equal(matrix[:, 1], host.known.astype(float))
    assert PartyPreprocessor.from_dict(prep.to_dict()).transform(
        host.features, host.known
    ) == pytest.approx(matrix)


def test_partial_overlap_is_the_synthetic_default() -> None:
    data = load_vertical("synthetic-vertical", rng=np.random.default_rng(0), n_customers=2000)
    views = align_by_join(data, rng=np.random.default_rng(0))
    shares = {v.name: v.known.mean() for v in views[1:]}
    assert shares["ecommerce"] == pytest.approx(0.8, abs=0.03)
    assert shares["telecom"] == pytest.approx(0.65, abs=0.03)
    with pytest.raises(VerticalDataError, match="overlap"):
        load_vertical("synthetic-vertical", rng=np.random.default_rng(0), overlap={"telecom": 0})


def test_taiwan_three_way_split_gives_each_column_one_holder() -> None:
    columns = [c for cols in TAIWAN_THREE_WAY.values() for c in cols]
    assert len(columns) == len(set(columns)) == 23


@pytest.mark.realdata
def test_fate_hetero_loads_guest_and_host_as_shipped() -> None:
    if not (resolve_data_dir() / "fate" / "default_credit_hetero_guest.csv.gz").is_file():
        pytest.skip("FATE hetero files are not available (set FEDRISK_DATA_DIR)")
    data = load_vertical("fate-hetero", rng=np.random.default_rng(0))
    assert len(data.guest.numeric) == 13 and data.guest.label == "y"
    assert [len(h.numeric) for h in data.hosts] == [10]
    assert len(data.hosts[0].frame) == 30_000


def test_a_host_view_is_built_from_the_positions_alignment_gives_it() -> None:
    data = _toy()
    host = data.hosts[0]
    split = np.zeros(4, dtype=np.int8)

    view = host_view_from_positions(host, [None, 4, None, 2], split=split)

    np.testing.assert_array_equal(view.known, [False, True, False, True])
    assert view.features["h"].tolist()[1::2] == [40.0, 20.0]
    with pytest.raises(VerticalDataError, match="must match the guest's 4 rows"):
        host_view_from_positions(host, [None, 4], split=split)
    with pytest.raises(VerticalDataError, match="its own identifiers"):
        host_view_from_positions(host, [None, 5, None, 2], split=split)
