"""Alignment results: the guest's masks and references, a host's references, JSON round trips."""

from __future__ import annotations

import numpy as np
import pytest

from fedrisk.federation.alignment import AlignmentError, GuestAlignment, HostAlignment


def test_the_guest_sees_which_hosts_know_each_row() -> None:
    result = GuestAlignment(
        guest="bank",
        n_rows=5,
        shared={"telecom": np.array([0, 2, 3]), "shop": np.array([4])},
        refs={"telecom": np.array([7, 1, 4]), "shop": np.array([0])},
    )

    assert result.known("telecom").tolist() == [True, False, True, True, False]
    assert result.coverage() == {"telecom": 0.6, "shop": 0.2}
    assert result.references("telecom").tolist() == [7, -1, 1, 4, -1]
    assert GuestAlignment.from_json(result.to_json()).known("shop").tolist() == [
        False, False, False, False, True,
    ]  # fmt: skip
    with pytest.raises(AlignmentError, match="host must be one of"):
        result.known("insurer")
    with pytest.raises(AlignmentError, match="must be ascending guest rows below 5"):
        GuestAlignment(
            guest="bank", n_rows=5, shared={"shop": np.array([3, 1])}, refs={"shop": np.zeros(2)}
        )
    with pytest.raises(AlignmentError, match="one host reference per shared guest row"):
        GuestAlignment(guest="bank", n_rows=5, shared={"shop": np.array([1])})


def test_a_host_maps_references_to_its_own_rows_and_refuses_others() -> None:
    # the host's rows 2 and 0 are shared, named by references 3 and 5
    result = HostAlignment(
        host="telecom", guest="bank", slots=np.array([3, 5]), rows=np.array([2, 0])
    )

    assert result.row_of([5, 3, 5]).tolist() == [0, 2, 0]
    back = HostAlignment.from_json(result.to_json())
    assert back.slots.tolist() == [3, 5] and back.rows.tolist() == [2, 0]
    with pytest.raises(AlignmentError, match="must name shared rows of telecom; got 2 others"):
        result.row_of([4, 3, 9])
    with pytest.raises(AlignmentError, match="one length"):
        HostAlignment(host="telecom", guest="bank", slots=np.array([3]), rows=np.array([2, 0]))
