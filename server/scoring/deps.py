"""Request dependencies of the scoring API: the service context, the admin guard, the stage."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from server.scoring.context import ServiceContext
from server.scoring.errors import NotFoundError
from server.scoring.settings import STAGES, Stage, stage_named


async def get_context(request: Request) -> ServiceContext:
    """The components built at start-up (``app.state.ctx``)."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx


ServiceDep = Annotated[ServiceContext, Depends(get_context)]
"""The running service's context, injected into a route."""


async def require_admin(request: Request, ctx: ServiceDep) -> None:
    """When an admin token is configured, require ``Authorization: Bearer <token>``."""
    token = ctx.settings.admin_token
    if token is None:
        return
    given = request.headers.get("authorization", "")
    expected = f"Bearer {token.get_secret_value()}"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=401, detail="admin endpoints need Authorization: Bearer <token>"
        )


Admin = Annotated[None, Depends(require_admin)]
"""Guards a model-management, review, fraud-list or audit route."""


def stage_of_path(value: str) -> Stage:
    """The lifecycle stage named in a URL. Raises NotFoundError (404) for any other name."""
    stage = stage_named(value)
    if stage is None:
        raise NotFoundError(f"stage must be one of {list(STAGES)}; got {value!r}")
    return stage
