"""A party's training view from its own table and its private-set-intersection result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clients.vertical_party import VerticalPartyConfig, VerticalStepError, view_from_alignment
from fedrisk.federation.alignment import GuestAlignment, HostAlignment


def _config(
    tmp_path: Path, role: str, frame: pd.DataFrame, split: np.ndarray
) -> VerticalPartyConfig:
    frame.to_csv(tmp_path / f"{role}.csv", index=False)
    np.save(tmp_path / "split.npy", split)
    return VerticalPartyConfig(
        name=role,
        role=role,
        data=tmp_path / "unused.csv",
        numeric=("x",),
        secret_key=tmp_path / "k",
        signing_key=tmp_path / "s",
        release_dir=tmp_path,
        peers_dir=tmp_path,
        own_data=tmp_path / f"{role}.csv",
        id_column="id",
        label="y" if role == "guest" else None,
        split=tmp_path / "split.npy",
    )


SPLIT = np.array([0, 0, 1, 2, 0], dtype=np.int8)


def test_a_host_lays_its_rows_out_in_the_guests_order(tmp_path: Path) -> None:
    # The host's own rows: ids 30, 10, 99 (99 is not the guest's); the guest's rows 1 and 3
    # are the host's rows 1 and 0.
    host = pd.DataFrame({"id": [30, 10, 99], "x": [3.0, 1.0, 9.0]})
    config = _config(tmp_path, "host", host, SPLIT)
    alignment = HostAlignment(
        host="host",
        guest="guest",
        guest_size=5,
        rows=np.array([1, 0]),
        guest_rows=np.array([1, 3]),
    )

    view = view_from_alignment(config, alignment)

    assert view.known.tolist() == [False, True, False, True, False]
    assert view.features["x"].tolist()[1] == 1.0 and view.features["x"].tolist()[3] == 3.0
    assert view.features["x"].isna().tolist() == [True, False, True, False, True]
    assert view.split.tolist() == SPLIT.tolist()


def test_the_guest_keeps_its_own_order_and_labels(tmp_path: Path) -> None:
    guest = pd.DataFrame(
        {"id": [1, 2, 3, 4, 5], "x": [0.1, 0.2, 0.3, 0.4, 0.5], "y": [0, 1, 0, 1, 0]}
    )
    config = _config(tmp_path, "guest", guest, SPLIT)

    view = view_from_alignment(config, GuestAlignment(guest="guest", n_rows=5, shared={}))

    assert view.role == "guest" and view.known.all()
    assert view.labels is not None and view.labels.tolist() == [0, 1, 0, 1, 0]


def test_an_alignment_over_another_row_count_is_refused(tmp_path: Path) -> None:
    host = pd.DataFrame({"id": [1], "x": [1.0]})
    config = _config(tmp_path, "host", host, SPLIT)
    alignment = HostAlignment(
        host="host", guest="guest", guest_size=4, rows=np.array([0]), guest_rows=np.array([0])
    )

    with pytest.raises(VerticalStepError, match="guest's 5 rows"):
        view_from_alignment(config, alignment)
