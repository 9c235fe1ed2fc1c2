"""API keys of the scoring service: roles, key generation, argon2-hashed storage, verification.

A key looks like ``fk_<key id>_<secret>``: 16 hex digits of public key id, then 43 URL-safe
characters (256 random bits). The database keeps the key id, a name, the role and the argon2
hash of the whole key; the key itself is shown once, when it is created, and never stored.

Roles
-----
``scoring``       the lender's origination systems: the decision endpoints and batch scoring
``viewer``        aggregates only: models, stages, model events, metrics, the API description
``risk_officer``  a viewer that also sees loan-level data: decisions, the review queue, reviews
``admin``         everything: model registration, upload, promotion, rollback, fraud lists,
                  audit verification, and the scoring endpoints (see :data:`GRANTS`)
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from server.scoring.audit import AuditChain, audited_transaction, utc_now
from server.scoring.db.engine import make_engine
from server.scoring.db.migrate import upgrade_database
from server.scoring.db.tables import api_keys, browser_sessions
from server.scoring.errors import InvalidInputError, NotFoundError


class Role(StrEnum):
    """What a key may do; :data:`GRANTS` says which routes' roles each one covers."""

    SCORING = "scoring"
    VIEWER = "viewer"
    RISK_OFFICER = "risk_officer"
    ADMIN = "admin"


GRANTS: dict[Role, frozenset[Role]] = {
    Role.SCORING: frozenset({Role.SCORING}),
    Role.VIEWER: frozenset({Role.VIEWER}),
    Role.RISK_OFFICER: frozenset({Role.RISK_OFFICER, Role.VIEWER}),
    Role.ADMIN: frozenset(Role),
}
"""Roles a key of each role acts as: admin ⊇ risk_officer ⊇ viewer, and admin ⊇ scoring.

Notes
-----
``scoring`` stays apart from the reading roles: the key sits on every origination system, the
most exposed place, so it can decide but read nothing back (not even its own stored decisions).
``admin`` covers ``scoring`` because it is the top of the lattice: an admin already controls what
every decision is (which model decides, which fraud lists apply), so deciding adds no power, and
one admin key can smoke-test a deployment.
"""

KEY_PREFIX = "fk"
_KEY_ID_BYTES = 8
_SECRET_BYTES = 32
_KEY_PATTERN = re.compile(r"fk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
MAX_NAME = 200

_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
"""argon2id at OWASP's minimum profile (2 passes over 19 MiB, one lane).

Notes
-----
The library's default (RFC 9106: 3 passes over 64 MiB, 4 lanes) costs ~1.5 s per hash on two busy
cores, which made every key creation and every cache miss that slow. That strength is for
passwords people choose. A key here is 256 random bits: the hash only has to make a copied
``api_keys`` table useless, and no cost setting changes how long guessing 2^256 keys takes.
"""


def role_named(value: str) -> Role:
    """The role called ``value``. Raises InvalidInputError for any other name."""
    try:
        return Role(value)
    except ValueError:
        raise InvalidInputError(
            [
                {
                    "type": "enum",
                    "loc": ["role"],
                    "msg": f"role must be one of {[r.value for r in Role]}; got {value!r}",
                }
            ]
        ) from None


def grants(held: Role, required: Role) -> bool:
    """Whether a key of role ``held`` may use a route that needs ``required``."""
    return required in GRANTS[held]


def key_id_of(presented: str) -> str | None:
    """The key id of a well-formed key, else None (nothing to look up)."""
    match = _KEY_PATTERN.fullmatch(presented)
    return match.group(1) if match else None


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the key's public id, its name and its role."""

    key_id: str
    name: str
    role: Role


@dataclass(frozen=True)
class ApiKeyInfo:
    """A stored key as listed (never the key or its hash)."""

    key_id: str
    name: str
    role: Role
    created_at: str
    revoked_at: str | None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key: the row to store and the key to show once."""

    info: ApiKeyInfo
    key: str
    key_hash: str


def generate_key(*, role: Role, name: str) -> NewKey:
    """A new random key of ``role`` called ``name``, hashed (~0.03-0.2 s of argon2).

    Notes
    -----
    The secret comes from :mod:`secrets` (the OS generator), not from a generator passed in: a
    key must never be reproducible from a seed.
    """
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise InvalidInputError(
            [
                {
                    "type": "value_error",
                    "loc": ["name"],
                    "msg": f"name must be 1..{MAX_NAME} characters; got {len(name)}",
                }
            ]
        )
    key_id = secrets.token_hex(_KEY_ID_BYTES)
    key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
    info = ApiKeyInfo(key_id=key_id, name=name, role=role, created_at=utc_now(), revoked_at=None)
    return NewKey(info=info, key=key, key_hash=_HASHER.hash(key))


def store_key(connection: Connection, chain: AuditChain, new: NewKey, *, actor: str) -> ApiKeyInfo:
    """Insert a generated key and its ``api_key_created`` audit record (never the key or hash)."""
    info = new.info
    connection.execute(
        insert(api_keys).values(
            key_id=info.key_id,
            name=info.name,
            role=info.role.value,
            key_hash=new.key_hash,
            created_at=info.created_at,
            revoked_at=None,
        )
    )
    chain.append(
        "api_key_created",
        {"key_id": info.key_id, "name": info.name, "role": info.role.value, "actor": actor},
        created_at=info.created_at,
    )
    return info


def _info(row: object) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=str(row.key_id),  # type: ignore[attr-defined]
        name=str(row.name),  # type: ignore[attr-defined]
        role=Role(row.role),  # type: ignore[attr-defined]
        created_at=str(row.created_at),  # type: ignore[attr-defined]
        revoked_at=row.revoked_at,  # type: ignore[attr-defined]
    )


def list_keys(connection: Connection) -> list[ApiKeyInfo]:
    """Every key, oldest first."""
    rows = connection.execute(
        select(
            api_keys.c.key_id,
            api_keys.c.name,
            api_keys.c.role,
            api_keys.c.created_at,
            api_keys.c.revoked_at,
        ).order_by(api_keys.c.created_at, api_keys.c.key_id)
    )
    return [_info(row) for row in rows]


def count_active_keys(connection: Connection) -> int:
    """Keys not revoked."""
    count = connection.execute(
        select(func.count()).select_from(api_keys).where(api_keys.c.revoked_at.is_(None))
    ).scalar_one()
    return int(count)


def revoke_key(connection: Connection, chain: AuditChain, *, key_id: str, actor: str) -> ApiKeyInfo:
    """Revoke a key and end its browser sessions (idempotent: an already revoked key is returned
    unchanged, not re-recorded).

    Raises
    ------
    NotFoundError
        No key has that id.
    """
    row = connection.execute(
        select(api_keys).where(api_keys.c.key_id == key_id).with_for_update()
    ).first()
    if row is None:
        raise NotFoundError(f"key id must be one of the stored keys; got {key_id!r}")
    info = _info(row)
    if not info.active:
        return info
    stamp = utc_now()
    connection.execute(update(api_keys).where(api_keys.c.key_id == key_id).values(revoked_at=stamp))
    ended = connection.execute(delete(browser_sessions).where(browser_sessions.c.key_id == key_id))
    chain.append(
        "api_key_revoked",
        {
            "key_id": key_id,
            "name": info.name,
            "role": info.role.value,
            "actor": actor,
            "sessions_ended": int(ended.rowcount or 0),
        },
        created_at=stamp,
    )
    return ApiKeyInfo(info.key_id, info.name, info.role, info.created_at, stamp)


def check_key(connection: Connection, presented: str) -> Principal | None:
    """The principal of an active stored key equal to ``presented``, else None (slow on a match
    of the key id: one argon2 verification)."""
    key_id = key_id_of(presented)
    if key_id is None:
        return None
    row = connection.execute(
        select(api_keys.c.name, api_keys.c.role, api_keys.c.key_hash, api_keys.c.revoked_at).where(
            api_keys.c.key_id == key_id
        )
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    try:
        _HASHER.verify(row.key_hash, presented)
    except (VerificationError, InvalidHashError):
        return None
    return Principal(key_id=key_id, name=str(row.name), role=Role(row.role))


class KeyVerifier:
    """Checks presented keys against the database, caching verified ones briefly.

    Parameters
    ----------
    engine
        The service database.
    cache_seconds
        How long a verified key is trusted without asking the database again: the longest a
        revoked key keeps working in a running service. 0 checks every request.
    max_entries
        Cached keys kept at most (the cache is emptied when full).
    clock
        Monotonic seconds (passed in so tests can move time).

    Notes
    -----
    argon2 costs ~0.1 s of CPU by design, which would cap the decision endpoint at a few requests
    per second per core. A verified key is cached under the SHA-256 of the key (a fast hash is
    enough for 256 random bits), so only the first request of a key within ``cache_seconds``
    pays. Requests that miss the cache together for the same key share one verification (a
    busy origination system sends many at once when the entry expires; each doing its own
    argon2 put multi-second stalls into the p99). Failed keys are not cached; instead at most
    two verifications run at once, so a flood of wrong keys cannot take more than two threads
    from the requests that carry good ones. A malformed key or an unknown key id is refused
    without hashing anything.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        cache_seconds: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._max_entries = max_entries
        self._clock = clock
        self._cache: dict[bytes, tuple[Principal, float]] = {}
        self._checking: dict[bytes, asyncio.Future[Principal | None]] = {}
        self._limiter = anyio.CapacityLimiter(2)

    async def authenticate(self, presented: str) -> Principal | None:
        """The principal of ``presented``; None for a malformed, unknown, wrong or revoked key."""
        digest = hashlib.sha256(presented.encode()).digest()
        cached = self._cache.get(digest)
        now = self._clock()
        if cached is not None and cached[1] > now:
            return cached[0]
        if key_id_of(presented) is None:
            return None
        running = self._checking.get(digest)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._checking[digest] = future
        try:
            principal = await anyio.to_thread.run_sync(
                self._check, presented, limiter=self._limiter
            )
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved here: no "never retrieved" warning without waiters
            raise
        finally:
            del self._checking[digest]
        future.set_result(principal)
        if principal is None:
            self._cache.pop(digest, None)
        elif self._cache_seconds > 0:
            if len(self._cache) >= self._max_entries:
                self._cache.clear()
            self._cache[digest] = (principal, self._clock() + self._cache_seconds)
        return principal

    def _check(self, presented: str) -> Principal | None:
        with self._engine.connect() as connection:
            return check_key(connection, presented)


def create_key(engine: Engine, *, role: Role, name: str, actor: str) -> NewKey:
    """Generate a key and store it with its audit record in one transaction; returns it (the
    only time the key itself is available)."""
    new = generate_key(role=role, name=name)
    audited_transaction(engine, lambda c, ch: store_key(c, ch, new, actor=actor))
    return new


def create_keys_at(db_url: str, names: dict[Role, str], *, actor: str) -> dict[Role, str]:
    """One new key per role of ``names`` (role -> key name) in the database at ``db_url``,
    migrated first; returns role -> key (shown to the caller once)."""
    engine = make_engine(db_url)
    try:
        upgrade_database(engine)
        return {
            role: create_key(engine, role=role, name=name, actor=actor).key
            for role, name in names.items()
        }
    finally:
        engine.dispose()
