"""Sealed-record cache: each ciphertext reaches a party once per run, checked by digest, and is
decrypted there once."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict

from fedrisk.federation import protocol as proto
from secure_agg.codec import decrypt_record, encrypt_to_record
from secure_agg.keys import CkksContext, generate_context
from secure_agg.params import HEParams
from secure_agg.record_cache import (
    RESEND_MARK,
    MissingRecordError,
    RecordDigestError,
    attach,
    digest_key,
    digests_of,
    record_digest,
    take_decrypted,
)

KEYS = (proto.ENC_STATS, proto.ENC_GLOBAL)


@pytest.fixture(scope="module")
def ctx() -> CkksContext:
    return generate_context(HEParams())


PLAIN = {
    proto.ENC_STATS: np.random.default_rng(0).normal(size=300),
    proto.ENC_GLOBAL: np.random.default_rng(1).normal(size=5000),
}


@pytest.fixture(scope="module")
def records(ctx: CkksContext) -> dict[str, ArrayRecord]:
    return {key: encrypt_to_record(ctx, values) for key, values in PLAIN.items()}


class _Decrypter:
    """The party's decryption, counting how often it runs."""

    def __init__(self, ctx: CkksContext) -> None:
        self.ctx = ctx
        self.calls = 0

    def __call__(self, record: ArrayRecord) -> np.ndarray:
        self.calls += 1
        return decrypt_record(self.ctx, record)


def _take(
    content: RecordDict, cfg: ConfigRecord, state: RecordDict, decrypt: _Decrypter
) -> dict[str, np.ndarray]:
    return take_decrypted(content, cfg, state, keys=KEYS, decrypt=decrypt)


def _assert_plain(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    for key, values in expected.items():
        np.testing.assert_allclose(got[key], values, atol=1e-6)


def _party_state() -> RecordDict:
    context = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    return context.state


def _config(content: RecordDict) -> ConfigRecord:
    return content.config_records[proto.CONFIG]


def test_digest_names_the_exact_ciphertext(ctx: CkksContext) -> None:
    vec = np.linspace(-1, 1, 100)
    a = encrypt_to_record(ctx, vec)
    b = encrypt_to_record(ctx, vec)  # fresh CKKS randomness: different ciphertext

    assert record_digest(a) == record_digest(ArrayRecord(dict(a.items())))
    assert record_digest(a) != record_digest(b)
    assert len(record_digest(a)) == 64


def test_a_record_is_sent_once_decrypted_once_and_then_read_from_the_party_cache(
    ctx: CkksContext, records: dict[str, ArrayRecord]
) -> None:
    digests = digests_of(records)
    state = _party_state()
    decrypt = _Decrypter(ctx)
    first = attach(ConfigRecord({"round": 1}), records, digests, held={})

    got = _take(first, _config(first), state, decrypt)
    second = attach(ConfigRecord({"round": 2}), records, digests, held=digests)
    again = _take(second, _config(second), state, decrypt)

    assert set(first.array_records) == set(KEYS)
    _assert_plain(got, PLAIN)
    assert not second.array_records  # nothing sealed travels the second time
    assert _config(second)[digest_key(proto.ENC_GLOBAL)] == digests[proto.ENC_GLOBAL]
    _assert_plain(again, PLAIN)
    assert decrypt.calls == 2  # once per record, not once per message
    assert not again[proto.ENC_GLOBAL].flags.writeable  # shared with later messages
    # The party keeps plaintext floats, far smaller than the ciphertexts it was sent.
    kept = sum(r.count_bytes() for r in state.array_records.values())
    assert kept < sum(r.count_bytes() for r in records.values()) / 5


def test_a_new_global_model_replaces_the_cached_one(
    ctx: CkksContext, records: dict[str, ArrayRecord]
) -> None:
    state = _party_state()
    decrypt = _Decrypter(ctx)
    digests = digests_of(records)
    _take(*_sent(records, digests, held={}), state, decrypt)
    newer = {**records, proto.ENC_GLOBAL: encrypt_to_record(ctx, np.ones(5000))}
    new_digests = digests_of(newer)

    content, cfg = _sent(newer, new_digests, held=digests)
    got = _take(content, cfg, state, decrypt)

    assert list(content.array_records) == [proto.ENC_GLOBAL]  # the stats sum stays cached
    _assert_plain(got, {proto.ENC_STATS: PLAIN[proto.ENC_STATS], proto.ENC_GLOBAL: np.ones(5000)})


def test_a_party_without_the_named_record_asks_for_it_again(
    ctx: CkksContext, records: dict[str, ArrayRecord]
) -> None:
    digests = digests_of(records)
    content, cfg = _sent(records, digests, held=digests)  # server believes the party holds them

    with pytest.raises(MissingRecordError) as err:
        _take(content, cfg, _party_state(), _Decrypter(ctx))
    assert str(err.value).startswith(RESEND_MARK)
    assert proto.ENC_STATS in str(err.value) and proto.ENC_GLOBAL in str(err.value)


def test_a_record_that_does_not_match_its_digest_is_rejected_and_the_cache_kept(
    ctx: CkksContext, records: dict[str, ArrayRecord]
) -> None:
    digests = digests_of(records)
    state = _party_state()
    decrypt = _Decrypter(ctx)
    _take(*_sent(records, digests, held={}), state, decrypt)
    newer = {
        proto.ENC_STATS: encrypt_to_record(ctx, np.zeros(300)),
        proto.ENC_GLOBAL: encrypt_to_record(ctx, np.ones(5000)),
    }
    content, cfg = _sent(newer, digests_of(newer), held={})
    content[proto.ENC_GLOBAL] = encrypt_to_record(ctx, np.zeros(5000))  # swapped in transit

    with pytest.raises(RecordDigestError, match=r"enc-global.*does not match its digest"):
        _take(content, cfg, state, decrypt)
    # Nothing of the rejected message was cached, not even its good statistics record.
    content, cfg = _sent(records, digests, held=digests)
    _assert_plain(_take(content, cfg, state, decrypt), PLAIN)


def test_a_message_that_names_no_records_needs_none(ctx: CkksContext) -> None:
    content = RecordDict({proto.CONFIG: ConfigRecord({"round": 0})})
    decrypt = _Decrypter(ctx)

    assert _take(content, _config(content), _party_state(), decrypt) == {}
    assert decrypt.calls == 0


def _sent(
    records: dict[str, ArrayRecord], digests: dict[str, str], *, held: dict[str, str]
) -> tuple[RecordDict, ConfigRecord]:
    content = attach(ConfigRecord({"round": 1}), records, digests, held=held)
    return content, _config(content)
