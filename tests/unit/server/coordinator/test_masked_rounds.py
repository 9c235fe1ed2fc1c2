"""The coordinator's masked exchanges over an in-memory grid whose parties mask real CKKS
ciphertexts: exact sums, dropout recovery through ``query.unmask``, refusal below the threshold,
and no seed or share in the clear in any message or coordinator file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from flwr.app import Message

from fedrisk.federation import protocol as proto
from fedrisk.federation.run_config import FederationConfig
from secure_agg.aggregation import CkksAggregation, unweight_sum
from secure_agg.keys import CkksContext, public_context
from secure_agg.masking import (
    MaskIdentity,
    MaskPlan,
    default_threshold,
    exchange_seed,
    open_shares,
)
from server.coordinator.checkpoints import CheckpointStore
from server.coordinator.progress import ProgressLog, read_events
from server.coordinator.strategy import EncryptedFedAvg, FederationError, FederationResult
from tests.support.fake_grid import FakeGrid, FakeParty, VirtualClock, oracle

N = 6
ROUNDS = 2
pytestmark = pytest.mark.usefixtures("serverapp_identity")

TIMEOUT = 30.0
TOL = 1e-6


@pytest.fixture(scope="module")
def identities() -> dict[str, MaskIdentity]:
    keys = {f"party_{i}": X25519PrivateKey.generate() for i in range(N)}
    peers = {name: key.public_key() for name, key in keys.items()}
    return {name: MaskIdentity(name, "run-m|1", key, peers) for name, key in keys.items()}


def make_parties(
    secret: CkksContext,
    identities: dict[str, MaskIdentity],
    *,
    silent: int,
    self_masks: bool = False,
) -> list[FakeParty]:
    """``N`` masking parties; the last ``silent`` die before round 2."""
    rng = np.random.default_rng(3)
    return [
        FakeParty(
            name=name,
            crypto=CkksAggregation(secret),
            n_examples=100 * (i + 1),
            step=rng.normal(size=4),
            hist=np.array([float(i + 1), 10.0 * (i + 1)]),
            masks=identities[name],
            self_masks=self_masks,
            silent_from_round=2 if i >= N - silent else None,
        )
        for i, name in enumerate(sorted(identities))
    ]


def run(secret: CkksContext, parties: list[FakeParty], tmp_path: Path) -> FederationResult:
    clock = VirtualClock()
    self_masks = parties[0].self_masks
    strategy = EncryptedFedAvg(
        config=FederationConfig(
            run_id="run-m", rounds=ROUNDS, min_parties=3, **{"mask-self": self_masks}
        ),
        summer=CkksAggregation(public_context(secret)),
        progress=ProgressLog(tmp_path / "progress.jsonl"),
        checkpoints=CheckpointStore(tmp_path / "checkpoints"),
        clock=clock,
    )
    return strategy.start(FakeGrid(parties, clock=clock), timeout=TIMEOUT)


@pytest.mark.parametrize("self_masks", [False, True])
@pytest.mark.parametrize("silent", range(N - default_threshold(N) + 1))
def test_masked_rounds_give_the_survivors_exact_model_for_every_allowed_dropout_count(
    secret: CkksContext,
    identities: dict[str, MaskIdentity],
    tmp_path: Path,
    silent: int,
    self_masks: bool,
) -> None:
    parties = make_parties(secret, identities, silent=silent, self_masks=self_masks)

    result = run(secret, parties, tmp_path)

    live = parties[: N - silent]
    weights, _ = unweight_sum(CkksAggregation(secret).decode(result.enc_global))
    np.testing.assert_allclose(weights, oracle([parties, live]), rtol=0, atol=TOL)
    events = read_events(tmp_path / "progress.jsonl")
    unmasked = [(e["exchange"], e["dropped"]) for e in events if e["event"] == "unmasked"]
    dropped = sorted(p.name for p in parties[N - silent :])
    assert unmasked == [("round:2", dropped), ("final:2", dropped)] * (silent > 0)
    # Every round's metrics came from masked histograms of the live parties, exactly.
    for entry in result.history:
        assert entry["auc"] == pytest.approx(sum(p.hist[0] for p in live), abs=TOL)


def test_fewer_survivors_than_the_threshold_refuse_the_masked_sum(
    secret: CkksContext, identities: dict[str, MaskIdentity], tmp_path: Path
) -> None:
    parties = make_parties(secret, identities, silent=N - default_threshold(N) + 1)

    with pytest.raises(FederationError, match=r"masked sum refused: .* at least the threshold 4"):
        run(secret, parties, tmp_path)


def _message_bytes(message: Message) -> bytes:
    parts = []
    if message.has_content():
        for record in message.content.config_records.values():
            for key, value in record.items():
                parts.append(key.encode())
                parts.append(value if isinstance(value, bytes) else str(value).encode())
        for array_record in message.content.array_records.values():
            parts.extend(bytes(array.data) for array in array_record.values())
    return b"\0".join(parts)


@pytest.mark.parametrize("self_masks", [False, True])
def test_no_seed_or_share_is_in_the_clear_in_a_message_or_a_coordinator_file(
    secret: CkksContext, identities: dict[str, MaskIdentity], tmp_path: Path, self_masks: bool
) -> None:
    parties = make_parties(secret, identities, silent=1, self_masks=self_masks)
    run(secret, parties, tmp_path)

    replies = [m for p in parties for m in p.sent]
    label_of = {
        m.metadata.message_id: MaskPlan.from_json(
            str(m.content.config_records[proto.CONFIG][proto.CFG_MASK])
        ).exchange
        for p in parties
        for m in p.received
        if proto.CFG_MASK in m.content.config_records[proto.CONFIG]
    }
    labels = set(label_of.values())
    names = sorted(identities)
    seeds = {
        exchange_seed(identities[a].pair_seed(b), label)
        for label in labels
        for a in names
        for b in names
        if a < b
    }
    shares: set[bytes] = set()
    for party in parties:
        for reply in party.sent:
            sealed = reply.content.config_records.get(proto.MASK_SHARES, {})
            for recipient, blob in sealed.items():
                opened = open_shares(
                    identities[recipient],
                    exchange=label_of[reply.metadata.reply_to_message_id],
                    sender=party.name,
                    blob=bytes(blob),  # type: ignore[arg-type]
                )
                shares.update(opened.values())
    assert {"stats:1", "round:1", "round:2", "final:2"} <= labels
    assert len(seeds) == len(labels) * N * (N - 1) // 2 and shares
    secrets = seeds | shares
    files = b"".join(f.read_bytes() for f in tmp_path.rglob("*") if f.is_file())
    sent_down = [m for p in parties for m in p.received]
    for blob, where in (
        [(files, "coordinator files")]
        + [(_message_bytes(m), "message") for m in sent_down]
        + [
            (_message_bytes(m), "reply")
            for m in replies
            if proto.MASK_REVEALED not in m.content.config_records
        ]
    ):
        leaked = [s for s in secrets if s in blob or s.hex().encode() in blob]
        assert not leaked, where
    # The only shares that travel opened are the survivors' reveals: of dropped-party pair
    # seeds, and of survivors' self seeds (never a dropped party's).
    for reply in replies:
        revealed = reply.content.config_records.get(proto.MASK_REVEALED)
        if revealed is not None:
            dropped = label_of[reply.metadata.reply_to_message_id] in {"round:2", "final:2"}
            pairs = [label for label in revealed if not label.startswith("self|")]
            assert revealed and all("party_5" in pair for pair in pairs)
            assert bool(pairs) == dropped
            assert ("self|7:party_5" in revealed) != dropped
