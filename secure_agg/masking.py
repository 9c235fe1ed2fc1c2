"""Pairwise and self masks under CKKS with Shamir-shared seeds for dropout recovery (SecAgg).

With one shared CKKS key, the coordinator plus any one party could decrypt every party's
ciphertext. Each party therefore adds, before encrypting, masks that only the sum (or the
survivors, together) can remove:

- **Pair seeds.** Parties ``u`` and ``v`` agree an X25519 secret from the ceremony's receiving
  keys; HKDF-SHA256 turns it into a per-run pair seed (salt: the run id; info: both names).
  Each party derives its X25519 secrets, pair seeds and seal keys once per run.
- **Exchange seeds.** From the pair seed, HKDF derives a 16-byte seed per *exchange* (a label
  such as ``"round:3"``) and from that a ChaCha20 key per *purpose* (``"update"``, ``"hist"``,
  ...) and ciphertext chunk, so no mask stream is ever reused across rounds, purposes or chunks.
- **Self masks** (Bonawitz et al.'s double masking, run-config ``mask-self``). Each party draws a
  fresh private 16-byte seed ``b_u`` for every message it masks (``os.urandom``, never reused,
  never stored) and adds its stream too (purpose ``"self|<purpose>"``). Self masks do not
  cancel: the coordinator removes the survivors' from the sum once the survivors reveal their
  Shamir shares of each ``b_u``.
- **Exact modular masks.** A mask is one residue per coefficient prime and ring coefficient of
  the encoded CKKS plaintext (NTT form), drawn uniformly by rejection sampling from the ChaCha20
  stream. Party ``u`` adds ``stream(b_u) + sum_v sign(u, v) * stream(u, v)`` (``+`` when ``u``
  sorts before ``v``) modulo each prime. The masked plaintext is uniform over the plaintext
  ring whatever the values: statistical distance 0 from uniform (up to ChaCha20's
  pseudorandomness), so a single decrypted ciphertext is noise. In the sum the pairwise masks
  cancel exactly modulo each prime and the self masks are subtracted exactly, so the sum
  carries the CKKS error of an unmasked run: no quantisation, no precision cost.
- **Shares.** With its masked answer, each party sends Shamir shares (pycryptodome,
  GF(2^128), threshold ``t``, default ``ceil(2n/3)``) of every exchange seed it holds and
  of ``b_u`` (with self masks), one share per participant (itself included), each
  recipient's shares sealed to it (X25519 + HKDF + ChaCha20-Poly1305, AAD binding run,
  exchange, sender and recipient). The coordinator keeps only sealed blobs.
- **Unmasking.** After collecting an exchange in which parties dropped, or any exchange when
  self masks are on, the coordinator declares the dropped set once (empty only with self
  masks) and asks each survivor (``query.unmask``) to open the shares sealed to it
  and reveal, for every party, *either* its share of that party's self seed (the party is
  declared a survivor) *or* its shares of that party's seeds with the survivors (declared
  dropped), never both for one party and exchange: each survivor keeps a reveal ledger per
  exchange and refuses a request that contradicts an earlier one, names itself dropped, or
  leaves fewer than ``t`` survivors. With ``t`` shares the coordinator rebuilds those seeds
  and adds the opposite of the survivors' self masks and of the uncancelled pairwise masks to
  the survivors' sum (``CkksContext.add_mask``). Fewer than ``t`` survivors: refusal.

Notes
-----
Leakage: the coordinator with ``k`` colluding parties learns the sum of the honest survivors'
vectors and nothing else about any single one, provided ``k < t`` (with ``t`` colluders it
could rebuild every seed from their own shares) and ``2t > n + k - 1``. A party's ciphertext
hides behind both its self mask and its pairwise masks: to read it, the coordinator needs
``b_u`` (``t`` shares, revealed only by survivors told ``u`` is alive) and every pairwise seed
of ``u`` (``t`` shares each, revealed only by survivors told ``u`` dropped). Honest survivors
reveal one kind per party, so both kinds need ``2t - 2k`` honest survivors beyond ``u``,
more than the ``n - k - 1`` there are: with the default ``t = ceil(2n/3)`` that holds for
every ``k <= n - 2`` when ``n <= 5``, and for ``k < 2t - n + 1`` in general. So a coordinator
that *falsely* declares a live party dropped, after keeping its ciphertext, gets only its
pairwise masks and still reads noise. A dropped party's late ciphertext is refused once it is
declared dropped. Without self masks (``mask-self = false``, the default) the same false
declaration reveals that party's vector; the ledger then bounds it to one party set per
exchange. Self masks cost one short ``query.unmask`` exchange per masked exchange even when
nobody drops (measured: a deployed 3-party round 1.7-2.3x, a simulated one 1.3-2.9x).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
from Crypto.Protocol.SecretSharing import Shamir
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secure_agg.errors import SecureAggError
from secure_agg.keys import ChunkMaskSource, CkksContext, MaskResidues

SEED_BYTES: Final = 16
"""Exchange seeds are 128-bit: pycryptodome's Shamir shares secrets of exactly 16 bytes."""

_DOMAIN: Final = b"fedrisk/masks/v1"


class MaskingError(SecureAggError, ValueError):
    """Masks cannot be built, sealed, revealed or removed as asked."""


class RecoveryRefusedError(MaskingError):
    """A survivor will not reveal shares, or too few survivors remain to rebuild the masks."""


MIN_MASKED_PARTIES: Final = 3
"""Masks only help with 3 or more parties: with 2, each reads the other's vector off the sum."""


def run_binding(run_id: str, flower_run: int) -> str:
    """What mask seeds are bound to: the run config's id and Flower's run number, so seeds never
    repeat across runs even when the run id is left empty."""
    return f"{run_id}|{flower_run}"


def default_threshold(n_parties: int) -> int:
    """SecAgg+'s default: ``ceil(2n/3)`` survivors are needed to rebuild dropped masks."""
    return max(2, math.ceil(2 * n_parties / 3))


def threshold_for(configured: int, n_parties: int) -> int:
    """The run's threshold: ``configured`` (0 means ``default_threshold``), within 2..n."""
    threshold = configured or default_threshold(n_parties)
    if not 2 <= threshold <= n_parties:
        raise MaskingError(
            f"mask-threshold must be between 2 and the {n_parties} participants; got {threshold}"
        )
    return threshold


@dataclass(frozen=True)
class MaskPlan:
    """What the coordinator tells parties about one masked exchange (``CFG_MASK``, JSON).

    ``members`` maps each purpose to its participants; ``None`` means every party of the
    federation (the first exchange, before the coordinator knows who is who). ``dropped`` is
    set only in an unmask query.
    """

    exchange: str
    members: Mapping[str, tuple[str, ...] | None]
    dropped: tuple[str, ...] = ()

    def to_json(self) -> str:
        """The plan as compact JSON."""
        return json.dumps(
            {
                "exchange": self.exchange,
                "members": {k: None if v is None else list(v) for k, v in self.members.items()},
                "dropped": list(self.dropped),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> MaskPlan:
        """Parse ``to_json`` output; ``MaskingError`` names what is wrong."""
        try:
            raw = json.loads(text)
            exchange = raw["exchange"]
            members = {
                str(k): None if v is None else tuple(str(n) for n in v)
                for k, v in dict(raw["members"]).items()
            }
            dropped = tuple(str(n) for n in raw.get("dropped", []))
        except (ValueError, KeyError, TypeError) as e:
            raise MaskingError(f"mask plan must be the coordinator's JSON plan; got {e}") from e
        if not isinstance(exchange, str) or not exchange:
            raise MaskingError(f"mask plan exchange must be a non-empty label; got {exchange!r}")
        return cls(exchange=exchange, members=members, dropped=dropped)

    def members_of(self, purpose: str, everyone: Iterable[str]) -> tuple[str, ...]:
        """The sorted participants of ``purpose`` (``everyone`` when the plan says all)."""
        if purpose not in self.members:
            raise MaskingError(
                f"purpose must be one the plan masks ({sorted(self.members)}); got {purpose!r}"
            )
        named = self.members[purpose]
        return tuple(sorted(everyone if named is None else named))

    def holders(self, everyone: Iterable[str]) -> tuple[str, ...]:
        """Every participant of the exchange: who receives shares (sorted)."""
        people = list(everyone)
        union: set[str] = set()
        for purpose in self.members:
            union.update(self.members_of(purpose, people))
        return tuple(sorted(union))


def _hkdf(key: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)


def _pair_name(a: str, b: str) -> bytes:
    lo, hi = sorted((a, b))
    return f"{len(lo)}:{lo}|{len(hi)}:{hi}".encode()


def _self_name(party: str) -> str:
    """The share label of ``party``'s self seed (pair labels are ``"n:a|m:b"``)."""
    return f"self|{len(party)}:{party}"


def new_self_seed() -> bytes:
    """A fresh private self seed ``b_u`` for one masked message (never reused, never stored)."""
    return os.urandom(SEED_BYTES)


def _self_purpose(purpose: str) -> str:
    return f"self|{purpose}"


def _sign(own: str, peer: str) -> int:
    if own == peer:
        raise MaskingError(f"a party must not pair with itself; got {own!r} twice")
    return 1 if own < peer else -1


# --------------------------------------------------------------------------------------------------
# Seeds and mask streams
# --------------------------------------------------------------------------------------------------


def exchange_seed(pair_seed: bytes, exchange: str) -> bytes:
    """The 16-byte seed of one pair for one exchange (``"train:3"``): what Shamir shares."""
    return _hkdf(pair_seed, salt=_DOMAIN, info=b"exchange|" + exchange.encode(), length=SEED_BYTES)


def mask_stream(
    seed: bytes, *, purpose: str, chunk: int, moduli: Sequence[int], degree: int
) -> MaskResidues:
    """Uniform residues ``(len(moduli), degree)`` from one exchange seed, purpose and chunk.

    Notes
    -----
    Rejection sampling of ``bit_length(q)``-bit words from a ChaCha20 keystream: every residue
    is exactly uniform below its prime (no modulo bias). The primes sit just below a power of
    two, so a handful of spare words per row almost always suffices; more are drawn if not.
    """
    key = _hkdf(seed, salt=_DOMAIN, info=f"stream|{purpose}|{chunk}".encode(), length=32)
    keystream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    out = np.empty((len(moduli), degree), dtype=np.uint64)
    for row, q in enumerate(moduli):
        bound = np.uint64(q)
        word_mask = np.uint64((1 << int(q).bit_length()) - 1)
        filled = 0
        while filled < degree:
            want = degree - filled + _SPARE_WORDS
            words = np.frombuffer(keystream.update(bytes(8 * want)), dtype="<u8") & word_mask
            kept = words[words < bound][: degree - filled]
            out[row, filled : filled + kept.size] = kept
            filled += kept.size
    return out


_SPARE_WORDS: Final = 64
"""Extra words drawn per row for rejections (a 40-bit prime rejects ~0.006 of 8,192 words)."""


def _accumulate(
    total: MaskResidues, residues: MaskResidues, q: npt.NDArray[np.uint64], *, sign: int
) -> None:
    """``total += sign * residues`` modulo ``q`` in place; both operands below ``q`` (< 2^63)."""
    if sign > 0:
        np.add(total, residues, out=total)
    else:
        np.add(total, q - residues, out=total)
    np.subtract(total, q, out=total, where=total >= q)


def _combine(
    terms: Iterable[tuple[int, MaskResidues]], moduli: Sequence[int], degree: int
) -> MaskResidues:
    """``sum(sign * residues)`` modulo each prime."""
    q = np.array(moduli, dtype=np.uint64)[:, None]
    total = np.zeros((len(moduli), degree), dtype=np.uint64)
    for sign, residues in terms:
        _accumulate(total, residues, q, sign=sign)
    return total


@dataclass(frozen=True, repr=False)
class MaskIdentity:
    """One party's side of masking for one run: its name, receiving key and its peers' keys.

    Notes
    -----
    Holds the party's X25519 private key; the repr shows names only and the object is never
    serialized.
    """

    name: str
    run_id: str
    private_key: X25519PrivateKey
    peers: Mapping[str, X25519PublicKey]
    _derived: dict[tuple[str, ...], bytes] = field(
        default_factory=dict, init=False, compare=False, hash=False
    )
    """Per-run keys derived once (X25519 secrets, pair seeds, seal keys, exchange seeds): each
    is a pure function of the private key and public inputs, so caching reveals nothing new."""

    def __repr__(self) -> str:
        return f"MaskIdentity(name={self.name!r}, peers={sorted(self.peers)})"

    def _shared(self, peer: str) -> bytes:
        cached = self._derived.get(("x25519", peer))
        if cached is not None:
            return cached
        try:
            public = self.peers[peer]
        except KeyError as e:
            raise MaskingError(
                f"peer must be a party of the federation; got {peer!r} "
                f"(known: {sorted(self.peers)})"
            ) from e
        return self._derived.setdefault(("x25519", peer), self.private_key.exchange(public))

    def _run_salt(self) -> bytes:
        return hashlib.sha256(_DOMAIN + b"run|" + self.run_id.encode()).digest()

    def pair_seed(self, peer: str) -> bytes:
        """The per-run seed this party shares with ``peer``: HKDF of their X25519 secret."""
        cached = self._derived.get(("pair", peer))
        if cached is None:
            cached = _hkdf(
                self._shared(peer),
                salt=self._run_salt(),
                info=b"pair|" + _pair_name(self.name, peer),
                length=32,
            )
            self._derived[("pair", peer)] = cached
        return cached

    def exchange_seed(self, peer: str, exchange: str) -> bytes:
        """``exchange_seed(pair_seed(peer), exchange)``, derived once per peer and exchange."""
        cached = self._derived.get(("exchange", peer, exchange))
        if cached is None:
            cached = exchange_seed(self.pair_seed(peer), exchange)
            self._derived[("exchange", peer, exchange)] = cached
        return cached

    def _seal_key(self, peer: str, *, sender: str, recipient: str) -> bytes:
        cached = self._derived.get(("seal", sender, recipient))
        if cached is None:
            cached = _hkdf(
                self._shared(peer),
                salt=self._run_salt(),
                info=f"seal|{len(sender)}:{sender}|{len(recipient)}:{recipient}".encode(),
                length=32,
            )
            self._derived[("seal", sender, recipient)] = cached
        return cached

    def mask(
        self,
        *,
        exchange: str,
        purpose: str,
        participants: Sequence[str],
        chunk: int,
        moduli: Sequence[int],
        degree: int,
        self_seed: bytes | None = None,
    ) -> MaskResidues:
        """This party's mask for one ciphertext chunk: its pairwise part cancels in the sum over
        ``participants``; its self part (from ``self_seed``, if given) is removed by unmasking."""
        if self.name not in participants:
            raise MaskingError(f"participants must include {self.name!r}; got {list(participants)}")
        own: list[tuple[int, MaskResidues]] = []
        if self_seed is not None:
            own.append(
                (
                    1,
                    mask_stream(
                        self_seed,
                        purpose=_self_purpose(purpose),
                        chunk=chunk,
                        moduli=moduli,
                        degree=degree,
                    ),
                )
            )
        terms = (
            (
                _sign(self.name, peer),
                mask_stream(
                    self.exchange_seed(peer, exchange),
                    purpose=purpose,
                    chunk=chunk,
                    moduli=moduli,
                    degree=degree,
                ),
            )
            for peer in participants
            if peer != self.name
        )
        return _combine(itertools.chain(own, terms), moduli, degree)


# --------------------------------------------------------------------------------------------------
# Sealed Shamir shares of exchange seeds
# --------------------------------------------------------------------------------------------------


def _share_aad(run_id: str, exchange: str, sender: str, recipient: str) -> bytes:
    return b"|".join(part.encode() for part in (run_id, exchange, sender, recipient)) + _DOMAIN


def share_seeds(
    identity: MaskIdentity,
    *,
    exchange: str,
    participants: Sequence[str],
    threshold: int,
    self_seed: bytes | None = None,
) -> dict[str, bytes]:
    """Shamir-share this party's exchange seeds (and its self seed, if it used one) with every
    participant, itself included; one sealed blob per recipient.

    Returns
    -------
    dict[str, bytes]
        Recipient name → nonce ‖ ChaCha20-Poly1305 ciphertext of its shares, one per peer seed.
        Only the recipient (and the sender) can open a blob.

    Notes
    -----
    A party shares the seeds it holds with each peer (both ends of a pair hold the seed), so
    the seeds a survivor's mask used can be rebuilt from the survivors' shares alone, whichever
    parties dropped. Share ``i + 1`` goes to the ``i``-th participant in sorted order.
    """
    holders = sorted(participants)
    if identity.name not in holders:
        raise MaskingError(f"participants must include {identity.name!r}; got {holders}")
    if not 2 <= threshold <= len(holders):
        raise MaskingError(
            f"threshold must be between 2 and the {len(holders)} participants; got {threshold}"
        )
    per_recipient: dict[str, list[bytes]] = {p: [] for p in holders}
    for peer in holders:
        if peer == identity.name:
            continue
        seed = identity.exchange_seed(peer, exchange)
        for index, share in Shamir.split(threshold, len(holders), seed, False):
            per_recipient[holders[index - 1]].append(_pair_name(identity.name, peer) + b"=" + share)
    if self_seed is not None:
        label = _self_name(identity.name).encode()
        for index, share in Shamir.split(threshold, len(holders), self_seed, False):
            per_recipient[holders[index - 1]].append(label + b"=" + share)
    sealed: dict[str, bytes] = {}
    for recipient, lines in per_recipient.items():
        key = identity._seal_key(recipient, sender=identity.name, recipient=recipient)
        nonce = os.urandom(12)
        body = b"\n".join(line.hex().encode() for line in lines)
        aad = _share_aad(identity.run_id, exchange, identity.name, recipient)
        sealed[recipient] = nonce + ChaCha20Poly1305(key).encrypt(nonce, body, aad)
    return sealed


@dataclass
class RevealLedger:
    """What a survivor has revealed, per exchange: the parties it was told are alive (whose
    self-seed shares it may reveal) and those it was told dropped (whose pairwise-seed shares
    it may reveal).

    A later request for the same exchange that calls dropped a party an earlier one called
    alive, or alive a party an earlier one called dropped, is refused: revealing both kinds of
    share for one party would unmask its ciphertext.
    """

    alive: dict[str, frozenset[str]] = field(default_factory=dict)
    dropped: dict[str, frozenset[str]] = field(default_factory=dict)

    def check(self, exchange: str, *, dropped: frozenset[str], survivors: frozenset[str]) -> None:
        """Record one request; ``RecoveryRefusedError`` if it contradicts an earlier one."""
        earlier_alive = self.alive.get(exchange, frozenset())
        earlier_dropped = self.dropped.get(exchange, frozenset())
        if earlier_alive & dropped:
            raise RecoveryRefusedError(
                f"dropped parties of exchange {exchange!r} must not include a party declared "
                f"alive before; got {sorted(earlier_alive & dropped)}"
            )
        if earlier_dropped & survivors:
            raise RecoveryRefusedError(
                f"survivors of exchange {exchange!r} must not include a party declared dropped "
                f"before; got {sorted(earlier_dropped & survivors)}"
            )
        self.alive[exchange] = survivors | earlier_alive
        self.dropped[exchange] = dropped | earlier_dropped

    def to_json(self) -> str:
        """The ledger as JSON (kept in the party's ``Context.state`` between messages)."""
        return json.dumps(
            {
                exchange: {
                    "alive": sorted(self.alive.get(exchange, ())),
                    "dropped": sorted(self.dropped.get(exchange, ())),
                }
                for exchange in sorted(set(self.alive) | set(self.dropped))
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> RevealLedger:
        """Parse ``to_json`` output (an empty string is an empty ledger)."""
        raw = json.loads(text) if text else {}
        return cls(
            alive={e: frozenset(v["alive"]) for e, v in raw.items()},
            dropped={e: frozenset(v["dropped"]) for e, v in raw.items()},
        )


def reveal_shares(
    identity: MaskIdentity,
    *,
    exchange: str,
    participants: Sequence[str],
    dropped: Iterable[str],
    sealed: Mapping[str, bytes],
    threshold: int,
    ledger: RevealLedger,
    self_masks: bool = False,
) -> dict[str, bytes]:
    """A survivor's answer to an unmask request: its shares of dropped-to-survivor seeds and,
    with ``self_masks``, of each survivor's self seed; never both kinds for one party.

    Parameters
    ----------
    sealed
        Survivor name → the blob that survivor sealed to this party (``share_seeds``).

    Returns
    -------
    dict[str, bytes]
        Share label → this survivor's share: ``"u|v"``-style pair names (dropped u, survivor
        v) and ``"self|s"`` for each survivor s.

    Raises
    ------
    RecoveryRefusedError
        This party is named dropped, the survivors are fewer than ``threshold`` (or, with self
        masks, ``threshold`` is not above half the participants), a blob is missing or does
        not open, or the request contradicts an earlier one (see the ledger).
    """
    dropped_set = frozenset(dropped)
    parts = frozenset(participants)
    survivors = parts - dropped_set
    if identity.name in dropped_set or identity.name not in parts:
        raise RecoveryRefusedError(
            f"a recovery request must name this party ({identity.name!r}) a survivor; got "
            f"dropped={sorted(dropped_set)}"
        )
    if not dropped_set <= parts or not (dropped_set or self_masks):
        raise RecoveryRefusedError(
            f"dropped parties must be a non-empty subset of the participants; got "
            f"{sorted(dropped_set)}"
        )
    if self_masks and 2 * threshold <= len(parts):
        # Two disjoint sets of t survivors could each be told a different story about a party.
        raise RecoveryRefusedError(
            f"threshold must be above half the {len(parts)} participants with self masks; got "
            f"{threshold}"
        )
    if len(survivors) < threshold:
        raise RecoveryRefusedError(
            f"survivors must number at least the threshold {threshold} to rebuild masks; got "
            f"{len(survivors)}"
        )
    ledger.check(exchange, dropped=dropped_set, survivors=survivors)
    wanted = {_pair_name(u, v).decode() for u in dropped_set for v in survivors}
    if self_masks:
        wanted |= {_self_name(s) for s in survivors}
    revealed: dict[str, bytes] = {}
    for sender in sorted(survivors):
        blob = sealed.get(sender)
        if blob is None:
            raise RecoveryRefusedError(f"the sealed shares of survivor {sender!r} are missing")
        shares = open_shares(identity, exchange=exchange, sender=sender, blob=blob)
        revealed.update({pair: share for pair, share in shares.items() if pair in wanted})
    return revealed


def open_shares(
    identity: MaskIdentity, *, exchange: str, sender: str, blob: bytes
) -> dict[str, bytes]:
    """Open the shares ``sender`` sealed to this party: pair name → share.

    Raises
    ------
    RecoveryRefusedError
        The blob is not for this party and exchange, or was tampered with.
    """
    key = identity._seal_key(sender, sender=sender, recipient=identity.name)
    aad = _share_aad(identity.run_id, exchange, sender, identity.name)
    try:
        body = ChaCha20Poly1305(key).decrypt(blob[:12], blob[12:], aad)
    except (InvalidTag, ValueError) as e:
        raise RecoveryRefusedError(
            f"the sealed shares of {sender!r} do not open for {identity.name!r} in exchange "
            f"{exchange!r} (wrong recipient, exchange or tampered)"
        ) from e
    shares: dict[str, bytes] = {}
    for line in body.split(b"\n"):
        pair, _, share = bytes.fromhex(line.decode()).partition(b"=")
        shares[pair.decode()] = share
    return shares


# --------------------------------------------------------------------------------------------------
# The coordinator's side of one masked exchange
# --------------------------------------------------------------------------------------------------


@dataclass
class MaskedExchange:
    """The coordinator's bookkeeping for one masked exchange: who may still answer, and the
    correction that removes the survivors' self masks and the dropped parties' pairwise masks.

    Parameters
    ----------
    participants
        Every party that masked against every other (fixed when the exchange was sent).
    threshold
        Survivors needed to rebuild seeds (``default_threshold`` by default).
    self_masks
        Whether the parties added self masks (then every exchange is unmasked, dropouts or not).
    """

    exchange: str
    participants: tuple[str, ...]
    threshold: int
    dropped: frozenset[str] = frozenset()
    self_masks: bool = False
    _declared: bool = field(default=False, init=False, repr=False)
    _seeds: dict[str, bytes] = field(default_factory=dict, init=False, repr=False)
    """Seeds rebuilt from the reveals, once per exchange (not per chunk or purpose)."""

    def accepts(self, party: str) -> bool:
        """Whether ``party``'s ciphertext may still join the sum: a party declared dropped is
        refused even if its answer arrives late (its seeds are, or may be, revealed)."""
        return party in self.participants and party not in self.dropped

    def declare_dropped(self, dropped: Iterable[str]) -> frozenset[str]:
        """Fix the dropped set once (empty only with self masks); returns the survivors.

        Raises
        ------
        RecoveryRefusedError
            Fewer survivors than the threshold, or a second, different declaration.
        """
        new = frozenset(dropped)
        if not new <= frozenset(self.participants):
            raise MaskingError(f"dropped must be participants; got {sorted(new)}")
        if self._declared and new != self.dropped:
            raise RecoveryRefusedError(
                f"exchange {self.exchange!r} already declared {sorted(self.dropped)} dropped"
            )
        if not new and not self.self_masks:
            raise MaskingError("dropped must name a party when there are no self masks; got none")
        survivors = frozenset(self.participants) - new
        if len(survivors) < self.threshold:
            raise RecoveryRefusedError(
                f"exchange {self.exchange!r}: survivors must number at least the threshold "
                f"{self.threshold} to remove the masks of {len(new)} dropped parties; got "
                f"{len(survivors)} of {len(self.participants)}"
            )
        self.dropped = new
        self._declared = True
        return survivors

    def needs_correction(self, members: Sequence[str] | None = None) -> bool:
        """Whether the sum over ``members`` (default: every participant) carries masks that do
        not cancel: a survivor's self mask, or a pairwise mask with a dropped party."""
        masked = set(self.participants if members is None else members)
        return bool(masked - self.dropped) and (self.self_masks or bool(self.dropped & masked))

    def _seed(self, label: str, reveals: Mapping[str, Mapping[str, bytes]]) -> bytes:
        seed = self._seeds.get(label)
        if seed is not None:
            return seed
        holders = sorted(self.participants)
        survivors = [p for p in holders if p not in self.dropped]
        answered = {name: shares for name, shares in reveals.items() if name in survivors}
        if len(answered) < self.threshold:
            raise RecoveryRefusedError(
                f"exchange {self.exchange!r}: reveals must come from at least {self.threshold} "
                f"survivors; got {len(answered)}"
            )
        shares = [
            (holders.index(name) + 1, answer[label])
            for name, answer in sorted(answered.items())
            if label in answer
        ][: self.threshold]
        if len(shares) < self.threshold:
            raise RecoveryRefusedError(
                f"exchange {self.exchange!r}: the seed of {label} needs {self.threshold} "
                f"shares; got {len(shares)}"
            )
        seed = self._seeds[label] = Shamir.combine(shares, False)
        return seed

    def correction(
        self,
        reveals: Mapping[str, Mapping[str, bytes]],
        *,
        purpose: str,
        chunk: int,
        moduli: Sequence[int],
        degree: int,
        members: Sequence[str] | None = None,
    ) -> MaskResidues:
        """The residues to add to the survivors' sum so the masks that do not cancel do.

        ``reveals`` maps survivor name → its ``reveal_shares`` answer; ``members`` are the
        parties that masked for ``purpose`` (default: every participant).
        """
        if not self._declared:
            raise MaskingError("the dropped set is not declared; there is nothing to correct")
        masked = set(self.participants if members is None else members)
        survivors = [v for v in sorted(self.participants) if v not in self.dropped and v in masked]
        terms = []
        for u in sorted(self.dropped & masked):
            for v in survivors:
                seed = self._seed(_pair_name(u, v).decode(), reveals)
                stream = mask_stream(
                    seed, purpose=purpose, chunk=chunk, moduli=moduli, degree=degree
                )
                # Survivor v added sign(v, u) * stream; the sum needs its opposite.
                terms.append((-_sign(v, u), stream))
        if self.self_masks:
            for v in survivors:
                seed = self._seed(_self_name(v), reveals)
                stream = mask_stream(
                    seed, purpose=_self_purpose(purpose), chunk=chunk, moduli=moduli, degree=degree
                )
                terms.append((-1, stream))
        return _combine(terms, moduli, degree)


def chunk_masks(
    identity: MaskIdentity,
    *,
    exchange: str,
    purpose: str,
    participants: Sequence[str],
    self_seed: bytes | None = None,
) -> ChunkMaskSource:
    """The mask source of one party, exchange and purpose, for ``codec.encrypt_vector``."""

    def masks(chunk: int, moduli: Sequence[int], degree: int) -> MaskResidues:
        return identity.mask(
            exchange=exchange,
            purpose=purpose,
            participants=participants,
            chunk=chunk,
            moduli=moduli,
            degree=degree,
            self_seed=self_seed,
        )

    return masks


def mask_chunks(
    ctx: CkksContext,
    identity: MaskIdentity,
    vec: npt.NDArray[np.float64],
    *,
    exchange: str,
    purpose: str,
    participants: Sequence[str],
    self_seed: bytes | None = None,
) -> list[bytes]:
    """Encrypt ``vec`` chunk by chunk as ``codec.encrypt_vector`` does, each chunk masked."""
    masks = chunk_masks(
        identity,
        exchange=exchange,
        purpose=purpose,
        participants=participants,
        self_seed=self_seed,
    )
    slots = ctx.slots
    return [
        ctx.encrypt(
            vec[start : start + slots],
            mask=masks(index, ctx.ring_moduli, ctx.poly_modulus_degree),
        )
        for index, start in enumerate(range(0, vec.size, slots))
    ]


def unmask_sum(
    ctx: CkksContext,
    exchange: MaskedExchange,
    summed: Sequence[bytes],
    reveals: Mapping[str, Mapping[str, bytes]],
    *,
    purpose: str,
    members: Sequence[str] | None = None,
) -> list[bytes]:
    """Add the unmasking correction to each chunk of the survivors' encrypted sum."""
    return [
        ctx.add_mask(
            chunk,
            exchange.correction(
                reveals,
                purpose=purpose,
                chunk=index,
                moduli=ctx.ring_moduli,
                degree=ctx.poly_modulus_degree,
                members=members,
            ),
        )
        for index, chunk in enumerate(summed)
    ]
