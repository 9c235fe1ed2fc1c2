"""A coordinator that substitutes the parties' relayed public keys: the parties refuse.

The real coordinator and party code run in-process (``run_in_process``); the malicious
coordinator is a subclass of the real one that alters the setup packets it relays (the keys it
would need to unmask the hosts' pairwise masks or to have a party encrypt under a key it holds).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from clients import vertical_party
from clients.vertical_party import VerticalStepError
from fedrisk.data.vertical import align_by_join, load_vertical
from fedrisk.federation import published_keys
from fedrisk.federation import vertical as vp
from fedrisk.federation.vertical import Packet, for_party
from fedrisk.ml.vertical import VerticalParams
from fedrisk.release.identity import load_signing_key
from secure_agg.vertical import PartyKey, generate_x25519
from server.coordinator.vertical import VerticalCoordinator
from simulations.vertical import VerticalWorkspace, prepare_vertical_workspace, run_in_process

PARAMS = VerticalParams(epochs=1, batch_size=256, learning_rate=0.1, seed=3)
RUN = "keys-run"

Swap = Callable[[dict[int, Packet]], None]


def substituting(swap: Swap) -> Callable[..., VerticalCoordinator]:
    """A coordinator that applies ``swap`` to the setup packets relaying the parties' keys."""

    class SubstitutingCoordinator(VerticalCoordinator):
        def _send(self, packets: Mapping[int, Packet]) -> dict[int, Packet]:
            relayed = dict(packets)
            if all(p.step == vp.STEP_SETUP and p.enc for p in relayed.values()):
                swap(relayed)
            return super()._send(relayed)

    return SubstitutingCoordinator


@dataclass(frozen=True)
class Federation:
    ws: VerticalWorkspace

    def name(self, node: int) -> str:
        return self.ws.configs[node].name


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    rng = np.random.default_rng(5)
    raw = load_vertical("synthetic-vertical", rng=rng, n_customers=400)
    views = align_by_join(raw, rng=rng)
    assert [v.role for v in views] == ["guest", "host", "host"]
    return Federation(prepare_vertical_workspace(tmp_path_factory.mktemp("keys"), views))


def _attack(fed: Federation, swap: Swap) -> str:
    with pytest.raises(VerticalStepError) as refused:
        run_in_process(fed.ws, PARAMS, model_id=RUN, coordinator=substituting(swap))
    return str(refused.value)


def test_a_swapped_host_mask_key_is_refused(federation: Federation) -> None:
    host1, host2 = federation.name(1), federation.name(2)
    _, own_public = generate_x25519()  # the coordinator's own mask key

    def swap(packets: dict[int, Packet]) -> None:
        chunks = packets[2].enc[for_party(vp.X25519, host1)]
        packets[2].enc[for_party(vp.X25519, host1)] = [own_public, chunks[1]]

    reason = _attack(federation, swap)

    assert f"{host2} refuses {host1}'s {published_keys.X25519_MASK} key" in reason
    assert f"step {vp.STEP_SETUP!r} of run {RUN!r}" in reason
    assert "invalid" in reason
    # refused before anything was installed
    assert not (federation.ws.configs[2].peers_dir / f"{host1}.x25519").exists()


def test_a_guest_context_re_signed_by_a_colluding_host_is_refused(
    federation: Federation,
) -> None:
    guest, host1 = federation.name(0), federation.name(1)
    # The coordinator controls host2's node: it signs its own public context with host2's
    # roster key, claiming it is the guest's, so host1 would encrypt under a key it holds.
    forged = PartyKey.generate().public_bytes()
    claim = published_keys.KeyClaim(RUN, vp.STEP_SETUP, guest, published_keys.CKKS_PUBLIC_CONTEXT)
    signature = claim.sign(load_signing_key(federation.ws.configs[2].signing_key), forged)

    def swap(packets: dict[int, Packet]) -> None:
        packets[1].enc[for_party(vp.PUBLIC_CONTEXT, guest)] = [forged, signature]

    reason = _attack(federation, swap)

    assert f"{host1} refuses {guest}'s {published_keys.CKKS_PUBLIC_CONTEXT} key" in reason
    assert "invalid" in reason


def test_a_signed_context_replayed_from_another_run_is_refused(federation: Federation) -> None:
    guest, host1 = federation.name(0), federation.name(1)
    # host1's own, genuinely signed setup answer in an earlier run
    earlier = vertical_party.runtime(federation.ws.configs[1], "earlier-run")
    state: dict[str, Any] = {}
    replayed = vertical_party.handle(Packet(vp.STEP_SETUP), earlier, state, PARAMS)
    old = replayed.enc[vp.PUBLIC_CONTEXT]

    def swap(packets: dict[int, Packet]) -> None:
        packets[0].enc[for_party(vp.PUBLIC_CONTEXT, host1)] = old

    reason = _attack(federation, swap)

    assert f"{guest} refuses {host1}'s {published_keys.CKKS_PUBLIC_CONTEXT} key" in reason
    assert "replayed" in reason


def test_an_unsigned_key_is_refused(federation: Federation) -> None:
    guest, host1 = federation.name(0), federation.name(1)

    def swap(packets: dict[int, Packet]) -> None:
        key = for_party(vp.PUBLIC_CONTEXT, guest)
        packets[1].enc[key] = packets[1].enc[key][:1]

    reason = _attack(federation, swap)

    assert f"{host1} refuses {guest}'s {published_keys.CKKS_PUBLIC_CONTEXT} key" in reason
    assert "must carry" in reason


def test_the_honest_coordinator_sets_up_the_run(federation: Federation) -> None:
    # the same workspace after the refusals: an honest run trains and releases every part
    result = run_in_process(federation.ws, PARAMS, model_id="honest-run")

    assert len(result.history) == 1
    assert sorted(result.released) == sorted(federation.name(n) for n in range(3))
