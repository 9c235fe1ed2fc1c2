"""Browser sign-in and sign-out: paste an API key at /login, get a session cookie (``sessions.py``).

These three routes are public (they check the key or the session themselves). The login form is
protected from cross-site posting by a double-submit token (a cookie and a hidden field that
must match); sign-out needs the session's CSRF token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from server.scoring.access import public
from server.scoring.api.routing import new_router
from server.scoring.dashboard.views import render
from server.scoring.deps import ServiceDep
from server.scoring.sessions import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    SIGN_IN_ROLES,
    end_session,
    find_session,
    new_token,
    start_session,
    tokens_match,
)

router = new_router()

DEFAULT_NEXT = "/dashboard"
MAX_FIELD = 512


def _safe_next(value: str | None) -> str:
    """Where to go after signing in: a dashboard path of this service, never another site."""
    if value and value.startswith("/dashboard") and "//" not in value and "\\" not in value:
        return value
    return DEFAULT_NEXT


def _secure(request: Request, ctx: ServiceDep) -> bool:
    return request.url.scheme == "https" or ctx.settings.secure_cookies


def _login_form(
    request: Request, ctx: ServiceDep, *, next_url: str, error: str | None, status_code: int
) -> HTMLResponse:
    token = new_token()
    response = render(
        request,
        "login.html",
        {
            "title": "Sign in",
            "login_csrf": token,
            "next_url": next_url,
            "error": error,
            "hours": round(ctx.settings.session_seconds / 3600, 1),
        },
        status_code=status_code,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=_secure(request, ctx),
    )
    return response


@router.get("/login", response_class=HTMLResponse, include_in_schema=False, openapi_extra=public())
async def login_page(
    request: Request,
    ctx: ServiceDep,
    next_: Annotated[str | None, Query(alias="next", max_length=MAX_FIELD)] = None,
) -> HTMLResponse:
    """The sign-in form."""
    return _login_form(request, ctx, next_url=_safe_next(next_), error=None, status_code=200)


@router.post("/login", include_in_schema=False, openapi_extra=public())
async def login(request: Request, ctx: ServiceDep) -> Response:
    """Check the pasted key; on success start a session, set its cookie, go to the dashboard.

    422 without a key field, 403 when the form's token does not match its cookie or the key's
    role may not sign in, 401 for a malformed, unknown, wrong or revoked key.
    """
    form = await request.form(max_files=0, max_fields=8, max_part_size=MAX_FIELD * 4)
    key, csrf, next_raw = form.get("key"), form.get(CSRF_FIELD), form.get("next")
    next_url = _safe_next(next_raw if isinstance(next_raw, str) else None)
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_FIELD:
        return _login_form(
            request, ctx, next_url=next_url, error="key must be an API key; got none",
            status_code=422,
        )  # fmt: skip
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if expected is None or not tokens_match(csrf if isinstance(csrf, str) else None, expected):
        return _login_form(
            request, ctx, next_url=next_url, status_code=403,
            error="the sign-in form must be this service's own (its token did not match): "
                  "try again",
        )  # fmt: skip
    principal = await ctx.keys.authenticate(key.strip())
    if principal is None:
        return _login_form(
            request, ctx, next_url=next_url, status_code=401,
            error="key must be an active key of this service; got an unknown, wrong or revoked "
                  "key",
        )  # fmt: skip
    if principal.role not in SIGN_IN_ROLES:
        return _login_form(
            request, ctx, next_url=next_url, status_code=403,
            error=f"role must be one of {sorted(r.value for r in SIGN_IN_ROLES)} to sign in; "
                  f"got {principal.role.value}",
        )  # fmt: skip
    started = await ctx.writer.run_job(
        lambda c, ch: start_session(
            c, ch, principal, lifetime_seconds=ctx.settings.session_seconds, now=datetime.now(UTC)
        )
    )
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        started.token,
        max_age=int(ctx.settings.session_seconds),
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request, ctx),
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout", include_in_schema=False, openapi_extra=public())
async def logout(request: Request, ctx: ServiceDep) -> Response:
    """End the cookie's session (its CSRF token required) and clear the cookie; 303 to /login."""
    token = request.cookies.get(SESSION_COOKIE)
    if token is not None:
        session = await ctx.read(find_session, token, now=datetime.now(UTC))
        if session is not None:
            form = await request.form(max_files=0, max_fields=4, max_part_size=MAX_FIELD)
            csrf = form.get(CSRF_FIELD)
            if not tokens_match(csrf if isinstance(csrf, str) else None, session.csrf_token):
                return Response(
                    "sign-out must come from this service's own page (CSRF token missing or wrong)",
                    status_code=403,
                    media_type="text/plain",
                )
            await ctx.writer.run_job(lambda c, ch: end_session(c, ch, token))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request, ctx)
    )
    return response
