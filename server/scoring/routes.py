"""HTTP routes of the scoring service (``async def`` throughout; blocking work goes to threads)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import tempfile
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import UploadFile

from server.scoring import store
from server.scoring.audit import verify_chain
from server.scoring.batch import BatchPlan, UploadFormat, plan_batch, prefetched, stream_batch
from server.scoring.context import ServiceContext
from server.scoring.errors import ConflictError, InvalidInputError, NotFoundError
from server.scoring.payloads import (
    ApplicationRequest,
    ApplicationResponse,
    AuditVerifyOut,
    BehaviourRequest,
    BehaviourResponse,
    ClaimRequest,
    CollectionRequest,
    CollectionResponse,
    FeatureOut,
    HealthOut,
    HumanReviewRequest,
    ListOut,
    ListUpdate,
    ModelOut,
    ModelsOut,
    PromoteRequest,
    RefusalOut,
    RegisterModelRequest,
    RegisterModelResponse,
    ResolveRequest,
    ReviewListOut,
    ReviewOut,
    RollbackRequest,
    StageOut,
    Strict,
)
from server.scoring.registry import LoadedModel, describe_schema
from server.scoring.settings import STAGES, Stage
from server.scoring.store import Assignment, ReviewItem

logger = logging.getLogger(__name__)

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class _UnicodeSafeRequest(Request):
    """A request whose JSON body may not smuggle lone UTF-16 surrogates (``"\\ud800"``).

    ``json.loads`` accepts them, but they cannot be encoded as UTF-8, so they would fail later
    when stored or echoed (a 500). They are refused as malformed JSON (422) instead. The scan
    is a byte search; the full check runs only when a surrogate escape is present at all.
    """

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            value = json.loads(body)
            if _SURROGATE_ESCAPE.search(body):
                try:
                    json.dumps(value, ensure_ascii=False).encode("utf-8")
                except UnicodeEncodeError as e:
                    raise json.JSONDecodeError(
                        "strings must be valid Unicode; got a lone surrogate escape",
                        body.decode("utf-8", errors="replace"),
                        0,
                    ) from e
            self._json = value
        return self._json


class _UnicodeSafeRoute(APIRoute):
    """Route class that hands endpoints a :class:`_UnicodeSafeRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def safe_handler(request: Request) -> Response:
            return await handler(_UnicodeSafeRequest(request.scope, request.receive))

        return safe_handler


router = APIRouter(route_class=_UnicodeSafeRoute)

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown stage, model, decision or review item"},
    409: {"description": "Conflicts with the current state"},
    413: {"description": "Request body too large"},
    422: {"description": "Invalid input; `loc` names the field"},
    503: {"description": "No champion model for the stage, or the write queue is full"},
}
CSV_TYPES = {"text/csv", "application/csv", "text/plain"}
PARQUET_TYPES = {"application/vnd.apache.parquet", "application/x-parquet", "application/parquet"}


def _ctx(request: Request) -> ServiceContext:
    ctx: ServiceContext = request.app.state.ctx
    return ctx


def require_admin(request: Request) -> None:
    """When an admin token is configured, require ``Authorization: Bearer <token>``."""
    token = _ctx(request).settings.admin_token
    if token is None:
        return
    given = request.headers.get("authorization", "")
    expected = f"Bearer {token.get_secret_value()}"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status_code=401, detail="admin endpoints need Authorization: Bearer <token>"
        )


Admin = Annotated[None, Depends(require_admin)]


def _stage(value: str) -> Stage:
    for stage in STAGES:
        if stage == value:
            return stage
    raise NotFoundError(f"stage must be one of {list(STAGES)}; got {value!r}")


# ------------------------------------------------------------------------------ decisions
@router.post(
    "/v1/applications/decision",
    response_model=ApplicationResponse,
    responses=ERRORS,
    tags=["decisions"],
)
async def application_decision(body: ApplicationRequest, request: Request) -> ApplicationResponse:
    """A-card: anti-fraud (rules + relationship graph), then PD, score, decision, limit, price
    tier and up to 4 reason codes. The decision and its audit record are committed first."""
    return await _ctx(request).service.application(body)


@router.post(
    "/v1/accounts/behaviour", response_model=BehaviourResponse, responses=ERRORS, tags=["decisions"]
)
async def behaviour_decision(body: BehaviourRequest, request: Request) -> BehaviourResponse:
    """B-card: behaviour score and early warnings -> limit action raise / keep / cut / freeze."""
    return await _ctx(request).service.behaviour(body)


@router.post(
    "/v1/collections/strategy",
    response_model=CollectionResponse,
    responses=ERRORS,
    tags=["decisions"],
)
async def collection_strategy(body: CollectionRequest, request: Request) -> CollectionResponse:
    """C-card: recovery probability -> segment and collection action."""
    return await _ctx(request).service.collection(body)


class DecisionOut(Strict):
    """A stored decision (no request data: only its fingerprint)."""

    decision_id: str
    created_at: str
    stage: str
    fingerprint: str
    model_id: str
    role: str
    score: float | None
    probability: float | None
    outcome: str
    reasons: list[dict[str, Any]]
    rules_hit: list[str]
    details: dict[str, Any]


@router.get(
    "/v1/decisions/{decision_id}", response_model=DecisionOut, responses=ERRORS, tags=["decisions"]
)
async def get_decision(decision_id: str, request: Request) -> DecisionOut:
    """One persisted decision."""
    row = await _ctx(request).read(store.get_decision, decision_id)
    return DecisionOut(**{k: v for k, v in row.items() if k in DecisionOut.model_fields})


@router.post(
    "/v1/decisions/{decision_id}/human-review",
    response_model=ReviewOut,
    status_code=status.HTTP_201_CREATED,
    responses=ERRORS,
    tags=["reviews"],
)
async def request_human_review(
    decision_id: str, body: HumanReviewRequest, request: Request
) -> ReviewOut:
    """An applicant asks for a person to re-examine an automated decline; queued for review."""
    ctx = _ctx(request)
    item = await ctx.writer.run_job(
        lambda c, ch: store.request_human_review(c, ch, decision_id=decision_id, reason=body.reason)
    )
    return _review_out(item)


# ------------------------------------------------------------------------------ batch
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


async def _read_form(request: Request, *, max_files: int) -> Any:
    """Parse a multipart body; a malformed one is a 422 (the parser's errors are not all 400s)."""
    try:
        return await request.form(max_files=max_files, max_fields=5)
    except HTTPException:
        raise
    except Exception as e:  # python-multipart raises its own exception types for bad framing
        raise InvalidInputError(
            [{"type": "value_error", "loc": ["body"], "msg": f"multipart body is malformed: {e}"}]
        ) from e


def _format_of(content_type: str, filename: str = "") -> UploadFormat | None:
    if content_type in PARQUET_TYPES or filename.endswith((".parquet", ".pq")):
        return "parquet"
    if content_type in CSV_TYPES or filename.endswith(".csv"):
        return "csv"
    return None


async def _spool_upload(request: Request) -> tuple[Path, UploadFormat, str]:
    """Write the upload to a temp file while hashing it; never holds it in memory."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    digest = hashlib.sha256()
    handle = tempfile.NamedTemporaryFile(prefix="fedrisk-batch-", delete=False)  # noqa: SIM115
    path = Path(handle.name)
    try:
        if content_type == "multipart/form-data":
            form = await _read_form(request, max_files=1)
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidInputError(
                    [
                        {
                            "type": "missing",
                            "loc": ["body", "file"],
                            "msg": "multipart field file is required",
                        }
                    ]
                )
            fmt = (
                _format_of((upload.content_type or "").lower(), (upload.filename or "").lower())
                or "csv"
            )

            def copy() -> None:
                for block in iter(lambda: upload.file.read(1 << 20), b""):
                    digest.update(block)
                    handle.write(block)

            await anyio.to_thread.run_sync(copy)
            await form.close()
        else:
            chosen = _format_of(content_type)
            if chosen is None:
                raise InvalidInputError(
                    [
                        {
                            "type": "value_error",
                            "loc": ["header", "content-type"],
                            "msg": "content-type must be text/csv, "
                            "application/vnd.apache.parquet or multipart/form-data; "
                            f"got {content_type or 'none'}",
                        }
                    ]
                )
            fmt = chosen
            async for block in request.stream():
                digest.update(block)
                handle.write(block)
        handle.close()
        return path, fmt, digest.hexdigest()
    except BaseException:
        handle.close()
        path.unlink(missing_ok=True)
        raise


@router.post(
    "/v1/batch/{stage}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}}, "description": "Scored rows as CSV, streamed"},
        **ERRORS,
    },
    openapi_extra=_BATCH_BODY,
    tags=["batch"],
)
async def batch_score(
    stage: str,
    request: Request,
    reasons: Annotated[bool, Query(description="Add reason_1..reason_4 codes per row")] = False,
) -> StreamingResponse:
    """Score an uploaded CSV or Parquet file with the stage's champion; streams CSV back.

    One output row per input row: ``row``, the id column when present, ``pd``, ``score``, the
    stage's outcome columns, and ``error`` for rows that could not be scored.
    """
    ctx = _ctx(request)
    chosen = _stage(stage)
    model = ctx.registry.champion(chosen)
    path, fmt, sha = await _spool_upload(request)
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

    def on_done(done: BatchPlan, rows: int, errors: int, state: str) -> None:
        ctx.metrics.batch_rows.labels(done.stage).inc(rows)
        try:
            ctx.writer.submit_job_nowait(
                lambda c, ch: store.record_batch_job(
                    c, ch, job_id=job_id, stage=done.stage, model_id=done.model.model_id,
                    input_sha256=sha, rows=rows, errors=errors, status=state,
                )
            )  # fmt: skip
        except RuntimeError:
            logger.warning("batch job %s could not be recorded (writer busy or stopped)", job_id)

    stream = stream_batch(
        plan, application=ctx.policy.application, behaviour=ctx.policy.behaviour, on_done=on_done
    )
    return StreamingResponse(
        prefetched(stream),
        media_type="text/csv",
        headers={"X-Model-Id": model.model_id, "X-Batch-Job-Id": job_id, "X-Input-SHA256": sha},
    )


# ------------------------------------------------------------------------------ models
def _stage_out(a: Assignment) -> StageOut:
    return StageOut(
        stage=a.stage,
        champion_id=a.champion_id,
        challenger_id=a.challenger_id,
        challenger_share=a.challenger_share,
        history=list(a.history),
        version=a.version,
    )


def _model_out(ctx: ServiceContext, model: LoadedModel) -> ModelOut:
    placed = ctx.registry.role_of(model.model_id)
    stage = placed[0] if placed else model.artifact.stage
    share = (
        ctx.registry.assignments[placed[0]].challenger_share
        if placed and placed[1] == "challenger"
        else None
    )
    lineage = model.artifact.lineage.model_dump(mode="json")
    metrics = model.artifact.metrics
    return ModelOut(
        model_id=model.model_id,
        stage=stage,
        role=placed[1] if placed else None,
        challenger_share=share,
        signer=model.signer,
        artifact_sha256=model.artifact_sha256,
        scorecard=model.scaling.model_dump(),
        lineage=lineage,
        latest_auc=metrics[-1].auc if metrics else None,
        features=[FeatureOut(**f) for f in describe_schema(model.schema)],
    )


@router.get("/v1/models", response_model=ModelsOut, tags=["models"])
async def list_models(request: Request) -> ModelsOut:
    """Loaded models, the champion/challenger table per stage and refused artifacts."""
    ctx = _ctx(request)
    return ModelsOut(
        models=[
            _model_out(ctx, m)
            for m in sorted(ctx.registry.models.values(), key=lambda m: m.model_id)
        ],
        stages=[_stage_out(ctx.registry.assignments[s]) for s in STAGES],
        refused=[
            RefusalOut(path=r.path, reason=r.reason, message=r.message)
            for r in ctx.registry.refused.values()
        ],
    )


@router.get("/v1/models/{model_id}", response_model=ModelOut, responses=ERRORS, tags=["models"])
async def get_model(model_id: str, request: Request) -> ModelOut:
    """One loaded model."""
    ctx = _ctx(request)
    return _model_out(ctx, ctx.registry.get(model_id))


async def _apply_assignments(ctx: ServiceContext) -> None:
    assignments = await ctx.read(store.load_assignments)
    ctx.registry.set_assignments(assignments)
    ctx.assignments_version = await ctx.read(store.assignments_version)


async def _register(
    ctx: ServiceContext, model: LoadedModel, stage: Stage | None, actor: str, note: str
) -> RegisterModelResponse:
    declared = model.artifact.stage
    if stage is not None and declared is not None and stage != declared:
        raise InvalidInputError(
            [
                {
                    "type": "value_error",
                    "loc": ["body", "stage"],
                    "msg": f"stage must match the artifact's stage {declared}; got {stage}",
                }
            ]
        )
    chosen = stage or declared
    if chosen is None:
        raise InvalidInputError(
            [
                {
                    "type": "missing",
                    "loc": ["body", "stage"],
                    "msg": "stage is required: the artifact names none",
                }
            ]
        )
    assignment = await ctx.writer.run_job(
        lambda c, ch: store.register_model(
            c,
            ch,
            model_id=model.model_id,
            stage=chosen,
            artifact_sha256=model.artifact_sha256,
            actor=actor,
            note=note,
        )
    )
    ctx.registry.add(model)
    await _apply_assignments(ctx)
    logger.info("registered model %s for stage %s by %s", model.model_id, chosen, actor)
    return RegisterModelResponse(model=_model_out(ctx, model), stage=_stage_out(assignment))


@router.post(
    "/v1/models",
    response_model=RegisterModelResponse,
    status_code=status.HTTP_201_CREATED,
    responses=ERRORS,
    tags=["models"],
)
async def register_model(
    body: RegisterModelRequest, request: Request, _: Admin
) -> RegisterModelResponse:
    """Verify a signed artifact directory and register it for a stage (becomes champion when the
    stage has none). Unsigned, untrusted, tampered or incompatible artifacts are refused (422)
    and nothing already loaded changes."""
    ctx = _ctx(request)
    async with ctx.lock:
        model, _path = await anyio.to_thread.run_sync(ctx.registry.install, Path(body.source_dir))
        return await _register(ctx, model, body.stage, body.actor, body.note)


@router.post(
    "/v1/models/upload",
    response_model=RegisterModelResponse,
    status_code=status.HTTP_201_CREATED,
    responses=ERRORS,
    tags=["models"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "artifact": {"type": "string", "format": "binary"},
                            "signature": {"type": "string", "format": "binary"},
                            "stage": {"type": "string", "enum": list(STAGES)},
                            "actor": {"type": "string", "maxLength": 200},
                        },
                        "required": ["artifact", "signature"],
                    }
                }
            },
        }
    },
)
async def upload_model(request: Request, _: Admin) -> RegisterModelResponse:
    """Upload ``artifact.json`` + ``artifact.sig`` (multipart ``artifact``, ``signature``)."""
    ctx = _ctx(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise InvalidInputError(
            [
                {
                    "type": "value_error",
                    "loc": ["header", "content-type"],
                    "msg": "content-type must be multipart/form-data",
                }
            ]
        )
    form = await _read_form(request, max_files=2)
    try:
        parts: dict[str, bytes] = {}
        for name in ("artifact", "signature"):
            value = form.get(name)
            if not isinstance(value, UploadFile):
                raise InvalidInputError(
                    [
                        {
                            "type": "missing",
                            "loc": ["body", name],
                            "msg": f"file field {name} is required",
                        }
                    ]
                )
            parts[name] = await value.read()
        stage_raw = form.get("stage")
        stage = None if stage_raw in (None, "") else _stage_form(stage_raw)
        actor_raw = form.get("actor")
        actor = actor_raw[:200] if isinstance(actor_raw, str) and actor_raw else "api"
    finally:
        await form.close()
    async with ctx.lock:
        model, _path = await anyio.to_thread.run_sync(
            ctx.registry.install_upload, parts["artifact"], parts["signature"]
        )
        return await _register(ctx, model, stage, actor, "uploaded")


def _stage_form(value: object) -> Stage:
    for stage in STAGES:
        if stage == value:
            return stage
    raise InvalidInputError(
        [{"type": "enum", "loc": ["body", "stage"], "msg": f"stage must be one of {list(STAGES)}"}]
    )


@router.post(
    "/v1/models/{model_id}/promote", response_model=StageOut, responses=ERRORS, tags=["models"]
)
async def promote_model(
    model_id: str, body: PromoteRequest, request: Request, _: Admin
) -> StageOut:
    """Make a loaded model its stage's champion (the old one can be rolled back to) or its
    challenger with a traffic share. Recorded in the DB and the audit log."""
    ctx = _ctx(request)
    model = ctx.registry.get(model_id)
    async with ctx.lock:
        if body.role == "challenger":
            placed = ctx.registry.role_of(model_id)
            stage = placed[0] if placed else model.artifact.stage
            champion_id = ctx.registry.assignments[stage].champion_id if stage else None
            champion = ctx.registry.models.get(champion_id) if champion_id else None
            if champion is not None and champion.schema.feature_names != model.schema.feature_names:
                raise ConflictError(
                    f"challenger {model_id} must take the champion's features "
                    f"{champion.schema.feature_names}; got {model.schema.feature_names}"
                )
        shares = {s: ctx.settings.share_for(s) for s in STAGES}
        assignment = await ctx.writer.run_job(
            lambda c, ch: store.promote_model(
                c,
                ch,
                model_id=model_id,
                role=body.role,
                share=body.share,
                default_shares=shares,
                actor=body.actor,
                note=body.note,
            )
        )
        await _apply_assignments(ctx)
    logger.info("promoted %s to %s of %s by %s", model_id, body.role, assignment.stage, body.actor)
    return _stage_out(assignment)


@router.get("/v1/stages/{stage}", response_model=StageOut, responses=ERRORS, tags=["models"])
async def get_stage(stage: str, request: Request) -> StageOut:
    """Champion, challenger, share and rollback history of a stage."""
    return _stage_out(_ctx(request).registry.assignments[_stage(stage)])


@router.post(
    "/v1/stages/{stage}/rollback", response_model=StageOut, responses=ERRORS, tags=["models"]
)
async def rollback_stage(stage: str, body: RollbackRequest, request: Request, _: Admin) -> StageOut:
    """Restore the champion that preceded the current one."""
    ctx = _ctx(request)
    chosen = _stage(stage)
    history = ctx.registry.assignments[chosen].history
    if history and history[-1] not in ctx.registry.models:
        raise ConflictError(f"cannot roll back {chosen} to {history[-1]}: that model is not loaded")
    async with ctx.lock:
        assignment = await ctx.writer.run_job(
            lambda c, ch: store.rollback_stage(
                c, ch, stage=chosen, actor=body.actor, note=body.note
            )
        )
        await _apply_assignments(ctx)
    logger.info("rolled back %s to %s by %s", chosen, assignment.champion_id, body.actor)
    return _stage_out(assignment)


@router.post(
    "/v1/stages/{stage}/challenger/stop", response_model=StageOut, responses=ERRORS, tags=["models"]
)
async def stop_challenger(
    stage: str, body: RollbackRequest, request: Request, _: Admin
) -> StageOut:
    """End the stage's challenger experiment (all traffic to the champion)."""
    ctx = _ctx(request)
    chosen = _stage(stage)
    async with ctx.lock:
        assignment = await ctx.writer.run_job(
            lambda c, ch: store.clear_challenger(
                c, ch, stage=chosen, actor=body.actor, note=body.note
            )
        )
        await _apply_assignments(ctx)
    return _stage_out(assignment)


class ModelEventOut(Strict):
    """One registration, promotion or rollback."""

    event_id: int
    created_at: str
    stage: str
    action: str
    model_id: str | None
    previous_model_id: str | None
    actor: str
    note: str


@router.get("/v1/model-events", response_model=list[ModelEventOut], tags=["models"])
async def model_events(
    request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[ModelEventOut]:
    """Most recent registrations, promotions and rollbacks first."""
    events = await _ctx(request).read(store.list_model_events, limit=limit)
    return [ModelEventOut(**e.__dict__) for e in events]


# ------------------------------------------------------------------------------ reviews
def _review_out(item: ReviewItem) -> ReviewOut:
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


@router.get("/v1/reviews", response_model=ReviewListOut, tags=["reviews"])
async def list_reviews(
    request: Request,
    _: Admin,
    status_: Annotated[Literal["open", "claimed", "resolved"] | None, Query(alias="status")] = None,
    kind: Literal["manual_review", "fraud", "human_review_request"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> ReviewListOut:
    """Review queue in arrival order; filter by status and kind, page with ``after``."""
    items = await _ctx(request).read(
        store.list_reviews, status=status_, kind=kind, limit=limit, after_id=after
    )
    return ReviewListOut(
        items=[_review_out(i) for i in items],
        next_after=items[-1].item_id if len(items) == limit else None,
    )


ItemId = Annotated[int, PathParam(ge=1, le=2**62)]


@router.get("/v1/reviews/{item_id}", response_model=ReviewOut, responses=ERRORS, tags=["reviews"])
async def get_review(item_id: ItemId, request: Request, _: Admin) -> ReviewOut:
    """One review item."""
    return _review_out(await _ctx(request).read(store.get_review, item_id))


@router.post(
    "/v1/reviews/{item_id}/claim", response_model=ReviewOut, responses=ERRORS, tags=["reviews"]
)
async def claim_review(
    item_id: ItemId, body: ClaimRequest, request: Request, _: Admin
) -> ReviewOut:
    """A reviewer takes an open item (idempotent for the same reviewer)."""
    item = await _ctx(request).writer.run_job(
        lambda c, ch: store.claim_review(c, ch, item_id=item_id, reviewer=body.reviewer)
    )
    return _review_out(item)


@router.post(
    "/v1/reviews/{item_id}/resolve", response_model=ReviewOut, responses=ERRORS, tags=["reviews"]
)
async def resolve_review(
    item_id: ItemId, body: ResolveRequest, request: Request, _: Admin
) -> ReviewOut:
    """The claiming reviewer closes the item with a resolution and a note."""
    item = await _ctx(request).writer.run_job(
        lambda c, ch: store.resolve_review(
            c,
            ch,
            item_id=item_id,
            reviewer=body.reviewer,
            resolution=body.resolution,
            note=body.note,
        )
    )
    return _review_out(item)


# ------------------------------------------------------------------------------ fraud lists
@router.get("/v1/fraud/lists", response_model=list[ListOut], tags=["fraud"])
async def fraud_lists(request: Request, _: Admin) -> list[ListOut]:
    """External lists of the rule set (e.g. blacklists) and their sizes."""
    ctx = _ctx(request)
    return [
        ListOut(name=name, size=len(values)) for name, values in sorted(ctx.screen.lists.items())
    ]


@router.post("/v1/fraud/lists/{name}", response_model=ListOut, responses=ERRORS, tags=["fraud"])
async def update_fraud_list(name: str, body: ListUpdate, request: Request, _: Admin) -> ListOut:
    """Add or remove values of an external list; takes effect for the next application."""
    ctx = _ctx(request)
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


# ------------------------------------------------------------------------------ operations
@router.get("/v1/audit/verify", response_model=AuditVerifyOut, tags=["operations"])
async def audit_verify(request: Request, _: Admin) -> AuditVerifyOut:
    """Check the audit hash chain and every decision against its record."""
    report = await _ctx(request).read(verify_chain)
    return AuditVerifyOut(**report.__dict__)


@router.get("/healthz", response_model=HealthOut, tags=["operations"])
async def healthz(request: Request) -> HealthOut:
    """Liveness plus what is being served."""
    ctx = _ctx(request)
    stages: dict[str, str | None] = {}
    degraded = bool(ctx.registry.refused)
    for stage in STAGES:
        champion = ctx.registry.assignments[stage].champion_id
        loaded = champion if champion in ctx.registry.models else None
        degraded = degraded or (champion is not None and loaded is None)
        stages[stage] = loaded
    return HealthOut(
        status="degraded" if degraded else "ok",
        stages=stages,
        refused_artifacts=len(ctx.registry.refused),
        write_backlog=ctx.writer.backlog,
    )


@router.get("/metrics", tags=["operations"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: request counts and latencies, decisions by outcome, fraud hits."""
    ctx = _ctx(request)
    ctx.metrics.write_backlog.set(ctx.writer.backlog)
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)
