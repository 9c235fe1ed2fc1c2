"""Alignment results: the guest's masks, a host's layout in guest order, JSON round trips."""

from __future__ import annotations

import numpy as np
import pytest

from fedrisk.federation.alignment import AlignmentError, GuestAlignment, HostAlignment


def test_the_guest_sees_which_hosts_know_each_row() -> None:
    result = GuestAlignment(
        guest="bank", n_rows=5, shared={"telecom": np.array([0, 2, 3]), "shop": np.array([4])}
    )

    assert result.known("telecom").tolist() == [True, False, True, True, False]
    assert result.coverage() == {"telecom": 0.6, "shop": 0.2}
    assert GuestAlignment.from_json(result.to_json()).known("shop").tolist() == [
        False, False, False, False, True,
    ]  # fmt: skip
    with pytest.raises(AlignmentError, match="host must be one of"):
        result.known("insurer")
    with pytest.raises(AlignmentError, match="must be ascending guest rows below 5"):
        GuestAlignment(guest="bank", n_rows=5, shared={"shop": np.array([3, 1])})


def test_a_host_lays_its_values_out_in_guest_order_with_missing_rows() -> None:
    # the host's rows 2 and 0 are the guest's rows 1 and 3
    result = HostAlignment(
        host="telecom",
        guest="bank",
        guest_size=4,
        rows=np.array([2, 0]),
        guest_rows=np.array([1, 3]),
    )

    laid = result.to_guest_order(np.array([[10.0, 11.0], [20.0, 21.0], [30.0, 31.0]]))

    assert np.isnan(laid[[0, 2]]).all()
    assert laid[1].tolist() == [30.0, 31.0]
    assert laid[3].tolist() == [10.0, 11.0]
    back = HostAlignment.from_json(result.to_json())
    assert back.rows.tolist() == [2, 0] and back.guest_rows.tolist() == [1, 3]
    with pytest.raises(AlignmentError, match="at least 3"):
        result.to_guest_order(np.zeros(2))
