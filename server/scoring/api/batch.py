"""Batch scoring: a CSV or Parquet upload scored by a stage's champion, streamed back as CSV."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Annotated

import anyio
from fastapi import Query, Request
from fastapi.responses import StreamingResponse

from server.scoring import store
from server.scoring.access import requires
from server.scoring.api.routing import ERRORS, new_router
from server.scoring.api.uploads import spool_upload
from server.scoring.apikeys import Role
from server.scoring.batch import BatchPlan, plan_batch, prefetched, stream_batch
from server.scoring.context import ServiceContext
from server.scoring.deps import ServiceDep, stage_of_path

logger = logging.getLogger(__name__)

router = new_router()

_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "description": "Rows to score: CSV with a header, Parquet, or multipart field `file`.",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


def _job_recorder(
    ctx: ServiceContext, *, job_id: str, input_sha256: str
) -> Callable[[BatchPlan, int, int, str], None]:
    """Callback of a finished stream: counts the rows and records the job with its audit record."""

    def on_done(done: BatchPlan, rows: int, errors: int, state: str) -> None:
        ctx.metrics.batch_rows.labels(done.stage).inc(rows)
        try:
            ctx.writer.submit_job_nowait(
                lambda c, ch: store.record_batch_job(
                    c, ch, job_id=job_id, stage=done.stage, model_id=done.model.model_id,
                    input_sha256=input_sha256, rows=rows, errors=errors, status=state,
                )
            )  # fmt: skip
        except RuntimeError:
            logger.warning("batch job %s could not be recorded (writer busy or stopped)", job_id)

    return on_done


@router.post(
    "/v1/batch/{stage}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}}, "description": "Scored rows as CSV, streamed"},
        **ERRORS,
    },
    openapi_extra=requires(Role.SCORING, _BATCH_BODY),
    tags=["batch"],
)
async def batch_score(
    stage: str,
    request: Request,
    ctx: ServiceDep,
    reasons: Annotated[bool, Query(description="Add reason_1..reason_4 codes per row")] = False,
) -> StreamingResponse:
    """Score an uploaded CSV or Parquet file with the stage's champion; streams CSV back.

    One output row per input row: ``row``, the id column when present, ``pd``, ``score``, the
    stage's outcome columns, and ``error`` for rows that could not be scored.
    """
    chosen = stage_of_path(stage)
    model = ctx.registry.champion(chosen)
    path, fmt, sha = await spool_upload(request)
    try:
        plan = await anyio.to_thread.run_sync(
            lambda: plan_batch(
                stage=chosen,
                model=model,
                path=path,
                fmt=fmt,
                chunk_rows=ctx.settings.batch_chunk_rows,
                with_reasons=reasons,
            )
        )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    job_id = uuid.uuid4().hex
    stream = stream_batch(
        plan,
        application=ctx.policy.application,
        behaviour=ctx.policy.behaviour,
        on_done=_job_recorder(ctx, job_id=job_id, input_sha256=sha),
    )
    return StreamingResponse(
        prefetched(stream),
        media_type="text/csv",
        headers={"X-Model-Id": model.model_id, "X-Batch-Job-Id": job_id, "X-Input-SHA256": sha},
    )
