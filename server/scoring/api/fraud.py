"""Fraud lists: the external lists (blacklists) the fraud rules read."""

from __future__ import annotations

from server.scoring import store
from server.scoring.access import requires
from server.scoring.api.routing import ERRORS, new_router
from server.scoring.apikeys import Role
from server.scoring.deps import ServiceDep
from server.scoring.errors import NotFoundError
from server.scoring.payloads import ListOut, ListUpdate

router = new_router()


@router.get(
    "/v1/fraud/lists",
    response_model=list[ListOut],
    tags=["fraud"],
    openapi_extra=requires(Role.ADMIN),
)
async def fraud_lists(ctx: ServiceDep) -> list[ListOut]:
    """External lists of the rule set (e.g. blacklists) and their sizes."""
    return [
        ListOut(name=name, size=len(values)) for name, values in sorted(ctx.screen.lists.items())
    ]


@router.post(
    "/v1/fraud/lists/{name}",
    response_model=ListOut,
    responses=ERRORS,
    tags=["fraud"],
    openapi_extra=requires(Role.ADMIN),
)
async def update_fraud_list(name: str, body: ListUpdate, ctx: ServiceDep) -> ListOut:
    """Add or remove values of an external list; takes effect for the next application."""
    if name not in ctx.screen.lists:
        raise NotFoundError(f"list must be one of {sorted(ctx.screen.lists)}; got {name!r}")
    values = await ctx.writer.run_job(
        lambda c, ch: store.update_list(
            c,
            ch,
            name=name,
            add=body.add,
            remove=body.remove,
            key_hash=lambda v: ctx.hasher.hash(name, v),
        )
    )
    ctx.screen.set_lists({name: values})
    return ListOut(name=name, size=len(values))
