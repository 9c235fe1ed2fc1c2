"""Loan purposes: classify a decision's description (unsure ones join the review queue), retrain
with reviewers' corrections."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import status

from server.scoring import purpose
from server.scoring.access import requires
from server.scoring.api.routing import ERRORS, new_router
from server.scoring.apikeys import Role
from server.scoring.deps import ServiceDep
from server.scoring.errors import ConflictError
from server.scoring.payloads import PurposeOut, PurposeRequest, PurposeTrainingOut

router = new_router()


def _require_purpose(ctx: Any) -> None:
    if ctx.settings.purpose_examples_path is None:
        # 409, not 503: retrying will not help until an operator configures it
        raise ConflictError(
            "purpose classification must be configured (purpose_examples_path / "
            "FEDRISK_PURPOSE_EXAMPLES_PATH); got none"
        )


@router.post(
    "/v1/decisions/{decision_id}/purpose",
    response_model=PurposeOut,
    status_code=status.HTTP_201_CREATED,
    responses=ERRORS,
    tags=["purpose"],
    openapi_extra=requires(Role.SCORING),
)
async def classify_purpose(decision_id: str, body: PurposeRequest, ctx: ServiceDep) -> PurposeOut:
    """Read the loan purpose from the description; an unsure one is queued for a reviewer."""
    _require_purpose(ctx)
    classifier = ctx.purpose
    assert classifier is not None  # trained at start-up whenever examples are configured
    record = await ctx.writer.run_job(
        lambda c, ch: purpose.classify_and_record(
            c, ch, classifier, decision_id=decision_id, text=body.text
        )
    )
    return PurposeOut(**record.__dict__)


@router.post(
    "/v1/purpose/retrain",
    response_model=PurposeTrainingOut,
    responses=ERRORS,
    tags=["purpose"],
    openapi_extra=requires(Role.ADMIN),
)
async def retrain_purpose(ctx: ServiceDep) -> PurposeTrainingOut:
    """Train again on the examples plus every correction so far; later requests use it."""
    _require_purpose(ctx)
    trained = await anyio.to_thread.run_sync(
        purpose.train_purpose_classifier, ctx.engine, ctx.settings
    )
    ctx.purpose = trained.classifier
    return PurposeTrainingOut(examples=trained.examples, corrections=trained.corrections)
