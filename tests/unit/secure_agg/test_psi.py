"""ECDH PSI over X25519: commutative blinding, partial overlap, and refusals of bad messages."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fedrisk.federation.identifiers import IdentifierKey, psi_digests
from secure_agg.psi import (
    GuestSecrets,
    HostSecrets,
    Match,
    PsiError,
    align_locally,
    as_points,
    blind,
    guest_match,
    intersect_locally,
    new_private_key,
    open_match,
    public_key_of,
    seal_match,
)


def _digests(ids: list[str]) -> np.ndarray:
    return as_points(psi_digests(ids, kind="opaque", salt=b"test-federation"))


def test_x25519_blinding_commutes_on_hash_outputs() -> None:
    # arrange: hash outputs land on the curve or on its twist, about half each
    points = as_points([hashlib.sha256(bytes([i])).digest() for i in range(64)])
    a, b = new_private_key(), new_private_key()

    # act
    ab = blind(blind(points, a), b)
    ba = blind(blind(points, b), a)

    # assert: same double blinding either way, and distinct inputs stay distinct
    assert np.array_equal(ab, ba)
    assert len({row.tobytes() for row in ab}) == 64
    assert not np.array_equal(blind(points, a), points)


def test_partial_overlap_matches_a_plain_set_intersection() -> None:
    # arrange: the host knows 70 % of the guest's customers, plus others of its own
    rng = np.random.default_rng(7)
    guest_ids = [f"cust-{i}" for i in rng.permutation(500)]
    known = guest_ids[:350]
    host_ids = [*known, *(f"other-{i}" for i in range(200))]
    rng.shuffle(host_ids)

    # act
    result = intersect_locally(
        _digests(guest_ids), _digests(host_ids), rng=np.random.default_rng(1)
    )

    # assert: both sides against the plaintext oracle
    expected_guest = sorted(i for i, c in enumerate(guest_ids) if c in set(host_ids))
    assert result.guest.guest_rows.tolist() == expected_guest
    # the host learns which of its rows are shared, named by slot, never a guest row
    assert sorted(host_ids[r] for r in result.host.rows) == sorted(
        guest_ids[i] for i in expected_guest
    )
    assert not hasattr(result.host, "guest_rows")
    by_slot = dict(zip(result.host.slots.tolist(), result.host.rows.tolist(), strict=True))
    assert [host_ids[by_slot[s]] for s in result.guest.host_slots] == [
        guest_ids[i] for i in expected_guest
    ]


def test_a_low_order_point_is_refused() -> None:
    points = np.zeros((2, 32), dtype=np.uint8)  # u = 0 has order 1 on the curve

    with pytest.raises(PsiError, match="point 0 must not be of low order"):
        blind(points, new_private_key())


def test_malformed_lists_are_refused() -> None:
    with pytest.raises(PsiError, match=r"must be a \(n, 32\) uint8 array"):
        blind(np.zeros((3, 31), dtype=np.uint8), new_private_key())
    with pytest.raises(PsiError, match="one entry per guest row"):
        guest_match(
            GuestSecrets.fresh(),
            n_rows=3,
            guest_double=_digests(["a", "b"]),
            host_points=_digests(["a"]),
        )


def test_the_sealed_result_opens_only_for_its_host_and_context() -> None:
    # arrange
    guest, host = GuestSecrets.fresh(), HostSecrets.fresh(4, rng=np.random.default_rng(0))
    other = HostSecrets.fresh(4, rng=np.random.default_rng(1))
    match = Match(np.array([0, 2]), np.array([3, 1]))
    sealed = seal_match(
        match,
        secrets=guest,
        host_channel_public=public_key_of(host.channel_key),
        context=b"run-1|bank|telecom",
    )
    guest_public = public_key_of(guest.channel_key)

    # act
    view = open_match(
        sealed, secrets=host, guest_channel_public=guest_public, context=b"run-1|bank|telecom"
    )

    # assert
    assert view.slots.tolist() == [1, 3]
    assert view.rows.tolist() == [host.order[1], host.order[3]]
    for secrets, context in [(host, b"run-2|bank|telecom"), (other, b"run-1|bank|telecom")]:
        with pytest.raises(PsiError, match="must verify"):
            open_match(sealed, secrets=secrets, guest_channel_public=guest_public, context=context)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(PsiError, match="must verify"):
        open_match(
            tampered, secrets=host, guest_channel_public=guest_public, context=b"run-1|bank|telecom"
        )


def test_align_locally_gives_each_party_its_view_of_every_host() -> None:
    key = IdentifierKey.derive(bytes(range(64)), federation="f")
    bank = ["13800000001", "13800000002", "13800000003", "13800000004"]
    hosts = {
        "telecom": ["+86 138 0000 0004", "+86 139 0000 0009", "+86 138 0000 0002"],
        "shop": ["008613800000003"],
    }

    guest, views = align_locally(
        "bank", bank, hosts, kind="phone", key=key, rng=np.random.default_rng(0)
    )

    assert guest.known("telecom").tolist() == [False, True, False, True]
    assert guest.known("shop").tolist() == [False, False, True, False]
    assert sorted(views["telecom"].rows.tolist()) == [0, 2]
    telecom = views["telecom"].row_of(guest.references("telecom")[[1, 3]])
    assert telecom.tolist() == [2, 0]  # guest rows 1 and 3 are the telecom's rows 2 and 0
    assert views["shop"].rows.tolist() == [0]


def test_blinding_over_two_processes_matches_one() -> None:
    points = _digests([str(i) for i in range(8200)])  # enough rows to split across workers
    key = new_private_key()

    assert np.array_equal(blind(points, key, workers=2), blind(points, key, workers=1))
