"""ECDH private set intersection over Curve25519, built on ``cryptography``'s X25519.

The protocol between a guest (the label holder) and one host, with everything relayed by the
coordinator. ``H`` is the salted identifier digest of :func:`fedrisk.federation.identifiers.
psi_digests`; ``a`` and ``b`` are fresh X25519 private keys of the guest and the host for this
pair only, and ``x^k`` means ``X25519(k, x)``.

1. The host shuffles its rows with a secret permutation and sends ``H(y)^b`` in that order,
   plus a fresh X25519 channel public key. The guest sends ``H(x)^a`` in its row order.
2. The host sends back ``(H(x)^a)^b`` in the guest's order.
3. The guest computes ``(H(y)^b)^a`` and matches: guest row ``i`` is shared with host slot
   ``j`` when ``H(x_i)^ab == H(y_j)^ba``. It seals, for the host alone (ChaCha20-Poly1305 under
   an X25519 channel key), the shared host slots, ascending: never a guest row number.
4. The host opens it and maps its slots back through its permutation: which of its own rows
   are shared. From then on the guest names a shared host row by its slot (the vertical
   trainer's row references), and the host never learns where in the guest's table, or next to
   which of the guest's other customers, a shared customer sits.

Why X25519 exchange is a sound commutative blinding
---------------------------------------------------
``X25519(k, u)`` is the Montgomery ladder computing the u-coordinate of ``[clamp(k)] P`` for
a point ``P`` with u-coordinate ``u`` on Curve25519 or on its quadratic twist (RFC 7748 §5; the
ladder is correct for every 32-byte input, which is why ``cryptography`` accepts any 32-byte
public key). Scalar multiplication commutes inside each group, so ``X25519(a, X25519(b, u)) =
u([clamp(a) clamp(b)] P) = X25519(b, X25519(a, u))``: the double blinding is the same whichever
party blinds first. A 32-byte hash output is a valid u-coordinate (its top bit is masked, values
at or above ``2^255 - 19`` reduce); ``P`` and ``-P`` share ``u``, which only matters to
equality, not to hiding. Clamped scalars are multiples of 8, so the low-order component of
``P`` is cleared and the blinded values lie in the prime-order subgroups (order ``2^252 + ...``
on the curve, a 253-bit prime on the twist: Curve25519 is twist-secure), where the decisional
Diffie-Hellman assumption that ECDH-PSI rests on is believed to hold. An input of low order
would give the all-zero output, which ``cryptography`` refuses; a digest hits one with
probability about ``2^-250`` and an honest peer's blinded value never does.

Notes
-----
Semi-honest model: every party follows the protocol. The host sees ``H(x)^a``, uniformly
random to it without ``a``; the guest sees ``H(y)^b`` in a secret order, and learns which host
slots are shared, never which host rows or anything of a non-shared ``y``. The coordinator sees
blinded values it cannot link (no ``a``, no ``b``), the set sizes and, from the sealed result's
length, the intersection size. The channel key is exchanged through the coordinator, so it is
secret against a coordinator that relays faithfully (the semi-honest model); binding it to the
parties' provisioned identity keys is what would stop an active one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from fedrisk.federation.alignment import GuestAlignment, HostAlignment
from fedrisk.federation.identifiers import (
    IdentifierKey,
    IdentifierKind,
    normalise_identifiers,
    psi_digests,
)
from secure_agg.errors import SecureAggError

POINT_BYTES: Final = 32
_NONCE_BYTES: Final = 12
_CHANNEL_INFO: Final = b"fedrisk/psi-result/v1"
_MIN_CHUNK: Final = 4096

Points = npt.NDArray[np.uint8]
"""Blinded values, shape ``(n, 32)``: one X25519 u-coordinate per row."""
Rows = npt.NDArray[np.int64]


class PsiError(SecureAggError, ValueError):
    """PSI input or a peer's message is malformed: wrong shapes, low-order points, bad seal."""


# --------------------------------------------------------------------------------------------------
# Points and blinding
# --------------------------------------------------------------------------------------------------


def as_points(digests: Sequence[bytes]) -> Points:
    """Digests as a ``(n, 32)`` array of u-coordinates.

    Raises
    ------
    PsiError
        If a digest is not 32 bytes.
    """
    bad = [i for i, d in enumerate(digests) if len(d) != POINT_BYTES]
    if bad:
        raise PsiError(
            f"PSI digests must be {POINT_BYTES} bytes each; got {len(bad)} others, "
            f"first at index {bad[0]}"
        )
    flat = np.frombuffer(b"".join(digests), dtype=np.uint8)
    return flat.reshape(len(digests), POINT_BYTES).copy()


def check_points(points: npt.NDArray[np.generic], *, name: str) -> Points:
    """``points`` as a ``(n, 32)`` uint8 array.

    Raises
    ------
    PsiError
        If it has another shape or dtype.
    """
    if points.dtype != np.uint8 or points.ndim != 2 or points.shape[1] != POINT_BYTES:
        raise PsiError(
            f"{name} must be a (n, {POINT_BYTES}) uint8 array; got {points.dtype} {points.shape}"
        )
    return np.ascontiguousarray(points, dtype=np.uint8)


def _blind_bytes(key: bytes, flat: bytes) -> bytes:
    """``X25519(key, u)`` of every 32-byte u-coordinate in ``flat``, concatenated."""
    private = X25519PrivateKey.from_private_bytes(key)
    exchange = private.exchange
    public = X25519PublicKey.from_public_bytes
    out = []
    for start in range(0, len(flat), POINT_BYTES):
        try:
            out.append(exchange(public(flat[start : start + POINT_BYTES])))
        except ValueError as e:
            raise PsiError(
                f"PSI point {start // POINT_BYTES} must not be of low order; got one "
                "(a malformed or malicious message)"
            ) from e
    return b"".join(out)


def blind(points: Points, key: bytes, *, workers: int = 1) -> Points:
    """Every point raised to the private key ``key``: ``X25519(key, u)`` row by row.

    Parameters
    ----------
    points
        ``(n, 32)`` u-coordinates.
    key
        A 32-byte X25519 private key (clamped by X25519 itself).
    workers
        Processes to spread the scalar multiplications over (1: this process only).

    Raises
    ------
    PsiError
        If a point is of low order (X25519 gives all zeros), or the array is malformed.
    """
    points = check_points(points, name="points")
    n = len(points)
    flat = points.tobytes()
    if workers <= 1 or n < 2 * _MIN_CHUNK:
        out = _blind_bytes(key, flat)
    else:
        per = -(-n // workers)
        chunks = [flat[i * POINT_BYTES : (i + per) * POINT_BYTES] for i in range(0, n, per)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            out = b"".join(pool.map(_blind_bytes, [key] * len(chunks), chunks))
    return np.frombuffer(out, dtype=np.uint8).reshape(n, POINT_BYTES).copy()


def new_private_key() -> bytes:
    """A fresh X25519 private key from the operating system's CSPRNG, as 32 raw bytes."""
    return X25519PrivateKey.generate().private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()
    )


def public_key_of(private: bytes) -> bytes:
    """The raw 32-byte X25519 public key of ``private``."""
    return (
        X25519PrivateKey.from_private_bytes(private)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


# --------------------------------------------------------------------------------------------------
# The two parties' steps
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuestSecrets:
    """What the guest keeps between steps 1 and 3 for one host; never sent."""

    blinding_key: bytes = field(repr=False)
    channel_key: bytes = field(repr=False)

    @classmethod
    def fresh(cls) -> GuestSecrets:
        """New random keys."""
        return cls(new_private_key(), new_private_key())


@dataclass(frozen=True)
class HostSecrets:
    """What the host keeps between steps 1 and 4; never sent."""

    blinding_key: bytes = field(repr=False)
    channel_key: bytes = field(repr=False)
    order: Rows = field(repr=False)
    """Slot ``j`` of the host's blinded list is its row ``order[j]``."""

    @classmethod
    def fresh(cls, n_rows: int, *, rng: np.random.Generator) -> HostSecrets:
        """New random keys and a random order of ``n_rows`` rows drawn from ``rng``."""
        return cls(new_private_key(), new_private_key(), rng.permutation(n_rows).astype(np.int64))


@dataclass(frozen=True)
class Match:
    """The guest's view of one host's intersection: pairs in guest row order."""

    guest_rows: Rows
    """Guest rows the host knows, ascending: this order is the intersection order."""
    host_slots: Rows
    """For each, the host slot (position in the host's shuffled blinded list)."""


def host_offer(digests: Points, secrets: HostSecrets, *, workers: int = 1) -> Points:
    """Step 1 at the host: its digests in its secret order, blinded with ``b``.

    Raises
    ------
    PsiError
        If ``digests`` and the secret order differ in length.
    """
    digests = check_points(digests, name="host digests")
    if len(digests) != len(secrets.order):
        raise PsiError(
            f"host digests must number {len(secrets.order)} (the secret order's length); "
            f"got {len(digests)}"
        )
    return blind(digests[secrets.order], secrets.blinding_key, workers=workers)


def guest_offer(digests: Points, secrets: GuestSecrets, *, workers: int = 1) -> Points:
    """Step 1 at the guest: its digests in row order, blinded with ``a``."""
    return blind(check_points(digests, name="guest digests"), secrets.blinding_key, workers=workers)


def host_reblind(guest_points: Points, secrets: HostSecrets, *, workers: int = 1) -> Points:
    """Step 2 at the host: the guest's blinded list blinded again with ``b``, same order."""
    return blind(
        check_points(guest_points, name="guest blinded list"), secrets.blinding_key, workers=workers
    )


def guest_match(
    secrets: GuestSecrets,
    *,
    n_rows: int,
    guest_double: Points,
    host_points: Points,
    workers: int = 1,
) -> Match:
    """Step 3 at the guest: which of its rows the host knows, and at which host slot.

    Raises
    ------
    PsiError
        If the doubly blinded list does not have one entry per guest row, or a list is malformed.
    """
    guest_double = check_points(guest_double, name="doubly blinded guest list")
    if len(guest_double) != n_rows:
        raise PsiError(
            f"doubly blinded guest list must have one entry per guest row ({n_rows}); "
            f"got {len(guest_double)}"
        )
    host_double = blind(
        check_points(host_points, name="host blinded list"), secrets.blinding_key, workers=workers
    )
    flat = host_double.tobytes()
    slot_of = {flat[j * POINT_BYTES : (j + 1) * POINT_BYTES]: j for j in range(len(host_double))}
    gflat = guest_double.tobytes()
    guest_rows: list[int] = []
    host_slots: list[int] = []
    for i in range(n_rows):
        j = slot_of.get(gflat[i * POINT_BYTES : (i + 1) * POINT_BYTES])
        if j is not None:
            guest_rows.append(i)
            host_slots.append(j)
    return Match(np.asarray(guest_rows, dtype=np.int64), np.asarray(host_slots, dtype=np.int64))


# --------------------------------------------------------------------------------------------------
# The sealed result, guest to host
# --------------------------------------------------------------------------------------------------


def _channel(private: bytes, peer_public: bytes) -> ChaCha20Poly1305:
    if len(peer_public) != POINT_BYTES:
        raise PsiError(
            f"PSI channel public key must be {POINT_BYTES} bytes; got {len(peer_public)}"
        )
    try:
        shared = X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(peer_public)
        )
    except ValueError as e:
        raise PsiError("PSI channel public key must not be of low order; got one") from e
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_CHANNEL_INFO).derive(shared)
    return ChaCha20Poly1305(key)


def seal_match(
    match: Match,
    *,
    secrets: GuestSecrets,
    host_channel_public: bytes,
    context: bytes,
) -> bytes:
    """The shared host slots, ascending, sealed for the host alone: ``nonce ||
    ChaCha20-Poly1305(payload)``. No guest row number is in it.

    ``context`` (run id, party names) is authenticated with it, so a sealed result cannot be
    replayed into another run or to another host.
    """
    slots = np.sort(match.host_slots).astype("<i8")
    payload = np.asarray([len(slots)], dtype="<i8").tobytes() + slots.tobytes()
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + _channel(secrets.channel_key, host_channel_public).encrypt(
        nonce, payload, context
    )


@dataclass(frozen=True)
class HostView:
    """What the host learns: which of its rows are shared, and the slot that names each."""

    slots: Rows
    """The shared slots of the host's blinded list, ascending: how the guest names its rows."""
    rows: Rows
    """The host's own row behind each slot."""


def open_match(
    sealed: bytes,
    *,
    secrets: HostSecrets,
    guest_channel_public: bytes,
    context: bytes,
) -> HostView:
    """Step 4 at the host: open the guest's sealed match and map slots to its own rows.

    Raises
    ------
    PsiError
        If the seal does not verify (tampered, or for another run or host) or the payload is
        inconsistent with this host's list.
    """
    if len(sealed) < _NONCE_BYTES + 16:
        raise PsiError(f"sealed PSI result must be at least 28 bytes; got {len(sealed)}")
    try:
        payload = _channel(secrets.channel_key, guest_channel_public).decrypt(
            sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], context
        )
    except InvalidTag as e:
        raise PsiError(
            "sealed PSI result must verify under this run's channel key; got a tampered or "
            "misdirected one"
        ) from e
    values = np.frombuffer(payload, dtype="<i8").astype(np.int64)
    if len(values) < 1 or len(values) != 1 + int(values[0]):
        raise PsiError(f"sealed PSI result must hold 1 + k integers; got {len(values)}")
    slots = values[1:]
    n_host = len(secrets.order)
    if len(slots) and (slots.min() < 0 or slots.max() >= n_host):
        raise PsiError(f"sealed PSI result must name host slots below {n_host}; got others")
    if np.any(np.diff(slots) <= 0):
        raise PsiError("sealed PSI result must name distinct slots, ascending")
    return HostView(slots=slots.copy(), rows=secrets.order[slots])


# --------------------------------------------------------------------------------------------------
# All four steps in one process: benchmarks and the plaintext-free oracle of tests
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalIntersection:
    """Both sides' results of one guest-host PSI run in a single process."""

    guest: Match
    host: HostView


def intersect_locally(
    guest_digests: Points,
    host_digests: Points,
    *,
    rng: np.random.Generator,
    workers: int = 1,
) -> LocalIntersection:
    """Run the four steps between a guest and a host held in this process (same messages,
    no transport): for benchmarks and tests."""
    g, h = GuestSecrets.fresh(), HostSecrets.fresh(len(host_digests), rng=rng)
    host_points = host_offer(host_digests, h, workers=workers)
    guest_points = guest_offer(guest_digests, g, workers=workers)
    guest_double = host_reblind(guest_points, h, workers=workers)
    match = guest_match(
        g,
        n_rows=len(guest_digests),
        guest_double=guest_double,
        host_points=host_points,
        workers=workers,
    )
    context = b"local"
    sealed = seal_match(
        match,
        secrets=g,
        host_channel_public=public_key_of(h.channel_key),
        context=context,
    )
    view = open_match(
        sealed, secrets=h, guest_channel_public=public_key_of(g.channel_key), context=context
    )
    return LocalIntersection(guest=match, host=view)


def align_locally(
    guest: str,
    guest_ids: Sequence[object],
    hosts: Mapping[str, Sequence[object]],
    *,
    kind: IdentifierKind,
    key: IdentifierKey,
    rng: np.random.Generator,
    default_country_code: str = "86",
    workers: int = 1,
) -> tuple[GuestAlignment, dict[str, HostAlignment]]:
    """Align raw identifier columns held in this process, as the ``align`` phase would: the
    guest with each host separately, through the same four steps.

    For simulations and studies that hold every party's table in one process; a federation
    runs the phase over Flower (``server.coordinator.alignment``).

    Raises
    ------
    fedrisk.federation.identifiers.IdentifierError
        If a column has invalid or duplicate identifiers.
    """
    salt = key.psi_salt()

    def digests(values: Sequence[object], source: str) -> Points:
        canonical = normalise_identifiers(
            values, kind, default_country_code=default_country_code, source=source
        )
        return as_points(psi_digests(canonical, kind=kind, salt=salt))

    guest_digests = digests(guest_ids, guest)
    shared: dict[str, Rows] = {}
    refs: dict[str, Rows] = {}
    views: dict[str, HostAlignment] = {}
    for host, ids in hosts.items():
        result = intersect_locally(guest_digests, digests(ids, host), rng=rng, workers=workers)
        shared[host] = result.guest.guest_rows
        refs[host] = result.guest.host_slots
        views[host] = HostAlignment(
            host=host, guest=guest, slots=result.host.slots, rows=result.host.rows
        )
    guest_result = GuestAlignment(guest=guest, n_rows=len(guest_digests), shared=shared, refs=refs)
    return guest_result, views
