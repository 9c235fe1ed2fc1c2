"""Who may call which route: the role each route declares, and checking a request's API key.

Every route declares what it needs with :func:`requires` (a role) or :func:`public`, in its
``openapi_extra``; the route class (``api/routing.py``) refuses to build a route that declares
neither, so a new route cannot be added unguarded. The declaration is also published in the
OpenAPI description as ``x-required-role``.

A request carries its key as ``Authorization: Bearer <key>``, or a browser carries the session
cookie it got by signing in with a key at ``/login`` (``sessions.py``); the header wins when both
are sent. No key, a malformed, unknown, wrong or revoked key, an expired or signed-out session:
401. A state-changing request authenticated by the cookie without the session's CSRF token:
403. A key whose role does not cover the route's: 403. Routes that need
``risk_officer`` or ``admin`` (loan-level data and administration) append an ``api_access``
record with the key's id to the audit chain before they run; if that record cannot be written
the request fails rather than go unrecorded.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Final

from fastapi import HTTPException, Request

from server.scoring.apikeys import Principal, Role, grants
from server.scoring.context import ServiceContext
from server.scoring.sessions import (
    CSRF_HEADER,
    SAFE_METHODS,
    SESSION_COOKIE,
    BrowserSession,
    find_session,
    tokens_match,
)

logger = logging.getLogger(__name__)

ROLE_EXTENSION: Final = "x-required-role"
"""OpenAPI operation field naming the role a route needs (``public`` for none)."""

PUBLIC: Final = "public"

SECURITY_SCHEME: Final = "apiKey"
"""Name of the bearer security scheme in the OpenAPI description."""

AUDITED_ROLES: Final = frozenset({Role.RISK_OFFICER, Role.ADMIN})
"""Routes needing these roles write an ``api_access`` audit record for every allowed call."""

INSECURE_PRINCIPAL: Final = Principal(key_id="insecure-dev", name="insecure-dev", role=Role.ADMIN)
"""Who a request without a key acts as when the service runs with ``--insecure-dev``."""

Access = Role | None
"""A route's requirement: a role, or None for a public route."""


def requires(role: Role, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``openapi_extra`` of a route that needs a key of ``role`` (merged with ``extra``)."""
    return {**(extra or {}), ROLE_EXTENSION: role.value, "security": [{SECURITY_SCHEME: []}]}


def public() -> dict[str, Any]:
    """``openapi_extra`` of a route that needs no key (only ``/healthz``)."""
    return {ROLE_EXTENSION: PUBLIC, "security": []}


def declared_access(path: str, openapi_extra: dict[str, Any] | None) -> Access:
    """The requirement a route declares. Raises TypeError when it declares none."""
    value = (openapi_extra or {}).get(ROLE_EXTENSION)
    if value == PUBLIC:
        return None
    if isinstance(value, str) and value in Role.__members__.values():
        return Role(value)
    raise TypeError(
        f"route {path} must declare its access with openapi_extra=requires(Role…) or public(); "
        f"got {ROLE_EXTENSION}={value!r}"
    )


def presented_key(request: Request) -> str | None:
    """The key of ``Authorization: Bearer <key>`` (scheme case-insensitive), else None."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


async def authorize(request: Request, required: Access) -> Principal | None:
    """Check the request's key against the route's requirement; audit loan-level and admin calls.

    Returns the principal (None for a public route). Raises HTTPException 401 or 403.
    """
    if required is None:
        return None
    ctx: ServiceContext = request.app.state.ctx
    key = presented_key(request)
    token = request.cookies.get(SESSION_COOKIE)
    if key is None and token is not None:
        principal = (await session_of(request, token)).principal
    elif key is None:
        if not ctx.settings.insecure_dev:
            raise _unauthorized("an API key is required: send Authorization: Bearer <key>")
        principal = INSECURE_PRINCIPAL
    else:
        found = await ctx.keys.authenticate(key)
        if found is None:
            raise _unauthorized("API key must be an active key of this service; got an unknown, "
                                "wrong or revoked key")  # fmt: skip
        principal = found
    if not grants(principal.role, required):
        logger.warning(
            "key %s (%s) refused: %s %s needs %s",
            principal.key_id,
            principal.role.value,
            request.method,
            request.url.path,
            required.value,
        )
        raise HTTPException(
            status_code=403,
            detail=f"role must cover {required.value} for this route; got {principal.role.value}",
        )
    request.state.principal = principal
    if required in AUDITED_ROLES:
        await record_access(ctx, principal, request)
    return principal


async def session_of(request: Request, token: str) -> BrowserSession:
    """The live browser session of the cookie's ``token`` (kept on ``request.state.session``).

    Raises HTTPException 401 for an expired, signed-out or revoked session, 403 for a
    state-changing request without the session's CSRF token in the ``X-CSRF-Token`` header.
    """
    ctx: ServiceContext = request.app.state.ctx
    session: BrowserSession | None = await ctx.read(find_session, token, now=datetime.now(UTC))
    if session is None:
        raise _unauthorized("the browser session must be live; got an expired, signed-out or "
                            "revoked one: sign in again at /login")  # fmt: skip
    if request.method not in SAFE_METHODS and not tokens_match(
        request.headers.get(CSRF_HEADER), session.csrf_token
    ):
        raise HTTPException(
            status_code=403,
            detail=f"a {request.method} with the session cookie must carry the session's CSRF "
            f"token in {CSRF_HEADER}; got none or another",
        )
    request.state.session = session
    return session


async def record_access(ctx: ServiceContext, principal: Principal, request: Request) -> None:
    """Append an ``api_access`` record (key id, role, method, path, query) to the audit chain."""
    payload = {
        "key_id": principal.key_id,
        "key_name": principal.name,
        "role": principal.role.value,
        "method": request.method,
        "path": request.url.path,
        "query": request.url.query,
    }
    await ctx.writer.run_job(lambda _connection, chain: chain.append("api_access", payload))
