"""A party's side of private entity alignment: the four ``align`` steps, state between them.

The coordinator drives the phase (``server.coordinator.alignment``); this module answers each
step with :mod:`secure_agg.psi`. Keys and the host's secret row order live in the run's Flower
``Context.state`` (at the party, never sent) from the ``offer`` step until the result is in;
then they are dropped and the result is kept there for the vertical trainer:
:func:`load_alignment`.

Identifiers are read as text from the party's training table (column named by the phase),
normalised (:mod:`fedrisk.federation.identifiers`) and salted with the federation's PSI salt,
derived from the CKKS secret context every party holds and the coordinator does not.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from clients.party import PartyConfig, PartyRefusedError
from fedrisk.errors import IdentityError
from fedrisk.federation import protocol as proto
from fedrisk.federation import published_keys as pk
from fedrisk.federation.alignment import GuestAlignment, HostAlignment
from fedrisk.federation.identifiers import (
    IDENTIFIER_KINDS,
    IdentifierError,
    IdentifierKey,
    IdentifierKind,
    normalise_identifiers,
    psi_digests,
)
from fedrisk.federation.pin import check_vertical_roster
from fedrisk.federation.run_config import FederationConfig
from fedrisk.release.identity import load_signing_key
from secure_agg import psi

log = logging.getLogger(__name__)

STATE_SECRETS = "psi-secrets"
STATE_RESULT = "psi-alignment"
_RESULT_ROLE = "role"
_RESULT_JSON = "json"
PLAINTEXT_SALT_LABEL = "fedrisk/plaintext-run"


def read_identifiers(path: Path, column: str) -> list[object]:
    """The ``column`` of a party's table as text (CSV or Parquet), missing cells as None.

    Read as text, not numbers, so leading zeros and ``+`` survive.

    Raises
    ------
    PartyRefusedError
        If the file cannot be read or has no such column.
    """
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
            if column not in frame.columns:
                raise KeyError(column)
            series = frame[column]
            return [None if pd.isna(v) else str(v) for v in series.tolist()]
        header = pd.read_csv(path, nrows=0).columns
        if column not in header:
            raise KeyError(column)
        series = pd.read_csv(
            path, usecols=[column], dtype=str, keep_default_na=False, na_values=[""]
        )[column]
    except KeyError as e:
        raise PartyRefusedError(f"id column must be a column of {path.name}; got {column!r}") from e
    except (OSError, ValueError) as e:
        raise PartyRefusedError(f"identifiers cannot be read from {path}: {e}") from e
    return [None if pd.isna(v) else str(v) for v in series.tolist()]


def identifier_key(config: PartyConfig, federation: FederationConfig) -> IdentifierKey:
    """The federation's identifier key at this party.

    In order: the key file the party was handed (``identifier_key`` in its ``party.toml``,
    sealed to it by the lead: :mod:`fedrisk.federation.identifier_sealing`); else derived from
    the CKKS secret context every party of the federation holds alike.

    Raises
    ------
    PartyRefusedError
        If the party has neither; only a plaintext comparison run falls back to a key derived
        from its run id (public: such runs protect nothing anyway).
    """
    try:
        if config.identifier_key is not None:
            return IdentifierKey.load(config.identifier_key)
        if config.secret_context is not None and config.secret_context.exists():
            material = config.secret_context.read_bytes()
            return IdentifierKey.derive(material, federation="fedrisk")
    except (IdentifierError, OSError) as e:
        raise PartyRefusedError(f"party {config.name}: identifier key unavailable: {e}") from e
    if federation.plaintext:
        label = f"{PLAINTEXT_SALT_LABEL}/{federation.run_id}".encode()
        return IdentifierKey.derive(label.ljust(32, b"\0"), federation="fedrisk")
    raise PartyRefusedError(
        f"party {config.name} must hold the federation's identifier key or secret context "
        "to align identifiers"
    )


def _digests(message: Message, config: PartyConfig, federation: FederationConfig) -> psi.Points:
    cfg = message.content.config_records[proto.CONFIG]
    column = str(cfg[proto.CFG_ALIGN_ID_COLUMN])
    kind = str(cfg[proto.CFG_ALIGN_ID_KIND])
    if kind not in IDENTIFIER_KINDS:
        raise PartyRefusedError(
            f"align id kind must be one of {list(IDENTIFIER_KINDS)}; got {kind!r}"
        )
    values = read_identifiers(config.train, column)
    try:
        canonical = normalise_identifiers(
            values,
            cast(IdentifierKind, kind),
            default_country_code=str(cfg[proto.CFG_ALIGN_COUNTRY_CODE]),
            source=f"party {config.name}, {config.train.name} column {column!r}",
        )
    except IdentifierError as e:
        raise PartyRefusedError(str(e)) from e
    salt = identifier_key(config, federation).psi_salt()
    return psi.as_points(psi_digests(canonical, kind=cast(IdentifierKind, kind), salt=salt))


def _points(record: ArrayRecord, key: str) -> psi.Points:
    if key not in record:
        raise PartyRefusedError(f"align message must carry the blinded list {key!r}")
    return psi.check_points(record[key].numpy(), name=key)


def _channel_context(run_id: str, guest: str, host: str) -> bytes:
    return json.dumps(["fedrisk-psi", run_id, guest, host]).encode("utf-8")


def _reply(message: Message, name: str, **records: ArrayRecord) -> Message:
    content = RecordDict({proto.CONFIG: ConfigRecord({proto.CFG_PARTY: name})})
    for key, record in records.items():
        content[key] = record
    return Message(content=content, reply_to=message)


def answer(
    message: Message,
    state: RecordDict,
    *,
    config: PartyConfig,
    federation: FederationConfig,
    workers: int = 1,
) -> Message:
    """Answer one ``align`` step.

    Raises
    ------
    PartyRefusedError
        If the step is unknown, comes out of order, or its identifiers are invalid (the
        latter carries the protocol's refusal mark).
    """
    cfg = message.content.config_records[proto.CONFIG]
    step = str(cfg[proto.CFG_ALIGN_STEP])
    guest = str(cfg[proto.CFG_ALIGN_GUEST])
    is_guest = config.name == guest
    # The coordinator names the guest and the hosts inside the messages: each must be the
    # pinned one (the executor checked the run config against the party's pin).
    peers = (
        [str(e[proto.ALIGN_HOST_NAME]) for e in json.loads(str(cfg[proto.CFG_ALIGN_HOSTS]))]
        if step == proto.ALIGN_MATCH and is_guest
        else []
    )
    check_vertical_roster(federation, party=config.name, guest=guest, peers=[guest, *peers])
    if step == proto.ALIGN_OFFER:
        return _offer(message, state, config, federation, is_guest=is_guest, workers=workers)
    saved = state.config_records.get(STATE_SECRETS)
    if saved is None:
        raise PartyRefusedError(f"align step {step!r} must follow the offer step at this party")
    if step == proto.ALIGN_REBLIND and not is_guest:
        host = _host_secrets(saved)
        double = psi.host_reblind(
            _points(message.content.array_records[proto.PSI_POINTS], proto.PSI_GUEST),
            host,
            workers=workers,
        )
        return _reply(
            message,
            config.name,
            **{proto.PSI_POINTS: ArrayRecord({proto.PSI_DOUBLE: Array(double)})},
        )
    if step == proto.ALIGN_MATCH and is_guest:
        return _match(message, state, saved, config, federation, workers=workers)
    if step == proto.ALIGN_FINISH and not is_guest:
        host = _host_secrets(saved)
        sealed = message.content.array_records[proto.PSI_SEALED][proto.PSI_RESULT].numpy()
        guest_channel = bytes(cast(bytes, cfg[proto.CFG_ALIGN_CHANNEL]))
        _check_channel(
            config,
            federation,
            guest_channel,
            cfg.get(pk.CFG_ALIGN_CHANNEL_SIGNATURE),
            step=proto.ALIGN_MATCH,
            party=guest,
            purpose=pk.psi_channel_purpose(config.name),
        )
        view = psi.open_match(
            sealed.tobytes(),
            secrets=host,
            guest_channel_public=guest_channel,
            context=_channel_context(federation.run_id, guest, config.name),
        )
        result = HostAlignment(host=config.name, guest=guest, slots=view.slots, rows=view.rows)
        _store(state, "host", result.to_json())
        return _reply(message, config.name)
    role = "guest" if is_guest else "host"
    raise PartyRefusedError(f"align step must be one a {role} answers; got {step!r}")


def _offer(
    message: Message,
    state: RecordDict,
    config: PartyConfig,
    federation: FederationConfig,
    *,
    is_guest: bool,
    workers: int,
) -> Message:
    digests = _digests(message, config, federation)
    cfg = message.content.config_records[proto.CONFIG]
    if is_guest:
        slots = int(cast(int, cfg[proto.CFG_ALIGN_SLOTS]))
        keys = [psi.GuestSecrets.fresh() for _ in range(slots)]
        offers = {
            str(slot): Array(psi.guest_offer(digests, key, workers=workers))
            for slot, key in enumerate(keys)
        }
        saved = ConfigRecord(
            {
                "rows": len(digests),
                "blinding": [k.blinding_key for k in keys],
                "channel": [k.channel_key for k in keys],
            }
        )
        reply = _reply(message, config.name, **{proto.PSI_POINTS: ArrayRecord(offers)})
    else:
        # The host's secret row order comes from the OS CSPRNG: the guest must not be able to
        # link a slot to a host row.
        rng = np.random.default_rng(secrets.randbits(128))
        host = psi.HostSecrets.fresh(len(digests), rng=rng)
        points = psi.host_offer(digests, host, workers=workers)
        saved = ConfigRecord(
            {
                "blinding": host.blinding_key,
                "channel": host.channel_key,
                "order": host.order.astype("<i8").tobytes(),
            }
        )
        reply = _reply(
            message, config.name, **{proto.PSI_POINTS: ArrayRecord({proto.PSI_OWN: Array(points)})}
        )
        channel = psi.public_key_of(host.channel_key)
        reply_cfg = reply.content.config_records[proto.CONFIG]
        reply_cfg[proto.CFG_ALIGN_CHANNEL] = channel
        reply_cfg[pk.CFG_ALIGN_CHANNEL_SIGNATURE] = _sign_channel(
            config, federation, channel, step=proto.ALIGN_OFFER, purpose=pk.PSI_CHANNEL
        )
    state[STATE_SECRETS] = saved
    reply.content.config_records[proto.CONFIG][proto.CFG_ALIGN_ROWS] = len(digests)
    return reply


def _host_secrets(saved: ConfigRecord) -> psi.HostSecrets:
    if "order" not in saved:
        raise PartyRefusedError("align state at this party is a guest's, not a host's")
    order = np.frombuffer(cast(bytes, saved["order"]), dtype="<i8").astype(np.int64)
    return psi.HostSecrets(
        blinding_key=cast(bytes, saved["blinding"]),
        channel_key=cast(bytes, saved["channel"]),
        order=order,
    )


def _match(
    message: Message,
    state: RecordDict,
    saved: ConfigRecord,
    config: PartyConfig,
    federation: FederationConfig,
    *,
    workers: int,
) -> Message:
    cfg = message.content.config_records[proto.CONFIG]
    hosts: list[dict[str, object]] = json.loads(str(cfg[proto.CFG_ALIGN_HOSTS]))
    blinding = cast(list[bytes], saved["blinding"])
    channel = cast(list[bytes], saved["channel"])
    n_rows = int(cast(int, saved["rows"]))
    points = message.content.array_records[proto.PSI_POINTS]
    sealed: dict[str, Array] = {}
    shared: dict[str, psi.Rows] = {}
    refs: dict[str, psi.Rows] = {}
    reply_cfg = ConfigRecord({proto.CFG_PARTY: config.name})
    for entry in hosts:
        slot, name = int(cast(int, entry[proto.ALIGN_HOST_SLOT])), str(entry[proto.ALIGN_HOST_NAME])
        if not 0 <= slot < len(blinding):
            raise PartyRefusedError(f"align slot must be below {len(blinding)}; got {slot}")
        keys = psi.GuestSecrets(blinding_key=blinding[slot], channel_key=channel[slot])
        match = psi.guest_match(
            keys,
            n_rows=n_rows,
            guest_double=_points(points, proto.psi_slot_key(proto.PSI_DOUBLE, slot)),
            host_points=_points(points, proto.psi_slot_key(proto.PSI_OWN, slot)),
            workers=workers,
        )
        shared[name] = match.guest_rows
        refs[name] = match.host_slots
        host_channel = bytes.fromhex(str(entry[proto.ALIGN_HOST_CHANNEL]))
        signature = entry.get(pk.ALIGN_HOST_CHANNEL_SIGNATURE)
        _check_channel(
            config,
            federation,
            host_channel,
            bytes.fromhex(str(signature)) if signature else None,
            step=proto.ALIGN_OFFER,
            party=name,
            purpose=pk.PSI_CHANNEL,
        )
        blob = psi.seal_match(
            match,
            secrets=keys,
            host_channel_public=host_channel,
            context=_channel_context(federation.run_id, config.name, name),
        )
        sealed[str(slot)] = Array(np.frombuffer(blob, dtype=np.uint8).copy())
        own_channel = psi.public_key_of(keys.channel_key)
        reply_cfg[proto.align_channel_key(slot)] = own_channel
        reply_cfg[pk.align_channel_signature_key(slot)] = _sign_channel(
            config,
            federation,
            own_channel,
            step=proto.ALIGN_MATCH,
            purpose=pk.psi_channel_purpose(name),
        )
    result = GuestAlignment(guest=config.name, n_rows=n_rows, shared=shared, refs=refs)
    _store(state, "guest", result.to_json())
    content = RecordDict({proto.CONFIG: reply_cfg, proto.PSI_SEALED: ArrayRecord(sealed)})
    return Message(content=content, reply_to=message)


def _sign_channel(
    config: PartyConfig, federation: FederationConfig, key: bytes, *, step: str, purpose: str
) -> bytes:
    """Our signature of a channel key we publish, bound to this run, step and purpose."""
    if config.signing_key is None:
        raise PartyRefusedError(
            f"party {config.name} must hold its signing key to sign its alignment channel key; "
            "got none"
        )
    claim = pk.KeyClaim(federation.run_id, step, config.name, purpose)
    return claim.sign(load_signing_key(config.signing_key), key)


def _check_channel(
    config: PartyConfig,
    federation: FederationConfig,
    key: bytes,
    signature: object,
    *,
    step: str,
    party: str,
    purpose: str,
) -> None:
    """Refuse a relayed channel key that is not ``party``'s own for this run (the coordinator
    would otherwise read the sealed result, or seal one of its own)."""
    claim = pk.KeyClaim(federation.run_id, step, party, purpose)
    try:
        roster = pk.roster_keys_of(config.name, config.roster)
        claim.check(
            roster, bytes(cast(bytes, signature)) if signature else None, key, receiver=config.name
        )
    except IdentityError as e:
        raise PartyRefusedError(str(e)) from e


def _store(state: RecordDict, role: str, text: str) -> None:
    """Keep the result; drop the keys and the secret order, no longer needed."""
    if STATE_SECRETS in state.config_records:
        del state[STATE_SECRETS]
    state[STATE_RESULT] = ConfigRecord({_RESULT_ROLE: role, _RESULT_JSON: text})


def load_alignment(state: RecordDict) -> GuestAlignment | HostAlignment | None:
    """The party's alignment result from its run state, or None before the phase finished."""
    record = state.config_records.get(STATE_RESULT)
    if record is None:
        return None
    text = str(record[_RESULT_JSON])
    if record[_RESULT_ROLE] == "guest":
        return GuestAlignment.from_json(text)
    return HostAlignment.from_json(text)
