"""Each party's own CKKS key: masked products, flooded sums and the layout check, on real
TenSEAL ciphertexts (the plaintext product is the oracle); packets as Flower records."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import RecordDict

from fedrisk.federation.vertical import Packet
from secure_agg.errors import CodecError, PublicContextError
from secure_agg.vertical import (
    FLOOD_SIGMA,
    MASK_BOUND,
    SLOTS,
    PartyKey,
    generate_x25519,
    pairwise_masks,
)
from secure_agg.vertical_records import packet_from_record, packet_to_record


@pytest.fixture(scope="module")
def keys() -> tuple[PartyKey, PartyKey]:
    owner = PartyKey.generate()
    return owner, PartyKey.from_bytes(owner.public_bytes())


def test_flooded_sums_of_masked_products_give_x_transpose_v(
    keys: tuple[PartyKey, PartyKey],
) -> None:
    owner, public = keys
    rng = np.random.default_rng(1)
    n = SLOTS + 100  # two chunks, the second partial
    v = rng.normal(size=n) * 3
    x = np.clip(rng.normal(size=(n, 3)), -5, 5)

    products, mask_sums = public.masked_products(owner.encrypt(v), x)
    sums = owner.flooded_sums(products, n=n, n_features=3)

    assert len(products) == 3 * 2
    np.testing.assert_allclose(sums - mask_sums, x.T @ v, atol=8 * FLOOD_SIGMA)
    # What the owner returns is masked: without the mask sums it is nowhere near the product.
    # (A sum of n uniform slot masks in ±MASK_BOUND has sd ~ MASK_BOUND * sqrt(n / 3); it falls
    # below MASK_BOUND itself about 1 % of the time, so the bound checked is a thousand times
    # the product: about 1e-5 per feature.)
    assert np.all(np.abs(sums - x.T @ v) > 1e3 * np.abs(x.T @ v).max())


def test_the_key_holder_sees_only_masked_slots(keys: tuple[PartyKey, PartyKey]) -> None:
    owner, public = keys
    rng = np.random.default_rng(2)
    v, x = rng.normal(size=500), rng.normal(size=(500, 1))
    products, _ = public.masked_products(owner.encrypt(v), x)

    slots = owner.decrypt(products, n=500)

    assert np.median(np.abs(slots)) > MASK_BOUND / 4
    assert abs(np.corrcoef(slots, v * x[:, 0])[0, 1]) < 0.2


def test_a_foreign_layout_is_refused_before_decrypting(keys: tuple[PartyKey, PartyKey]) -> None:
    owner, public = keys
    products, _ = public.masked_products(owner.encrypt(np.ones(300)), np.ones((300, 2)))
    with pytest.raises(CodecError, match="layout refused"):
        owner.flooded_sums(products, n=300, n_features=3)
    with pytest.raises(CodecError, match="slots"):
        owner.flooded_sums(products, n=299, n_features=2)


def test_a_public_context_cannot_decrypt(keys: tuple[PartyKey, PartyKey]) -> None:
    owner, public = keys
    assert not public.secret
    with pytest.raises(PublicContextError):
        public.decrypt(owner.encrypt(np.ones(4)), n=4)


def test_a_packet_crosses_flower_records_unchanged(keys: tuple[PartyKey, PartyKey]) -> None:
    owner, _ = keys
    packet = Packet(
        "gradient",
        meta={"epoch": 2, "guest": "bank", "mark_best": True},
        enc={
            "masked-products": owner.encrypt(np.arange(5000.0)),
            "residual4": owner.encrypt(np.ones(3)),
        },
        masked={"flooded-sums/shop": np.array([1.5, -2.25])},
    )

    back = packet_from_record(packet_to_record(packet))

    assert (back.step, back.meta, back.enc) == (packet.step, packet.meta, packet.enc)
    np.testing.assert_array_equal(back.masked["flooded-sums/shop"], [1.5, -2.25])
    assert back.nbytes() == packet.nbytes()
    with pytest.raises(CodecError, match="vertical packet"):
        packet_from_record(RecordDict({}))


def test_pairwise_masks_of_all_hosts_cancel_and_each_alone_is_large() -> None:
    keys = {name: generate_x25519() for name in ("a", "b", "c")}
    pubs = {name: pub for name, (_, pub) in keys.items()}
    masks = [
        pairwise_masks(name, priv, pubs).mask(1000, label="scores/0/1")
        for name, (priv, _) in keys.items()
    ]

    np.testing.assert_allclose(sum(masks), 0.0, atol=1e-3)
    assert all(np.median(np.abs(m)) > MASK_BOUND / 8 for m in masks)
    other = pairwise_masks("a", keys["a"][0], pubs).mask(1000, label="scores/0/2")
    assert not np.allclose(other, masks[0])
