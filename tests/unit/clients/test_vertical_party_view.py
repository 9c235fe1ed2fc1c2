"""A deployed vertical party's view of its own table, checked against the table and its pin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clients.vertical_party import (
    VerticalStepError,
    VerticalView,
    load_config,
    prepare_vertical_party,
)
from fedrisk.data.vertical import SPLIT_CODES


def _prepare(tmp_path: Path, view: VerticalView, *, pinned_role: str | None) -> Path:
    rng = np.random.default_rng(0)
    table = tmp_path / "own.csv"
    pd.DataFrame(
        {
            "customer_id": np.arange(200),
            "income": rng.normal(size=200),
            "default_12m": rng.integers(0, 2, size=200),
        }
    ).to_csv(table, index=False)
    view_file = tmp_path / "view.json"
    view_file.write_text(view.model_dump_json(), encoding="utf-8")
    return prepare_vertical_party(
        view_file,
        name="bank",
        data=table,
        state_dir=tmp_path / "state",
        signing_key=tmp_path / "signing.key",
        release_dir=tmp_path / "releases",
        pinned_role=pinned_role,
    )


GUEST = VerticalView(
    role="guest", id_column="customer_id", numeric=("income",), label="default_12m"
)


def test_guest_view_gets_its_own_key_and_split(tmp_path: Path) -> None:
    config = load_config(_prepare(tmp_path, GUEST, pinned_role="guest"))

    assert config.role == "guest" and config.label == "default_12m"
    assert config.secret_key.stat().st_mode & 0o077 == 0
    assert config.split is not None
    split = np.load(config.split)
    assert len(split) == 200 and set(np.unique(split)) == set(SPLIT_CODES.values())


@pytest.mark.parametrize(
    ("view", "pinned_role", "problem"),
    [
        (GUEST, "host", "role must be the one the installed pin gives"),  # pin says host
        (GUEST, None, "role must be the one the installed pin gives"),  # not in a vertical pin
        (GUEST.model_copy(update={"role": "host"}), "host", "label must be set exactly"),
        (GUEST.model_copy(update={"numeric": ("salary",)}), "guest", "['salary'] missing"),
    ],
)
def test_view_that_contradicts_its_table_or_pin_is_refused(
    tmp_path: Path, view: VerticalView, pinned_role: str | None, problem: str
) -> None:
    with pytest.raises(VerticalStepError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        _prepare(tmp_path, view, pinned_role=pinned_role)

    assert not (tmp_path / "state" / "vertical" / "vertical.json").exists()
