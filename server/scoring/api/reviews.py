"""Review queue: applicants' requests for human review, and reviewers claiming and resolving."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path as PathParam
from fastapi import Query, status

from server.scoring import purpose, store
from server.scoring.access import requires
from server.scoring.api.routing import ERRORS, new_router
from server.scoring.apikeys import Role
from server.scoring.deps import ServiceDep
from server.scoring.payloads import (
    ClaimRequest,
    HumanReviewRequest,
    ResolveRequest,
    ReviewListOut,
    ReviewOut,
)
from server.scoring.store import ReviewItem

router = new_router()

ItemId = Annotated[int, PathParam(ge=1, le=2**62)]


def review_out(item: ReviewItem) -> ReviewOut:
    """API form of a review item."""
    return ReviewOut(
        item_id=item.item_id,
        decision_id=item.decision_id,
        stage=item.stage,
        kind=item.kind,
        status=item.status,
        reason=item.reason,
        created_at=item.created_at,
        reviewer=item.reviewer,
        claimed_at=item.claimed_at,
        resolved_at=item.resolved_at,
        resolution=item.resolution,
        note=item.note,
        decision_outcome=item.decision.get("outcome"),
        decision_score=item.decision.get("score"),
    )


@router.post(
    "/v1/decisions/{decision_id}/human-review",
    response_model=ReviewOut,
    status_code=status.HTTP_201_CREATED,
    responses=ERRORS,
    tags=["reviews"],
    openapi_extra=requires(Role.SCORING),
)
async def request_human_review(
    decision_id: str, body: HumanReviewRequest, ctx: ServiceDep
) -> ReviewOut:
    """An applicant asks for a person to re-examine an automated decline; queued for review."""
    item = await ctx.writer.run_job(
        lambda c, ch: store.request_human_review(c, ch, decision_id=decision_id, reason=body.reason)
    )
    return review_out(item)


@router.get(
    "/v1/reviews",
    response_model=ReviewListOut,
    responses=ERRORS,
    tags=["reviews"],
    openapi_extra=requires(Role.RISK_OFFICER),
)
async def list_reviews(
    ctx: ServiceDep,
    status_: Annotated[Literal["open", "claimed", "resolved"] | None, Query(alias="status")] = None,
    kind: Literal["manual_review", "fraud", "human_review_request", "purpose_label"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> ReviewListOut:
    """Review queue in arrival order; filter by status and kind, page with ``after``."""
    items = await ctx.read(
        store.list_reviews, status=status_, kind=kind, limit=limit, after_id=after
    )
    return ReviewListOut(
        items=[review_out(i) for i in items],
        next_after=items[-1].item_id if len(items) == limit else None,
    )


@router.get(
    "/v1/reviews/{item_id}",
    response_model=ReviewOut,
    responses=ERRORS,
    tags=["reviews"],
    openapi_extra=requires(Role.RISK_OFFICER),
)
async def get_review(item_id: ItemId, ctx: ServiceDep) -> ReviewOut:
    """One review item."""
    return review_out(await ctx.read(store.get_review, item_id))


@router.post(
    "/v1/reviews/{item_id}/claim",
    response_model=ReviewOut,
    responses=ERRORS,
    tags=["reviews"],
    openapi_extra=requires(Role.RISK_OFFICER),
)
async def claim_review(item_id: ItemId, body: ClaimRequest, ctx: ServiceDep) -> ReviewOut:
    """A reviewer takes an open item (idempotent for the same reviewer)."""
    item = await ctx.writer.run_job(
        lambda c, ch: store.claim_review(c, ch, item_id=item_id, reviewer=body.reviewer)
    )
    return review_out(item)


@router.post(
    "/v1/reviews/{item_id}/resolve",
    response_model=ReviewOut,
    responses=ERRORS,
    tags=["reviews"],
    openapi_extra=requires(Role.RISK_OFFICER),
)
async def resolve_review(item_id: ItemId, body: ResolveRequest, ctx: ServiceDep) -> ReviewOut:
    """The claiming reviewer closes the item with a resolution and a note; a loan-purpose item
    takes ``relabel`` with the right ``label`` (or ``no_action`` to keep the model's guess)."""
    item = await ctx.writer.run_job(
        lambda c, ch: purpose.resolve_review_item(
            c,
            ch,
            item_id=item_id,
            reviewer=body.reviewer,
            resolution=body.resolution,
            note=body.note,
            label=body.label,
        )
    )
    return review_out(item)
