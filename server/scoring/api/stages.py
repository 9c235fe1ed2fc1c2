"""Lifecycle stages: champion, challenger and rollback history; rollback and stopping a test."""

from __future__ import annotations

import logging

from server.scoring import store
from server.scoring.access import requires
from server.scoring.api.routing import ERRORS, new_router
from server.scoring.apikeys import Role
from server.scoring.deps import ServiceDep, stage_of_path
from server.scoring.errors import ConflictError
from server.scoring.payloads import RollbackRequest, StageOut
from server.scoring.store import Assignment

logger = logging.getLogger(__name__)

router = new_router()


def stage_out(a: Assignment) -> StageOut:
    """API form of a stage's assignment."""
    return StageOut(
        stage=a.stage,
        champion_id=a.champion_id,
        challenger_id=a.challenger_id,
        challenger_share=a.challenger_share,
        history=list(a.history),
        version=a.version,
    )


@router.get(
    "/v1/stages/{stage}",
    response_model=StageOut,
    responses=ERRORS,
    tags=["models"],
    openapi_extra=requires(Role.VIEWER),
)
async def get_stage(stage: str, ctx: ServiceDep) -> StageOut:
    """Champion, challenger, share and rollback history of a stage."""
    return stage_out(ctx.registry.assignments[stage_of_path(stage)])


@router.post(
    "/v1/stages/{stage}/rollback",
    response_model=StageOut,
    responses=ERRORS,
    tags=["models"],
    openapi_extra=requires(Role.ADMIN),
)
async def rollback_stage(stage: str, body: RollbackRequest, ctx: ServiceDep) -> StageOut:
    """Restore the champion that preceded the current one."""
    chosen = stage_of_path(stage)
    history = ctx.registry.assignments[chosen].history
    if history and not ctx.registry.has(history[-1]):
        raise ConflictError(f"cannot roll back {chosen} to {history[-1]}: that model is not loaded")
    async with ctx.lock:
        assignment = await ctx.writer.run_job(
            lambda c, ch: store.rollback_stage(
                c, ch, stage=chosen, actor=body.actor, note=body.note
            )
        )
        await ctx.reload_assignments()
    logger.info("rolled back %s to %s by %s", chosen, assignment.champion_id, body.actor)
    return stage_out(assignment)


@router.post(
    "/v1/stages/{stage}/challenger/stop",
    response_model=StageOut,
    responses=ERRORS,
    tags=["models"],
    openapi_extra=requires(Role.ADMIN),
)
async def stop_challenger(stage: str, body: RollbackRequest, ctx: ServiceDep) -> StageOut:
    """End the stage's challenger experiment (all traffic to the champion)."""
    chosen = stage_of_path(stage)
    async with ctx.lock:
        assignment = await ctx.writer.run_job(
            lambda c, ch: store.clear_challenger(
                c, ch, stage=chosen, actor=body.actor, note=body.note
            )
        )
        await ctx.reload_assignments()
    return stage_out(assignment)
