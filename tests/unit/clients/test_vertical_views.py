"""A party's training runtime from its own table and its alignment result, and the guest's
padding of a host's row references."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clients.vertical_party import VerticalPartyConfig, VerticalStepError, runtime
from fedrisk.federation.alignment import GuestAlignment, HostAlignment
from fedrisk.ml.vertical import VerticalTrainingError, pad_references
from secure_agg.vertical import PartyKey

SPLIT = np.array([0, 0, 1, 2, 0], dtype=np.int8)


@pytest.fixture(scope="module")
def secret_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("key") / "ckks.secret"
    path.write_bytes(PartyKey.generate().secret_bytes())
    return path


def _config(
    tmp_path: Path,
    role: str,
    frame: pd.DataFrame,
    alignment: GuestAlignment | HostAlignment,
    secret_key: Path,
) -> VerticalPartyConfig:
    frame.to_csv(tmp_path / f"{role}.csv", index=False)
    np.save(tmp_path / "split.npy", SPLIT)
    (tmp_path / "alignment.json").write_text(alignment.to_json(), encoding="utf-8")
    return VerticalPartyConfig(
        name=role,
        role=role,  # type: ignore[arg-type]
        own_data=tmp_path / f"{role}.csv",
        numeric=("x",),
        secret_key=secret_key,
        signing_key=tmp_path / "s",
        release_dir=tmp_path,
        peers_dir=tmp_path,
        id_column="id",
        alignment=tmp_path / "alignment.json",
        label="y" if role == "guest" else None,
        split=tmp_path / "split.npy" if role == "guest" else None,
    )


def test_the_guest_keeps_its_order_labels_and_each_hosts_references(
    tmp_path: Path, secret_key: Path
) -> None:
    guest = pd.DataFrame(
        {"id": [1, 2, 3, 4, 5], "x": [0.1, 0.2, 0.3, 0.4, 0.5], "y": [0, 1, 0, 1, 0]}
    )
    alignment = GuestAlignment(
        guest="guest", n_rows=5, shared={"host": np.array([1, 3])}, refs={"host": np.array([8, 2])}
    )

    rt = runtime(_config(tmp_path, "guest", guest, alignment, secret_key), "run-guest")

    assert rt.labels is not None and rt.labels.tolist() == [0, 1, 0, 1, 0]
    assert rt.refs("host").tolist() == [-1, 8, -1, 2, -1]
    assert rt.matrix is not None and rt.matrix[:, 0].tolist() == [1.0] * 5  # the intercept
    assert rt.rows("train").tolist() == [0, 1, 4]


def test_a_host_holds_its_own_rows_and_no_guest_row(tmp_path: Path, secret_key: Path) -> None:
    # The host's own rows: ids 30, 10, 99; rows 1 and 0 are shared, named by references 4 and 6.
    host = pd.DataFrame({"id": [30, 10, 99], "x": [3.0, 1.0, 9.0]})
    alignment = HostAlignment(
        host="host", guest="guest", slots=np.array([4, 6]), rows=np.array([1, 0])
    )

    rt = runtime(_config(tmp_path, "host", host, alignment, secret_key), "run-host")

    assert rt.split is None and rt.labels is None and rt.matrix is None
    assert len(rt.features) == 3
    assert isinstance(rt.alignment, HostAlignment)
    assert rt.alignment.row_of([6, 4]).tolist() == [0, 1]


def test_an_alignment_for_another_role_or_table_is_refused(
    tmp_path: Path, secret_key: Path
) -> None:
    host = pd.DataFrame({"id": [1], "x": [1.0]})
    beyond = HostAlignment(host="host", guest="guest", slots=np.array([0]), rows=np.array([3]))
    guests = GuestAlignment(guest="guest", n_rows=1, shared={}, refs={})

    with pytest.raises(VerticalStepError, match="over its 1 rows"):
        runtime(_config(tmp_path, "host", host, beyond, secret_key), "run-beyond")
    with pytest.raises(VerticalStepError, match="must be the guest"):
        runtime(_config(tmp_path, "host", host, guests, secret_key), "run-guests")


def test_padding_makes_every_shared_reference_equally_frequent_whatever_is_lacking() -> None:
    # 10 guest rows; the host shares 4 of them. Two different lacking patterns.
    rng = np.random.default_rng(0)
    first = np.array([5, -1, -1, 7, -1, 2, -1, -1, 9, -1])
    second = np.array([-1, -1, 9, -1, -1, -1, 2, 5, -1, 7])

    for refs in (first, second):
        padded = pad_references(refs, rng=rng)
        # real references stay where they are; padding draws only from the shared ones
        assert np.array_equal(padded[refs >= 0], refs[refs >= 0])
        counts = Counter(padded.tolist())
        assert set(counts) == {2, 5, 7, 9}
        assert sorted(counts.values()) == [2, 2, 3, 3]  # 10 // 4 or one more, 10 in all
    full = np.array([3, 1, 2])
    assert np.array_equal(pad_references(full, rng=rng), full)
    with pytest.raises(VerticalTrainingError, match="must share a customer"):
        pad_references(np.array([-1, -1]), rng=rng)
