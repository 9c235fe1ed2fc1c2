"""Audit: checking the hash chain of every decision and change."""

from __future__ import annotations

from server.scoring.access import requires
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
    """Check the audit hash chain and every decision against its record."""
    report = await ctx.read(verify_chain)
    return AuditVerifyOut(**report.__dict__)
