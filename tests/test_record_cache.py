"""Sealed-record cache: each ciphertext record reaches a party once per run, checked by digest."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict

from secure_agg import protocol as proto
from secure_agg.codec import encrypt_to_record
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
    take_records,
)

KEYS = (proto.ENC_STATS, proto.ENC_GLOBAL)


@pytest.fixture(scope="module")
def ctx() -> CkksContext:
    return generate_context(HEParams())


@pytest.fixture(scope="module")
def records(ctx: CkksContext) -> dict[str, ArrayRecord]:
    rng = np.random.default_rng(0)
    return {
        proto.ENC_STATS: encrypt_to_record(ctx, rng.normal(size=300)),
        proto.ENC_GLOBAL: encrypt_to_record(ctx, rng.normal(size=5000)),
    }


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


def test_a_record_is_sent_once_and_then_read_from_the_party_cache(
    records: dict[str, ArrayRecord],
) -> None:
    digests = digests_of(records)
    state = _party_state()
    first = attach(ConfigRecord({"round": 1}), records, digests, held={})

    got = take_records(first, _config(first), state, keys=KEYS)
    second = attach(ConfigRecord({"round": 2}), records, digests, held=digests)

    assert set(first.array_records) == set(KEYS)
    assert {k: record_digest(r) for k, r in got.items()} == digests
    assert not second.array_records  # nothing sealed travels the second time
    assert _config(second)[digest_key(proto.ENC_GLOBAL)] == digests[proto.ENC_GLOBAL]
    again = take_records(second, _config(second), state, keys=KEYS)
    assert {k: record_digest(r) for k, r in again.items()} == digests


def test_a_new_global_model_replaces_the_cached_one(
    ctx: CkksContext, records: dict[str, ArrayRecord]
) -> None:
    state = _party_state()
    digests = digests_of(records)
    take_records(*_sent(records, digests, held={}), state, keys=KEYS)
    newer = {**records, proto.ENC_GLOBAL: encrypt_to_record(ctx, np.ones(5000))}
    new_digests = digests_of(newer)

    content, cfg = _sent(newer, new_digests, held=digests)
    got = take_records(content, cfg, state, keys=KEYS)

    assert list(content.array_records) == [proto.ENC_GLOBAL]  # the stats sum stays cached
    assert record_digest(got[proto.ENC_GLOBAL]) == new_digests[proto.ENC_GLOBAL]
    assert record_digest(got[proto.ENC_STATS]) == digests[proto.ENC_STATS]


def test_a_party_without_the_named_record_asks_for_it_again(
    records: dict[str, ArrayRecord],
) -> None:
    digests = digests_of(records)
    content, cfg = _sent(records, digests, held=digests)  # server believes the party holds them

    with pytest.raises(MissingRecordError) as err:
        take_records(content, cfg, _party_state(), keys=KEYS)
    assert str(err.value).startswith(RESEND_MARK)
    assert proto.ENC_STATS in str(err.value) and proto.ENC_GLOBAL in str(err.value)


def test_a_record_that_does_not_match_its_digest_is_rejected(
    ctx: CkksContext, records: dict[str, ArrayRecord]
) -> None:
    digests = digests_of(records)
    content, cfg = _sent(records, digests, held={})
    content[proto.ENC_GLOBAL] = encrypt_to_record(ctx, np.zeros(5000))  # swapped in transit
    state = _party_state()

    with pytest.raises(RecordDigestError, match=r"enc-global.*does not match its digest"):
        take_records(content, cfg, state, keys=KEYS)
    assert proto.ENC_GLOBAL not in {k.removeprefix("record-cache.") for k in state.array_records}


def test_a_message_that_names_no_records_needs_none(records: dict[str, ArrayRecord]) -> None:
    content = RecordDict({proto.CONFIG: ConfigRecord({"round": 0})})

    assert take_records(content, _config(content), _party_state(), keys=KEYS) == {}


def _sent(
    records: dict[str, ArrayRecord], digests: dict[str, str], *, held: dict[str, str]
) -> tuple[RecordDict, ConfigRecord]:
    content = attach(ConfigRecord({"round": 1}), records, digests, held=held)
    return content, _config(content)
