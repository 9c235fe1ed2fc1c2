"""What a host receives in a real vertical run does not depend on which of the guest's customers
it lacks.

Two in-process runs (the coordinator and party code the Flower apps run, real ciphertexts) over
the same guest, its same split and secret order, and hosts that share the same number of the
guest's customers but different ones. Every packet a host receives is recorded; its shape (steps,
metadata, ciphertext counts and sizes, masked arrays) is identical across the runs, and the row
references it decrypts are, in every list, each shared customer the same number of times (give or
take one), whichever guest rows it lacks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tenseal as ts

from fedrisk.data.vertical import VerticalDataset, align_by_join, load_vertical
from fedrisk.federation import vertical as vp
from fedrisk.federation.vertical import Packet
from fedrisk.ml.vertical import VerticalParams
from simulations.vertical import VerticalWorkspace, prepare_vertical_workspace, run_in_process
from tests.support.vertical import decrypt_with

PARAMS = VerticalParams(epochs=1, batch_size=256, seed=2)
SHARE = 0.7


class HostView:
    def __init__(self, ws: VerticalWorkspace) -> None:
        self.ws = ws
        self.received: dict[int, list[Packet]] = {}

    def references(self, node: int) -> list[np.ndarray]:
        """Every reference list the host decrypted, in order."""
        secret = self.ws.configs[node].secret_key.read_bytes()
        out = []
        for packet in self.received[node]:
            if vp.ROWS in packet.enc:
                values = np.concatenate([decrypt_with(secret, c) for c in packet.enc[vp.ROWS]])
                n = int(packet.meta.get("slots", packet.meta.get("rows", 0)))
                out.append(np.round(values[:n]).astype(np.int64))
        return out


def _sizes(ctx: ts.Context, key: str, chunks: list[bytes]) -> list[int]:
    """Slots per ciphertext (their compressed byte lengths vary with the random contents); a
    public context or X25519 key counts as one item."""
    if key.startswith((vp.PUBLIC_CONTEXT, vp.X25519)):
        return [1] * len(chunks)
    return [ts.ckks_vector_from(ctx, c).size() for c in chunks]


def _shape(ctx: ts.Context, packet: Packet) -> tuple[Any, ...]:
    """Everything about a packet but the ciphertexts' (random) contents."""
    return (
        packet.step,
        sorted(packet.meta.items()),
        sorted((k, _sizes(ctx, k, chunks)) for k, chunks in packet.enc.items()),
        sorted((k, v.shape) for k, v in packet.masked.items()),
    )


def _with_hosts_knowing(full: VerticalDataset, split: np.ndarray, seed: int) -> VerticalDataset:
    """Each host keeps a different random 70 % of the guest's training, validation and test
    customers: the same counts (a host learns how many of its customers the guest trains and
    validates on), other customers."""
    rng = np.random.default_rng(seed)
    guest_ids = full.guest.frame[full.guest.id_column].to_numpy()
    hosts = []
    for host in full.hosts:
        keep: set[object] = set()
        for code in np.unique(split):
            ids = guest_ids[split == code]
            keep.update(rng.permutation(ids)[: round(SHARE * len(ids))].tolist())
        rows = host.frame[host.id_column].isin(keep).to_numpy()
        hosts.append(replace(host, frame=host.frame.loc[rows].reset_index(drop=True)))
    return replace(full, hosts=tuple(hosts))


def _run(root: Path, data: VerticalDataset) -> HostView:
    views = align_by_join(data, rng=np.random.default_rng(1))  # the guest's split: same twice
    ws = prepare_vertical_workspace(root, views, data, order_seed=7)
    record = HostView(ws)

    def tap(direction: str, node: int, packet: Packet) -> None:
        if direction == "to" and node != 0:
            record.received.setdefault(node, []).append(packet)

    run_in_process(ws, PARAMS, model_id="host-view", tap=tap)
    return record


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[HostView, HostView]:
    full = load_vertical(
        "synthetic-vertical",
        rng=np.random.default_rng(4),
        n_customers=900,
        overlap={"ecommerce": 1.0, "telecom": 1.0},
    )
    split = align_by_join(full, rng=np.random.default_rng(1))[0].split
    first, second = _with_hosts_knowing(full, split, 10), _with_hosts_knowing(full, split, 11)
    for a, b in zip(first.hosts, second.hosts, strict=True):
        ids_a, ids_b = set(a.frame[a.id_column]), set(b.frame[b.id_column])
        assert len(ids_a) == len(ids_b) and ids_a != ids_b
    return (
        _run(tmp_path_factory.mktemp("first"), first),
        _run(tmp_path_factory.mktemp("second"), second),
    )


def test_a_host_receives_the_same_shapes_whichever_customers_it_lacks(
    runs: tuple[HostView, HostView],
) -> None:
    first, second = runs
    assert sorted(first.received) == sorted(second.received) == [1, 2]
    for node in (1, 2):
        ctx = ts.context_from(first.ws.configs[node].secret_key.read_bytes())
        shapes = [_shape(ctx, p) for p in first.received[node]]
        assert len(shapes) > 10
        assert shapes == [_shape(ctx, p) for p in second.received[node]]
        # No packet names a guest row: the metadata holds sizes, steps and names only.
        for packet in first.received[node]:
            assert not any(isinstance(v, list) for v in packet.meta.values())


def test_every_reference_list_repeats_each_shared_customer_evenly(
    runs: tuple[HostView, HostView],
) -> None:
    for run in runs:
        for node in (1, 2):
            lists = run.references(node)
            assert len(lists) >= 3  # install, the batches, validation
            install, *scored = lists
            assert len(np.unique(install)) == len(install)
            # One epoch's batches together, then the validation list: in each, every shared
            # customer appears q or q + 1 times, so a padded slot looks like any other.
            epoch = np.concatenate(scored[:-1])
            for padded in (epoch, scored[-1]):
                counts = np.array(sorted(Counter(padded.tolist()).values()))
                assert counts.max() - counts.min() <= 1, counts
            assert set(np.unique(epoch)) == set(install)
    # The same profile over the epoch and over validation in both runs: it depends on the sizes
    # only (within one batch the counts are a random draw, alike whatever the host lacks).
    for node in (1, 2):
        profiles = []
        for run in runs:
            _, *scored = run.references(node)
            lists = [np.concatenate(scored[:-1]), scored[-1]]
            profiles.append([sorted(Counter(r.tolist()).values()) for r in lists])
        assert profiles[0] == profiles[1]
