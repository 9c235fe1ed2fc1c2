"""Vertical packets as Flower records: ciphertext chunks as byte ``Array`` s, masked floats as
numpy ``Array`` s, metadata as a ``ConfigRecord``."""

from __future__ import annotations

import json
from typing import Final

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedrisk.federation.vertical import Meta, Packet
from secure_agg.errors import CodecError

_META: Final = "vertical-meta"
_ENC: Final = "vertical-enc"
_MASKED: Final = "vertical-masked"
_SEP: Final = "#"


def packet_to_record(packet: Packet) -> RecordDict:
    """The packet as the content of a Flower message."""
    enc = ArrayRecord()
    for key, chunks in packet.enc.items():
        for i, chunk in enumerate(chunks):
            enc[f"{key}{_SEP}{i:05d}"] = Array(
                dtype="ckks", shape=(len(chunk),), stype="ckks-bytes", data=bytes(chunk)
            )
    masked = ArrayRecord()
    for key, values in packet.masked.items():
        masked[key] = Array(np.asarray(values, dtype=np.float64))
    meta = ConfigRecord({"step": packet.step, "meta": json.dumps(packet.meta, sort_keys=True)})
    return RecordDict({_META: meta, _ENC: enc, _MASKED: masked})


def packet_from_record(content: RecordDict) -> Packet:
    """Inverse of :func:`packet_to_record`.

    Raises
    ------
    CodecError
        The content is not a vertical packet.
    """
    try:
        meta_record = content.config_records[_META]
        enc_record = content.array_records[_ENC]
        masked_record = content.array_records[_MASKED]
        meta: Meta = json.loads(str(meta_record["meta"]))
        step = str(meta_record["step"])
    except (KeyError, ValueError) as e:
        raise CodecError(f"message must be a vertical packet; got {e}") from e
    enc: dict[str, list[bytes]] = {}
    for name in sorted(enc_record):
        key, _, _ = name.rpartition(_SEP)
        enc.setdefault(key, []).append(bytes(enc_record[name].data))
    masked = {k: masked_record[k].numpy().astype(np.float64) for k in masked_record}
    return Packet(step=step, meta=meta, enc=enc, masked=masked)
