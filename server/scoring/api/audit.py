"""Audit: checking the hash chain of every decision and change."""

from __future__ import annotations

import anyio

from server.scoring.access import requires
from server.scoring.anchor import AuditAnchorError
from server.scoring.api.routing import new_router
from server.scoring.apikeys import Role
from server.scoring.audit import verify_chain
from server.scoring.deps import ServiceDep
from server.scoring.payloads import AuditVerifyOut

router = new_router()


@router.get(
    "/v1/audit/verify",
    response_model=AuditVerifyOut,
    tags=["operations"],
    openapi_extra=requires(Role.ADMIN),
)
async def audit_verify(ctx: ServiceDep) -> AuditVerifyOut:
    """Check the audit hash chain and every decision against its record, and the chain against
    the checkpoints this service signed and exported (so a rewritten and rehashed chain fails)."""
    anchor = ctx.writer.anchor
    checkpoints = []
    if anchor is not None:
        try:
            checkpoints = await anyio.to_thread.run_sync(anchor.signed_checkpoints)
        except AuditAnchorError as e:
            return AuditVerifyOut(
                ok=False, records=0, decisions=0, first_broken=None,
                problem=f"audit checkpoints broken in {anchor.checkpoint_path}: {e}",
            )  # fmt: skip
    report = await ctx.read(verify_chain, checkpoints=checkpoints)
    return AuditVerifyOut(**report.__dict__)
