"""Request dependencies of the scoring API: the service context and the stage in a path."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.scoring.context import ServiceContext
from server.scoring.errors import NotFoundError
from server.scoring.settings import STAGES, Stage, stage_named


async def get_context(request: Request) -> ServiceContext:
    """The components built at start-up (``app.state.ctx``)."""
    ctx: ServiceContext = request.app.state.ctx
    return ctx


ServiceDep = Annotated[ServiceContext, Depends(get_context)]
"""The running service's context, injected into a route."""


def stage_of_path(value: str) -> Stage:
    """The lifecycle stage named in a URL. Raises NotFoundError (404) for any other name."""
    stage = stage_named(value)
    if stage is None:
        raise NotFoundError(f"stage must be one of {list(STAGES)}; got {value!r}")
    return stage
