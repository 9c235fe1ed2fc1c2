"""Pairwise masks under real CKKS ciphertexts: the collusion attack fails, sums stay exact,
dropped parties' masks are rebuilt from sealed Shamir shares, and too few survivors is refused."""

from __future__ import annotations

import numpy as np
import pytest
from Crypto.Protocol.SecretSharing import Shamir
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secure_agg.aggregation import sum_encrypted
from secure_agg.codec import decrypt_vector
from secure_agg.errors import CodecError
from secure_agg.keys import CkksContext
from secure_agg.masking import (
    MaskedExchange,
    MaskIdentity,
    MaskingError,
    MaskPlan,
    RecoveryRefusedError,
    RevealLedger,
    default_threshold,
    exchange_seed,
    mask_chunks,
    mask_stream,
    reveal_shares,
    share_seeds,
    threshold_for,
    unmask_sum,
)

NAMES = [f"party_{i}" for i in range(6)]
LENGTH = 9000  # two ciphertext chunks at N = 8192
EXCHANGE = "round:1"


@pytest.fixture(scope="module")
def identities() -> dict[str, MaskIdentity]:
    keys = {name: X25519PrivateKey.generate() for name in NAMES}
    peers = {name: key.public_key() for name, key in keys.items()}
    return {name: MaskIdentity(name, "run-a", keys[name], peers) for name in NAMES}


@pytest.fixture(scope="module")
def updates() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {name: rng.normal(size=LENGTH) for name in NAMES}


SELF_SEEDS = {name: bytes([i + 1]) * 16 for i, name in enumerate(NAMES)}
"""Fixed here for the tests' own bookkeeping; parties draw theirs with ``new_self_seed``."""


def _mask_all(
    ctx: CkksContext,
    identities: dict[str, MaskIdentity],
    updates: dict[str, np.ndarray],
    *,
    self_masks: bool,
) -> dict[str, list[bytes]]:
    return {
        name: mask_chunks(
            ctx,
            identities[name],
            updates[name],
            exchange=EXCHANGE,
            purpose="update",
            participants=NAMES,
            self_seed=SELF_SEEDS[name] if self_masks else None,
        )
        for name in NAMES
    }


def _share_all(
    identities: dict[str, MaskIdentity], *, self_masks: bool
) -> dict[str, dict[str, bytes]]:
    return {
        name: share_seeds(
            identities[name],
            exchange=EXCHANGE,
            participants=NAMES,
            threshold=default_threshold(len(NAMES)),
            self_seed=SELF_SEEDS[name] if self_masks else None,
        )
        for name in NAMES
    }


def _reveals(
    identities: dict[str, MaskIdentity],
    sealed: dict[str, dict[str, bytes]],
    dropped: list[str],
    *,
    self_masks: bool,
) -> dict[str, dict[str, bytes]]:
    """Every survivor's answer to one unmask request (each with a fresh ledger)."""
    survivors = [n for n in NAMES if n not in dropped]
    return {
        name: reveal_shares(
            identities[name],
            exchange=EXCHANGE,
            participants=NAMES,
            dropped=dropped,
            sealed={sender: sealed[sender][name] for sender in survivors},
            threshold=default_threshold(len(NAMES)),
            ledger=RevealLedger(),
            self_masks=self_masks,
        )
        for name in survivors
    }


def _ask(
    me: MaskIdentity,
    sealed: dict[str, dict[str, bytes]],
    dropped: list[str],
    ledger: RevealLedger,
    *,
    self_masks: bool = False,
) -> dict[str, bytes]:
    """One survivor's answer to an unmask request, with its ledger, at threshold 4."""
    return reveal_shares(
        me,
        exchange=EXCHANGE,
        participants=NAMES,
        dropped=dropped,
        sealed={s: sealed[s][me.name] for s in NAMES if s not in dropped},
        threshold=4,
        ledger=ledger,
        self_masks=self_masks,
    )


@pytest.fixture(scope="module")
def masked(
    secret_ctx: CkksContext, identities: dict[str, MaskIdentity], updates: dict[str, np.ndarray]
) -> dict[str, list[bytes]]:
    return _mask_all(secret_ctx, identities, updates, self_masks=False)


@pytest.fixture(scope="module")
def sealed(identities: dict[str, MaskIdentity]) -> dict[str, dict[str, bytes]]:
    return _share_all(identities, self_masks=False)


def test_colluding_key_holder_reads_noise_not_a_victims_update(
    secret_ctx: CkksContext, masked: dict[str, list[bytes]], updates: dict[str, np.ndarray]
) -> None:
    # The coordinator keeps each ciphertext; party 0 lends the shared secret context.
    for victim in NAMES[1:]:
        read = decrypt_vector(secret_ctx, masked[victim], length=LENGTH)
        assert abs(np.corrcoef(read, updates[victim])[0, 1]) < 0.1
        assert np.max(np.abs(read - updates[victim])) > 1e6


def test_masks_cancel_exactly_in_the_full_sum(
    secret_ctx: CkksContext,
    server_ctx: CkksContext,
    masked: dict[str, list[bytes]],
    updates: dict[str, np.ndarray],
) -> None:
    total = sum_encrypted(server_ctx, [masked[name] for name in NAMES])
    expected = np.sum([updates[name] for name in NAMES], axis=0)
    got = decrypt_vector(secret_ctx, total, length=LENGTH)
    assert np.max(np.abs(got - expected)) <= 1e-6 * np.ptp(expected)


@pytest.mark.parametrize("n_dropped", range(1, len(NAMES) - default_threshold(len(NAMES)) + 1))
def test_survivors_sum_is_exact_after_every_allowed_number_of_dropouts(
    secret_ctx: CkksContext,
    server_ctx: CkksContext,
    identities: dict[str, MaskIdentity],
    masked: dict[str, list[bytes]],
    sealed: dict[str, dict[str, bytes]],
    updates: dict[str, np.ndarray],
    n_dropped: int,
) -> None:
    threshold = default_threshold(len(NAMES))
    round_ = MaskedExchange(EXCHANGE, tuple(NAMES), threshold)
    dropped = NAMES[1 : 1 + n_dropped]
    survivors = sorted(round_.declare_dropped(dropped))
    reveals = _reveals(identities, sealed, dropped, self_masks=False)
    partial = sum_encrypted(server_ctx, [masked[name] for name in survivors])
    fixed = unmask_sum(server_ctx, round_, partial, reveals, purpose="update")
    expected = np.sum([updates[name] for name in survivors], axis=0)
    got = decrypt_vector(secret_ctx, fixed, length=LENGTH)
    assert np.max(np.abs(got - expected)) <= 1e-6 * np.ptp(expected)
    # A dropped party's late ciphertext is no longer accepted into the sum.
    assert not any(round_.accepts(name) for name in dropped)
    assert all(round_.accepts(name) for name in survivors)


def test_fewer_survivors_than_the_threshold_is_refused(
    identities: dict[str, MaskIdentity], sealed: dict[str, dict[str, bytes]]
) -> None:
    threshold = default_threshold(len(NAMES))
    dropped = NAMES[: len(NAMES) - threshold + 1]
    round_ = MaskedExchange(EXCHANGE, tuple(NAMES), threshold)
    with pytest.raises(RecoveryRefusedError, match="at least the threshold 4"):
        round_.declare_dropped(dropped)
    survivor = NAMES[-1]
    with pytest.raises(RecoveryRefusedError, match="at least the threshold"):
        reveal_shares(
            identities[survivor],
            exchange=EXCHANGE,
            participants=NAMES,
            dropped=dropped,
            sealed={s: sealed[s][survivor] for s in NAMES if s not in dropped},
            threshold=threshold,
            ledger=RevealLedger(),
        )


def test_a_survivor_never_reveals_for_a_party_it_was_told_is_alive(
    identities: dict[str, MaskIdentity], sealed: dict[str, dict[str, bytes]]
) -> None:
    me = identities[NAMES[5]]
    ledger = RevealLedger()

    def ask(dropped: list[str]) -> dict[str, bytes]:
        return _ask(me, sealed, dropped, ledger)

    assert set(ask([NAMES[1]])) == {
        "|".join(f"7:{p}" for p in sorted((NAMES[1], s))) for s in NAMES if s != NAMES[1]
    }
    with pytest.raises(RecoveryRefusedError, match="declared alive before"):
        ask([NAMES[1], NAMES[2]])
    with pytest.raises(RecoveryRefusedError, match="a survivor"):
        ask([me.name])


def test_sealed_shares_hold_no_seed_in_the_clear_and_open_only_for_their_recipient(
    identities: dict[str, MaskIdentity], sealed: dict[str, dict[str, bytes]]
) -> None:
    sender = identities[NAMES[0]]
    seeds = [exchange_seed(sender.pair_seed(peer), EXCHANGE) for peer in NAMES[1:]]
    for blob in sealed[NAMES[0]].values():
        assert not any(seed in blob or seed.hex().encode() in blob for seed in seeds)
    # party_2 cannot open what party_0 sealed to party_1.
    with pytest.raises(RecoveryRefusedError, match="do not open"):
        reveal_shares(
            identities[NAMES[2]],
            exchange=EXCHANGE,
            participants=NAMES,
            dropped=[NAMES[3]],
            sealed={s: sealed[s][NAMES[1]] for s in NAMES if s != NAMES[3]},
            threshold=4,
            ledger=RevealLedger(),
        )


def test_masks_differ_by_round_purpose_and_chunk(identities: dict[str, MaskIdentity]) -> None:
    me = identities[NAMES[0]]
    moduli, degree = (1152921504606748673, 1099510890497), 8192

    def mask(exchange: str, purpose: str, chunk: int) -> np.ndarray:
        return me.mask(
            exchange=exchange,
            purpose=purpose,
            participants=NAMES,
            chunk=chunk,
            moduli=moduli,
            degree=degree,
        )

    base = mask("round:1", "update", 0)
    for other in (
        mask("round:2", "update", 0),
        mask("round:1", "hist", 0),
        mask("round:1", "update", 1),
    ):
        assert np.mean(base == other) < 0.01
    assert np.array_equal(base, mask("round:1", "update", 0))


def test_a_malformed_mask_is_refused(secret_ctx: CkksContext) -> None:
    with pytest.raises(CodecError, match="mask must be uint64"):
        secret_ctx.encrypt(np.ones(3), mask=np.zeros((2, 10), dtype=np.uint64))


def test_a_mask_plan_round_trips_and_bad_plans_are_refused() -> None:
    plan = MaskPlan(exchange="round:2", members={"update": ("b", "a", "c"), "stats": None})
    back = MaskPlan.from_json(plan.to_json())
    assert back.members_of("update", ["x"]) == ("a", "b", "c")
    assert back.members_of("stats", ["z", "y"]) == ("y", "z")
    assert back.holders(["a", "b", "c", "d"]) == ("a", "b", "c", "d")
    with pytest.raises(MaskingError, match="purpose must be one the plan masks"):
        back.members_of("hist", ["a"])
    with pytest.raises(MaskingError, match="mask plan must be"):
        MaskPlan.from_json('{"exchange": "x"}')
    with pytest.raises(MaskingError, match="mask-threshold must be between 2 and the 5"):
        threshold_for(6, 5)
    assert threshold_for(0, 5) == 4 and threshold_for(3, 5) == 3


# --------------------------------------------------------------------------------------------------
# Self masks (double masking): a false "dropped" declaration no longer unmasks a live party
# --------------------------------------------------------------------------------------------------


SelfMasked = tuple[dict[str, list[bytes]], dict[str, dict[str, bytes]]]
"""Every party's self- and pairwise-masked ciphertexts, and the shares each sealed."""


@pytest.fixture(scope="module")
def self_masked(
    secret_ctx: CkksContext, identities: dict[str, MaskIdentity], updates: dict[str, np.ndarray]
) -> SelfMasked:
    return (
        _mask_all(secret_ctx, identities, updates, self_masks=True),
        _share_all(identities, self_masks=True),
    )


def _strip_pairwise_masks(
    ctx: CkksContext, victim: str, chunks: list[bytes], reveals: dict[str, dict[str, bytes]]
) -> list[bytes]:
    """What a coordinator does with the victim's pair seeds rebuilt from the reveals: remove
    every pairwise mask from the victim's kept ciphertext."""
    holders = sorted(NAMES)
    q = np.array(ctx.ring_moduli, dtype=np.uint64)[:, None]
    out = []
    for index, chunk in enumerate(chunks):
        total = np.zeros((len(ctx.ring_moduli), ctx.poly_modulus_degree), dtype=np.uint64)
        for peer in (p for p in NAMES if p != victim):
            lo, hi = sorted((victim, peer))
            label = f"{len(lo)}:{lo}|{len(hi)}:{hi}"
            shares = [(holders.index(n) + 1, r[label]) for n, r in reveals.items() if label in r]
            seed = Shamir.combine(shares[: default_threshold(len(NAMES))], False)
            stream = mask_stream(
                seed,
                purpose="update",
                chunk=index,
                moduli=ctx.ring_moduli,
                degree=ctx.poly_modulus_degree,
            )
            # The victim added +stream when it sorts first: remove it.
            total = (total + (q - stream if victim < peer else stream)) % q
        out.append(ctx.add_mask(chunk, total))
    return out


@pytest.mark.parametrize("self_masks", [True, False])
def test_a_false_drop_declaration_reveals_a_live_partys_vector_only_without_self_masks(
    secret_ctx: CkksContext,
    identities: dict[str, MaskIdentity],
    masked: dict[str, list[bytes]],
    self_masked: SelfMasked,
    sealed: dict[str, dict[str, bytes]],
    updates: dict[str, np.ndarray],
    self_masks: bool,
) -> None:
    # The coordinator kept party_1's ciphertext, then tells the others party_1 dropped.
    victim = NAMES[1]
    kept = self_masked[0][victim] if self_masks else masked[victim]
    blobs = self_masked[1] if self_masks else sealed
    reveals = _reveals(identities, blobs, [victim], self_masks=self_masks)

    read = decrypt_vector(
        secret_ctx, _strip_pairwise_masks(secret_ctx, victim, kept, reveals), length=LENGTH
    )

    corr = abs(np.corrcoef(read, updates[victim])[0, 1])
    if self_masks:
        assert corr < 0.05  # its self mask still hides it
    else:
        assert corr > 0.999  # the attack the self masks stop


@pytest.mark.parametrize("n_dropped", range(len(NAMES) - default_threshold(len(NAMES)) + 1))
def test_with_self_masks_the_survivors_sum_is_exact_for_every_allowed_number_of_dropouts(
    secret_ctx: CkksContext,
    server_ctx: CkksContext,
    identities: dict[str, MaskIdentity],
    self_masked: SelfMasked,
    updates: dict[str, np.ndarray],
    n_dropped: int,
) -> None:
    round_ = MaskedExchange(EXCHANGE, tuple(NAMES), default_threshold(len(NAMES)), self_masks=True)
    dropped = NAMES[2 : 2 + n_dropped]
    survivors = sorted(round_.declare_dropped(dropped))
    chunks, blobs = self_masked
    reveals = _reveals(identities, blobs, dropped, self_masks=True)
    partial = sum_encrypted(server_ctx, [chunks[name] for name in survivors])
    assert round_.needs_correction()

    fixed = unmask_sum(server_ctx, round_, partial, reveals, purpose="update")

    expected = np.sum([updates[name] for name in survivors], axis=0)
    got = decrypt_vector(secret_ctx, fixed, length=LENGTH)
    assert np.max(np.abs(got - expected)) <= 1e-6 * np.ptp(expected)
    # Without the correction the sum is noise: the self masks do not cancel.
    raw = decrypt_vector(secret_ctx, partial, length=LENGTH)
    assert abs(np.corrcoef(raw, expected)[0, 1]) < 0.05


def test_with_self_masks_fewer_survivors_than_the_threshold_is_refused(
    identities: dict[str, MaskIdentity], self_masked: SelfMasked
) -> None:
    _, self_sealed = self_masked
    threshold = default_threshold(len(NAMES))
    dropped = NAMES[: len(NAMES) - threshold + 1]
    with pytest.raises(RecoveryRefusedError, match="at least the threshold 4"):
        MaskedExchange(EXCHANGE, tuple(NAMES), threshold, self_masks=True).declare_dropped(dropped)
    with pytest.raises(RecoveryRefusedError, match="at least the threshold"):
        _reveals(identities, self_sealed, dropped, self_masks=True)
    with pytest.raises(RecoveryRefusedError, match="above half the 6 participants"):
        reveal_shares(
            identities[NAMES[0]],
            exchange=EXCHANGE,
            participants=NAMES,
            dropped=[],
            sealed={s: self_sealed[s][NAMES[0]] for s in NAMES},
            threshold=3,
            ledger=RevealLedger(),
            self_masks=True,
        )


@pytest.mark.parametrize("first_dropped", [True, False])
def test_a_survivor_never_reveals_both_shares_of_one_party(
    identities: dict[str, MaskIdentity],
    self_masked: SelfMasked,
    first_dropped: bool,
) -> None:
    _, self_sealed = self_masked
    me = identities[NAMES[5]]
    ledger = RevealLedger()

    def ask_and_keep(dropped: list[str]) -> dict[str, bytes]:
        nonlocal ledger
        kept = RevealLedger.from_json(ledger.to_json())
        answer = _ask(me, self_sealed, dropped, kept, self_masks=True)
        ledger = kept
        return answer

    victim = NAMES[1]
    first, second = ([victim], []) if first_dropped else ([], [victim])
    answer = ask_and_keep(first)
    pairs = [label for label in answer if not label.startswith("self|") and victim in label]
    assert (f"self|7:{victim}" in answer) != first_dropped
    assert bool(pairs) == first_dropped
    # The ledger, kept in Context.state as JSON between messages, refuses the other kind.
    with pytest.raises(RecoveryRefusedError, match=r"declared (alive|dropped) before"):
        ask_and_keep(second)
