"""Decisions: A-card applications, B-card behaviour, C-card collections, stored decisions."""

from __future__ import annotations

from server.scoring import store
from server.scoring.access import requires
from server.scoring.api.routing import ERRORS, new_router
from server.scoring.apikeys import Role
from server.scoring.deps import ServiceDep
from server.scoring.payloads import (
    ApplicationRequest,
    ApplicationResponse,
    BehaviourRequest,
    BehaviourResponse,
    CollectionRequest,
    CollectionResponse,
    DecisionOut,
)

router = new_router()


@router.post(
    "/v1/applications/decision",
    response_model=ApplicationResponse,
    responses=ERRORS,
    tags=["decisions"],
    openapi_extra=requires(Role.SCORING),
)
async def application_decision(body: ApplicationRequest, ctx: ServiceDep) -> ApplicationResponse:
    """A-card: anti-fraud (rules + relationship graph), then PD, score, decision, limit, price
    tier and up to 4 reason codes. The decision and its audit record are committed first."""
    return await ctx.service.application(body)


@router.post(
    "/v1/accounts/behaviour",
    response_model=BehaviourResponse,
    responses=ERRORS,
    tags=["decisions"],
    openapi_extra=requires(Role.SCORING),
)
async def behaviour_decision(body: BehaviourRequest, ctx: ServiceDep) -> BehaviourResponse:
    """B-card: behaviour score and early warnings -> limit action raise / keep / cut / freeze."""
    return await ctx.service.behaviour(body)


@router.post(
    "/v1/collections/strategy",
    response_model=CollectionResponse,
    responses=ERRORS,
    tags=["decisions"],
    openapi_extra=requires(Role.SCORING),
)
async def collection_strategy(body: CollectionRequest, ctx: ServiceDep) -> CollectionResponse:
    """C-card: recovery probability -> segment and collection action."""
    return await ctx.service.collection(body)


@router.get(
    "/v1/decisions/{decision_id}",
    response_model=DecisionOut,
    responses=ERRORS,
    tags=["decisions"],
    openapi_extra=requires(Role.RISK_OFFICER),
)
async def get_decision(decision_id: str, ctx: ServiceDep) -> DecisionOut:
    """One persisted decision."""
    row = await ctx.read(store.get_decision, decision_id)
    return DecisionOut(**{k: v for k, v in row.items() if k in DecisionOut.model_fields})
