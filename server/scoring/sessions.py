"""Browser sign-in: an opaque session cookie that acts as the API key a person pasted at /login.

A person signs in once with their API key (argon2-verified like a header key); the service stores
a session row and sets a cookie holding a random 256-bit token. Later requests carrying the
cookie act as that key's principal (key id and role), so the routes' role checks and the
``api_access`` audit records work unchanged for browsers. ``Authorization: Bearer`` keys keep
working and win when both are sent.

Notes
-----
- The database keeps only the SHA-256 of the token: a copy of ``browser_sessions`` cannot be
  replayed as a cookie (the token has 256 random bits, so a fast hash is enough).
- Every lookup joins ``api_keys`` and requires the key to be active, and revoking a key also
  deletes its sessions: a revoked key's sessions die at once, without the header keys' cache.
- The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page
  sends it) and ``Secure`` when the request came over TLS (or ``secure_cookies`` is set, for a
  TLS-terminating proxy).
- State-changing requests authenticated by the cookie must also carry the session's CSRF token
  (form field or ``X-CSRF-Token`` header): SameSite alone leaves out browsers that ignore it and
  same-site subdomains. The login form uses a double-submit cookie, since no session exists yet.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from server.scoring.apikeys import Principal, Role
from server.scoring.audit import AuditChain
from server.scoring.db.tables import api_keys, browser_sessions

SESSION_COOKIE: Final = "fedrisk_session"
LOGIN_CSRF_COOKIE: Final = "fedrisk_login_csrf"
CSRF_FIELD: Final = "csrf_token"
CSRF_HEADER: Final = "x-csrf-token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
SIGN_IN_ROLES: Final = frozenset({Role.VIEWER, Role.RISK_OFFICER, Role.ADMIN})
"""Roles that may sign in: a ``scoring`` key belongs to an origination system, not a person."""

_TOKEN_BYTES = 32
_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class BrowserSession:
    """A live session: who it acts as, its CSRF token, when it ends (ISO-8601 UTC)."""

    principal: Principal
    csrf_token: str
    expires_at: str


@dataclass(frozen=True)
class NewSession:
    """A session just started: the cookie's token (never stored) and the session."""

    token: str
    session: BrowserSession


def new_token() -> str:
    """256 random bits, URL-safe (43 characters): a session token or a CSRF token."""
    return secrets.token_urlsafe(_TOKEN_BYTES)


def token_digest(token: str) -> str:
    """SHA-256 hex of a token: what the database stores instead of it."""
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_match(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented CSRF token with the expected one."""
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def start_session(
    connection: Connection,
    chain: AuditChain,
    principal: Principal,
    *,
    lifetime_seconds: float,
    now: datetime,
) -> NewSession:
    """Store a new session of ``principal`` and its ``session_started`` audit record; expired
    sessions of every key are purged on the way."""
    created = _stamp(now)
    expires = _stamp(now + timedelta(seconds=lifetime_seconds))
    connection.execute(delete(browser_sessions).where(browser_sessions.c.expires_at <= created))
    token, csrf = new_token(), new_token()
    digest = token_digest(token)
    connection.execute(
        insert(browser_sessions).values(
            token_sha256=digest,
            key_id=principal.key_id,
            csrf_token=csrf,
            created_at=created,
            expires_at=expires,
        )
    )
    chain.append(
        "session_started",
        {
            "key_id": principal.key_id,
            "key_name": principal.name,
            "role": principal.role.value,
            "session": digest[:16],
            "expires_at": expires,
        },
        created_at=created,
    )
    return NewSession(token, BrowserSession(principal, csrf, expires))


def find_session(connection: Connection, token: str, *, now: datetime) -> BrowserSession | None:
    """The live session of ``token``: unexpired, and its key still active. Else None."""
    if not _TOKEN_PATTERN.fullmatch(token):
        return None
    row = connection.execute(
        select(
            browser_sessions.c.key_id,
            browser_sessions.c.csrf_token,
            browser_sessions.c.expires_at,
            api_keys.c.name,
            api_keys.c.role,
        )
        .join_from(browser_sessions, api_keys, api_keys.c.key_id == browser_sessions.c.key_id)
        .where(
            browser_sessions.c.token_sha256 == token_digest(token),
            browser_sessions.c.expires_at > _stamp(now),
            api_keys.c.revoked_at.is_(None),
        )
    ).first()
    if row is None:
        return None
    principal = Principal(key_id=str(row.key_id), name=str(row.name), role=Role(row.role))
    return BrowserSession(principal, str(row.csrf_token), str(row.expires_at))


def end_session(connection: Connection, chain: AuditChain, token: str) -> bool:
    """Delete the session of ``token`` (sign-out) and record ``session_ended``; False when there
    was none."""
    digest = token_digest(token)
    row = connection.execute(
        select(browser_sessions.c.key_id).where(browser_sessions.c.token_sha256 == digest)
    ).first()
    if row is None:
        return False
    connection.execute(delete(browser_sessions).where(browser_sessions.c.token_sha256 == digest))
    chain.append("session_ended", {"key_id": str(row.key_id), "session": digest[:16]})
    return True
