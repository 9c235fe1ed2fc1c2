"""Send each sealed record to a party once, and decrypt it there once: digests and a party cache.

The encrypted statistics sum is the same for the whole run, and the global model a party
receives to evaluate is the one it trains on in the next round. Sending both with every
message tripled the ciphertext traffic of a round. Instead every message's config names the
records it needs by SHA-256 digest (``digest:<key>``); the server attaches a record only to
parties not known to hold it. A party decrypts what arrives and keeps the last *decryption* of
each key, with its digest, in its Flower ``Context.state``: that lives beside the party
(SuperNode memory, or the simulation runtime) for the duration of the run and is never sent to
the SuperLink, and it holds only what the party decrypts for itself anyway. Keeping the
plaintext rather than the ciphertext makes the state a tenth of the size (Flower hands it to
the ClientApp with every message) and spares a decryption per message.

A party that lost its state (its SuperNode restarted) answers with :data:`RESEND_MARK`; the
server then sends that party the full message once more.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import numpy as np
import numpy.typing as npt
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedrisk.federation.protocol import CONFIG
from secure_agg.aggregation import FloatVector
from secure_agg.errors import SecureAggError

DIGEST_PREFIX: Final = "digest:"
RESEND_MARK: Final = "PARTY-NEEDS-RECORDS:"
"""Starts the error text of a party that was not sent a record it does not hold."""
_STATE_DIGESTS: Final = "record-cache.digests"
_STATE_PREFIX: Final = "record-cache."


class MissingRecordError(SecureAggError, LookupError):
    """A message names a record by digest, and it is neither attached nor cached here."""


class RecordDigestError(SecureAggError, ValueError):
    """An attached record does not match the digest its message names: corrupted in transit."""


def record_digest(record: ArrayRecord) -> str:
    """SHA-256 over a record's keys, array metadata and bytes, in key order."""
    h = hashlib.sha256()
    for key in sorted(record):
        array = record[key]
        h.update(key.encode())
        h.update(f"|{array.dtype}|{array.stype}|{list(array.shape)}|".encode())
        h.update(array.data)
    return h.hexdigest()


def digest_key(key: str) -> str:
    """The config key that names record ``key`` by digest."""
    return f"{DIGEST_PREFIX}{key}"


def digests_of(records: Mapping[str, ArrayRecord]) -> dict[str, str]:
    """Digest of every record."""
    return {key: record_digest(record) for key, record in records.items()}


def attach(
    config: ConfigRecord,
    records: Mapping[str, ArrayRecord],
    digests: Mapping[str, str],
    *,
    held: Mapping[str, str],
) -> RecordDict:
    """A message's content: ``config`` naming every record, plus the records not in ``held``."""
    cfg = ConfigRecord(dict(config))
    content = RecordDict({})
    for key, record in records.items():
        cfg[digest_key(key)] = digests[key]
        if held.get(key) != digests[key]:
            content[key] = record
    content[CONFIG] = cfg
    return content


_VALUES: Final = "values"


def take_decrypted(
    content: RecordDict,
    config: ConfigRecord,
    state: RecordDict,
    *,
    keys: Iterable[str],
    decrypt: Callable[[ArrayRecord], npt.ArrayLike],
) -> dict[str, FloatVector]:
    """The decrypted records ``keys`` a message names: attached ones (checked, decrypted, then
    cached) or cached ones.

    A key the message does not name is left out of the result. Returned arrays are read-only:
    the cached ones are shared by later messages.

    Raises
    ------
    RecordDigestError
        If an attached record does not hash to the digest the message names.
    MissingRecordError
        If a named record is neither attached nor cached with that digest; its text starts
        with :data:`RESEND_MARK`.
    """
    cached = state.config_records.get(_STATE_DIGESTS)
    cached_digests = dict(cached) if cached is not None else {}
    out: dict[str, FloatVector] = {}
    fresh: dict[str, str] = {}
    missing: list[str] = []
    for key in keys:
        wanted = config.get(digest_key(key))
        if not isinstance(wanted, str):
            continue
        attached = content.array_records.get(key)
        slot = _STATE_PREFIX + key
        if attached is not None:
            got = record_digest(attached)
            if got != wanted:
                raise RecordDigestError(
                    f"record {key!r} does not match its digest: message names {wanted[:12]}..., "
                    f"content hashes to {got[:12]}... (corrupted in transit?)"
                )
            vector = np.array(decrypt(attached), dtype=np.float64)
            fresh[key] = wanted
        elif cached_digests.get(key) == wanted and slot in state.array_records:
            vector = state.array_records[slot][_VALUES].numpy()
        else:
            missing.append(key)
            continue
        vector.setflags(write=False)
        out[key] = vector
    if missing:
        raise MissingRecordError(
            f"{RESEND_MARK} records {missing} were not attached and are not cached at this "
            "party (new node or restarted SuperNode); send them again"
        )
    # Only once every record checked out, so a failure leaves the cache as it was.
    for key, digest in fresh.items():
        state[_STATE_PREFIX + key] = ArrayRecord({_VALUES: Array(out[key])})
        cached_digests[key] = digest
    state[_STATE_DIGESTS] = ConfigRecord(cached_digests)
    return out
