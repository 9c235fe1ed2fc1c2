"""Vertical LR on real ciphertexts: every packet between the parties and the coordinator is
inspected, and the encrypted run follows its plaintext oracle.

One in-process run (the coordinator and party code the Flower apps run, with direct calls instead
of Grid messages) is shared by the module; a tap records every packet both ways.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from clients import vertical_party
from fedrisk.data.vertical import align_by_join, load_vertical
from fedrisk.errors import SignatureError
from fedrisk.federation import vertical as vp
from fedrisk.federation.vertical import Packet
from fedrisk.ml.metrics import auc
from fedrisk.ml.vertical import (
    VerticalParams,
    batch_schedule,
    host_slopes4,
    residual4,
    train_plain_vertical,
)
from fedrisk.release.artifact import ARTIFACT_FILE, load_trusted_keys
from fedrisk.release.vertical import read_part
from secure_agg.vertical import PartyKey
from server.coordinator.vertical import VerticalResult
from simulations.vertical import (
    VerticalWorkspace,
    oracle_params,
    party_matrices,
    prepare_vertical_workspace,
    run_in_process,
    scores_from_parts,
)
from tests.support.vertical import decrypt_with

PARAMS = VerticalParams(epochs=2, batch_size=512, learning_rate=0.1, seed=3)
ORDER_SEED = 17  # the guest's secret batch order, fixed here so the oracle can follow it
GUEST = 0


class Run:
    def __init__(self, ws: VerticalWorkspace, result: VerticalResult) -> None:
        self.ws = ws
        self.result = result
        self.packets: list[tuple[str, int, Packet]] = []
        self.partial_scores: list[np.ndarray] = []
        self.host_weights: list[np.ndarray] = []
        self.residuals: list[np.ndarray] = []


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    rng = np.random.default_rng(3)
    raw = load_vertical("synthetic-vertical", rng=rng, n_customers=1500)
    views = align_by_join(raw, rng=rng)
    ws = prepare_vertical_workspace(
        tmp_path_factory.mktemp("vertical"), views, raw, order_seed=ORDER_SEED
    )
    model_id = "vertical-test"
    states: list[dict[str, Any]] = []
    record = Run(ws, VerticalResult(parties={}))
    runtimes = [vertical_party.runtime(c, model_id) for c in ws.configs]
    matrices = party_matrices(views)  # every party's matrix in the guest's row order
    labels = views[GUEST].labels
    assert labels is not None

    def weights(node: int) -> np.ndarray:
        return np.asarray(states[node].get("adam", {}).get("w", np.zeros(matrices[node].shape[1])))

    def tap(direction: str, node: int, packet: Packet) -> None:
        record.packets.append((direction, node, packet))
        # Record what must stay secret, from the parties' live state, as the run goes.
        if direction == "to" and packet.step == vp.STEP_GRADIENT and node != GUEST:
            own_rows = np.asarray(states[node]["rows"])
            host_matrix = vertical_party.host_model(runtimes[node], states[node]).matrix
            record.host_weights.append(weights(node))
            record.partial_scores.append(host_matrix[own_rows] @ weights(node))
            if node == 1:
                rows = batch_schedule(
                    views[GUEST].rows("train"),
                    batch_size=PARAMS.batch_size,
                    seed=ORDER_SEED,
                    epoch=int(packet.meta["epoch"]),
                )[int(packet.meta["batch"])]
                u_guest = matrices[GUEST][rows] @ weights(GUEST)
                u_hosts = sum(matrices[h][rows] @ weights(h) for h in range(1, len(views)))
                # 4d, what the protocol computes
                record.residuals.append(
                    residual4(u_guest, labels[rows]) + host_slopes4(u_guest) * u_hosts
                )

    record.result = run_in_process(ws, PARAMS, model_id=model_id, tap=tap, states=states)
    return record


def _secret(ws: VerticalWorkspace, node: int) -> bytes:
    return ws.configs[node].secret_key.read_bytes()


def test_the_encrypted_run_follows_its_plaintext_oracle(run: Run) -> None:
    views = run.ws.views
    y = views[GUEST].labels
    assert y is not None
    matrices = party_matrices(views)
    oracle = train_plain_vertical(
        matrices,
        y,
        train_rows=views[0].rows("train"),
        valid_rows=views[0].rows("valid"),
        params=oracle_params(run.ws, PARAMS),
    )
    plain = sum(m @ w for m, w in zip(matrices, oracle.weights, strict=True))
    encrypted = scores_from_parts(run.ws, run.result)

    test = views[0].rows("test")
    assert run.result.best_epoch == oracle.best_epoch
    # The flooding noise (sd 1 on each sum, 1/2048 on a gradient coordinate of this batch)
    # is all that separates them; Adam scales small gradients up, so allow a little.
    assert np.corrcoef(plain, encrypted)[0, 1] > 0.995
    assert abs(auc(y[test], encrypted[test]) - auc(y[test], np.asarray(plain)[test])) < 0.005


def test_no_per_customer_value_travels_in_plaintext(run: Run) -> None:
    widest = max(m.shape[1] for m in party_matrices(run.ws.views))
    for direction, node, packet in run.packets:
        for key, values in packet.masked.items():
            # Only masked per-feature sums and the validation AUC travel as numbers.
            assert values.size <= widest, (direction, node, packet.step, key)
            if key.startswith(vp.SUMS):
                # A sum of 512 uniform masks of +-2^30 is ~1e10 in size; the true gradient sums
                # are below 512 * 5 * 20: seeing one under 1e3 would mean an unmasked sum.
                assert np.all(np.abs(values) > 1e3), (packet.step, key)


def test_no_label_feature_weight_or_partial_score_bytes_in_any_message(run: Run) -> None:
    blob = b"".join(
        c for _, _, p in run.packets for chunks in p.enc.values() for c in chunks
    ) + b"".join(v.tobytes() for _, _, p in run.packets for v in p.masked.values())
    blob += b"".join(json.dumps(p.meta).encode() for _, _, p in run.packets)
    views = run.ws.views
    labels = views[GUEST].labels
    assert labels is not None
    secrets = [labels.astype(np.float64), labels.astype(np.int64)]
    for view in views:
        for col in view.numeric:
            secrets.append(view.features[col].to_numpy(dtype=np.float64)[view.known][:64])
    secrets += run.host_weights[1:] + run.partial_scores + run.residuals
    # A window of 8 values starting at a non-zero one (a run of zero bytes could occur anywhere).
    needles = [
        np.ascontiguousarray(s[np.flatnonzero(s)[0] :][:8]).tobytes() for s in secrets if np.any(s)
    ]
    assert len(needles) > 10
    for needle in needles:
        assert needle not in blob


def test_every_ciphertext_a_party_receives_reads_as_masked_or_noise(run: Run) -> None:
    checked = 0
    for direction, node, packet in run.packets:
        if direction != "to" or packet.step == vp.STEP_SETUP:
            continue  # setup carries public contexts
        for key, chunks in packet.enc.items():
            if key == vp.ROWS:
                continue  # a host's own (padded) row references: test_vertical_host_view
            for chunk in chunks[:2]:
                values = decrypt_with(_secret(run.ws, node), chunk)
                # Either a masked product (|mask| up to 2^30) or a ciphertext under another
                # party's key, which decrypts to noise of the modulus' size.
                assert np.median(np.abs(values)) > 1e6, (node, packet.step, key)
                checked += 1
    assert checked > 20


def test_labels_and_residual_leave_the_guest_only_under_its_own_key(run: Run) -> None:
    seen = 0
    for direction, node, packet in run.packets:
        if direction != "from" or node != GUEST:
            continue
        for key, chunks in packet.enc.items():
            if not key.startswith(vp.C_ENC):
                continue
            seen += 1
            for party in range(len(run.ws.views)):
                # Under a host's key: noise; under the guest's own: masked by the guest's R.
                assert np.median(np.abs(decrypt_with(_secret(run.ws, party), chunks[0]))) > 1e6
    assert seen > 4


def test_the_coordinator_only_ever_holds_public_contexts(run: Run) -> None:
    # each published context travels as [context, its owner's 64-byte Ed25519 signature]
    published = [
        chunks
        for _, _, p in run.packets
        for key, chunks in p.enc.items()
        if key.startswith(vp.PUBLIC_CONTEXT)
    ]
    assert len(published) >= 2 * len(run.ws.views)
    assert all(len(chunks) == 2 and len(chunks[1]) == 64 for chunks in published)
    assert not any(PartyKey.from_bytes(chunks[0]).secret for chunks in published)


def test_parts_are_signed_and_missing_customers_score_zero(run: Run) -> None:
    trusted = load_trusted_keys(run.ws.trusted_keys_dir)
    host_view = run.ws.views[2]
    part = read_part(Path(run.result.released[host_view.name]), trusted_keys=trusted)
    assert part.role == "host" and "_known" in part.columns
    scores = part.partial_scores(host_view.features, host_view.known)
    assert np.all(scores[~host_view.known] == 0.0) and np.any(scores[host_view.known] != 0.0)

    path = Path(run.result.released[host_view.name]) / ARTIFACT_FILE
    doc = json.loads(path.read_bytes())
    doc["weights"][0] += 1.0
    path.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")), encoding="ascii")
    with pytest.raises(SignatureError):
        read_part(path.parent, trusted_keys=trusted)


def test_a_single_hosts_score_is_masked_even_for_a_colluding_guest(run: Run) -> None:
    # A host re-encrypts under the guest's key the masked score the guest made under the host's
    # key, plus its share of the hosts' zero-sum mask. A guest that a coordinator hands one
    # host's ciphertext knows its own mask R, so what it could read beyond R is that share:
    # large for each host alone, cancelling over the hosts.
    sent: dict[tuple[int, str], np.ndarray] = {}
    shares: dict[str, list[np.ndarray]] = {}
    for direction, node, packet in run.packets:
        if node == GUEST or packet.step != vp.STEP_CONVERT:
            continue
        for key, chunks in packet.enc.items():
            dest = key.partition("/")[2]
            if direction == "to" and key.startswith(vp.CONVERT):
                sent[node, dest] = decrypt_with(_secret(run.ws, node), chunks[0])
            elif direction == "from" and key.startswith(vp.U_FOR_GUEST):
                back = decrypt_with(_secret(run.ws, GUEST), chunks[0])
                share = back - sent.pop((node, dest))
                assert np.median(np.abs(share)) > 1e6
                shares.setdefault(dest, []).append(share)
    assert len(shares) >= 2
    for values in shares.values():
        assert len(values) % 2 == 0  # one per host and step
        for first, second in zip(values[::2], values[1::2], strict=True):
            assert np.max(np.abs(first + second)) < 1e-2
