"""Operations: liveness with what is being served, Prometheus metrics, the API description."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.scoring.access import public, requires
from server.scoring.api.routing import new_router
from server.scoring.apikeys import Role
from server.scoring.deps import ServiceDep
from server.scoring.payloads import HealthOut
from server.scoring.settings import STAGES

router = new_router()


@router.get("/healthz", response_model=HealthOut, tags=["operations"], openapi_extra=public())
async def healthz(ctx: ServiceDep) -> HealthOut:
    """Liveness plus what is being served."""
    stages: dict[str, str | None] = {}
    degraded = bool(ctx.registry.refused)
    for stage in STAGES:
        champion = ctx.registry.assignments[stage].champion_id
        loaded = champion if champion is not None and ctx.registry.has(champion) else None
        degraded = degraded or (champion is not None and loaded is None)
        stages[stage] = loaded
    return HealthOut(
        status="degraded" if degraded else "ok",
        stages=stages,
        refused_artifacts=len(ctx.registry.refused),
        write_backlog=ctx.writer.backlog,
    )


@router.get(
    "/metrics",
    tags=["operations"],
    response_class=Response,
    openapi_extra=requires(Role.VIEWER),
)
async def metrics(ctx: ServiceDep) -> Response:
    """Prometheus metrics: request counts and latencies, decisions by outcome, fraud hits."""
    ctx.metrics.write_backlog.set(ctx.writer.backlog)
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False, openapi_extra=requires(Role.VIEWER))
async def openapi_description(request: Request) -> dict[str, Any]:
    """The OpenAPI description (behind a key like every route but /healthz)."""
    description: dict[str, Any] = request.app.openapi()
    return description
