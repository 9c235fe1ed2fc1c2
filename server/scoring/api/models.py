"""Model registry: loaded models, registering signed artifacts, promotions, the change log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import Query, Request, status
from starlette.datastructures import UploadFile

from server.scoring import store
from server.scoring.access import requires
from server.scoring.api.routing import ERRORS, new_router
from server.scoring.api.stages import stage_out
from server.scoring.api.uploads import content_type, read_form
from server.scoring.apikeys import Role
from server.scoring.context import ServiceContext
from server.scoring.deps import ServiceDep
from server.scoring.errors import ConflictError, InvalidInputError
from server.scoring.payloads import (
    FeatureOut,
    ModelEventOut,
    ModelOut,
    ModelsOut,
    PromoteRequest,
    RefusalOut,
    RegisterModelRequest,
    RegisterModelResponse,
    StageOut,
)
from server.scoring.registry import LoadedModel, describe_schema
from server.scoring.settings import STAGES, Stage, stage_named
from server.scoring.vertical_models import VerticalModel

logger = logging.getLogger(__name__)

router = new_router()

_UPLOAD_BODY = {
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
}


def model_out(ctx: ServiceContext, model: LoadedModel | VerticalModel) -> ModelOut:
    """API form of a loaded model, with its current stage and role.

    A vertical model's lineage names its guest and hosts; its AUC is the guest's encrypted
    validation AUC of the released epoch.
    """
    placed = ctx.registry.role_of(model.model_id)
    share = (
        ctx.registry.assignments[placed[0]].challenger_share
        if placed and placed[1] == "challenger"
        else None
    )
    lineage: dict[str, object]
    stage: Stage | None
    if isinstance(model, VerticalModel):
        stage = placed[0] if placed else model.stage
        lineage = {"vertical": {"guest": model.part.party, "hosts": model.hosts}}
        latest_auc = model.part.metrics.get("valid_auc")
    else:
        stage = placed[0] if placed else model.artifact.stage
        lineage = model.artifact.lineage.model_dump(mode="json")
        metrics = model.artifact.metrics
        latest_auc = metrics[-1].auc if metrics else None
    return ModelOut(
        model_id=model.model_id,
        stage=stage,
        role=placed[1] if placed else None,
        challenger_share=share,
        signer=model.signer,
        artifact_sha256=model.artifact_sha256,
        scorecard=model.scaling.model_dump(),
        lineage=lineage,
        latest_auc=latest_auc,
        features=[FeatureOut(**f) for f in describe_schema(model.schema)],
    )


@router.get(
    "/v1/models", response_model=ModelsOut, tags=["models"], openapi_extra=requires(Role.VIEWER)
)
async def list_models(ctx: ServiceDep) -> ModelsOut:
    """Loaded models, the champion/challenger table per stage and refused artifacts."""
    loaded: list[LoadedModel | VerticalModel] = [
        *ctx.registry.models.values(),
        *ctx.registry.vertical.values(),
    ]
    return ModelsOut(
        models=[model_out(ctx, m) for m in sorted(loaded, key=lambda m: m.model_id)],
        stages=[stage_out(ctx.registry.assignments[s]) for s in STAGES],
        refused=[
            RefusalOut(path=r.path, reason=r.reason, message=r.message)
            for r in ctx.registry.refused.values()
        ],
    )


@router.get(
    "/v1/models/{model_id}",
    response_model=ModelOut,
    responses=ERRORS,
    tags=["models"],
    openapi_extra=requires(Role.VIEWER),
)
async def get_model(model_id: str, ctx: ServiceDep) -> ModelOut:
    """One loaded model."""
    vertical = ctx.registry.vertical.get(model_id)
    return model_out(ctx, vertical or ctx.registry.get(model_id))


def _registration_stage(model: LoadedModel, requested: Stage | None) -> Stage:
    """The stage a model is registered for: the requested one, which must match the artifact's."""
    declared = model.artifact.stage
    if requested is not None and declared is not None and requested != declared:
        raise InvalidInputError(
            [
                {
                    "type": "value_error",
                    "loc": ["body", "stage"],
                    "msg": f"stage must match the artifact's stage {declared}; got {requested}",
                }
            ]
        )
    chosen = requested or declared
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
    return chosen


async def _register(
    ctx: ServiceContext, model: LoadedModel, stage: Stage | None, *, actor: str, note: str
) -> RegisterModelResponse:
    """Record an installed model for its stage, then serve it."""
    chosen = _registration_stage(model, stage)
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
    await ctx.reload_assignments()
    logger.info("registered model %s for stage %s by %s", model.model_id, chosen, actor)
    return RegisterModelResponse(model=model_out(ctx, model), stage=stage_out(assignment))


@router.post(
    "/v1/models",
    response_model=RegisterModelResponse,
    status_code=status.HTTP_201_CREATED,
    responses=ERRORS,
    tags=["models"],
    openapi_extra=requires(Role.ADMIN),
)
async def register_model(body: RegisterModelRequest, ctx: ServiceDep) -> RegisterModelResponse:
    """Verify a signed artifact directory and register it for a stage (becomes champion when the
    stage has none). Unsigned, untrusted, tampered or incompatible artifacts are refused (422)
    and nothing already loaded changes."""
    async with ctx.lock:
        model, _path = await anyio.to_thread.run_sync(ctx.registry.install, Path(body.source_dir))
        return await _register(ctx, model, body.stage, actor=body.actor, note=body.note)


def _form_stage(value: object) -> Stage | None:
    """The optional ``stage`` field of an upload form."""
    if value in (None, ""):
        return None
    stage = stage_named(value)
    if stage is None:
        raise InvalidInputError(
            [
                {
                    "type": "enum",
                    "loc": ["body", "stage"],
                    "msg": f"stage must be one of {list(STAGES)}",
                }
            ]
        )
    return stage


async def _read_artifact_form(request: Request) -> tuple[dict[str, bytes], Stage | None, str]:
    """The ``artifact`` and ``signature`` files, the stage and the actor of an upload form."""
    if content_type(request) != "multipart/form-data":
        raise InvalidInputError(
            [
                {
                    "type": "value_error",
                    "loc": ["header", "content-type"],
                    "msg": "content-type must be multipart/form-data",
                }
            ]
        )
    form = await read_form(request, max_files=2)
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
        stage = _form_stage(form.get("stage"))
        actor_raw = form.get("actor")
        actor = actor_raw[:200] if isinstance(actor_raw, str) and actor_raw else "api"
    finally:
        await form.close()
    return parts, stage, actor


@router.post(
    "/v1/models/upload",
    response_model=RegisterModelResponse,
    status_code=status.HTTP_201_CREATED,
    responses=ERRORS,
    tags=["models"],
    openapi_extra=requires(Role.ADMIN, _UPLOAD_BODY),
)
async def upload_model(request: Request, ctx: ServiceDep) -> RegisterModelResponse:
    """Upload ``artifact.json`` + ``artifact.sig`` (multipart ``artifact``, ``signature``)."""
    parts, stage, actor = await _read_artifact_form(request)
    async with ctx.lock:
        model, _path = await anyio.to_thread.run_sync(
            ctx.registry.install_upload, parts["artifact"], parts["signature"]
        )
        return await _register(ctx, model, stage, actor=actor, note="uploaded")


def _check_challenger_features(ctx: ServiceContext, model: LoadedModel) -> None:
    """A challenger must take the same features as its stage's champion."""
    placed = ctx.registry.role_of(model.model_id)
    stage = placed[0] if placed else model.artifact.stage
    champion_id = ctx.registry.assignments[stage].champion_id if stage else None
    champion = ctx.registry.models.get(champion_id) if champion_id else None
    if champion is not None and champion.schema.feature_names != model.schema.feature_names:
        raise ConflictError(
            f"challenger {model.model_id} must take the champion's features "
            f"{champion.schema.feature_names}; got {model.schema.feature_names}"
        )


@router.post(
    "/v1/models/{model_id}/promote",
    response_model=StageOut,
    responses=ERRORS,
    tags=["models"],
    openapi_extra=requires(Role.ADMIN),
)
async def promote_model(model_id: str, body: PromoteRequest, ctx: ServiceDep) -> StageOut:
    """Make a loaded model its stage's champion (the old one can be rolled back to) or its
    challenger with a traffic share. Recorded in the DB and the audit log."""
    # A vertical model (guest part) takes other features than a whole one by design: its hosts
    # hold the rest, so it is not held to the champion's features.
    model = None if model_id in ctx.registry.vertical else ctx.registry.get(model_id)
    async with ctx.lock:
        if body.role == "challenger" and model is not None:
            _check_challenger_features(ctx, model)
        shares = ctx.settings.default_shares()
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
        await ctx.reload_assignments()
    logger.info("promoted %s to %s of %s by %s", model_id, body.role, assignment.stage, body.actor)
    return stage_out(assignment)


@router.get(
    "/v1/model-events",
    response_model=list[ModelEventOut],
    tags=["models"],
    openapi_extra=requires(Role.VIEWER),
)
async def model_events(
    ctx: ServiceDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[ModelEventOut]:
    """Most recent registrations, promotions and rollbacks first."""
    events = await ctx.read(store.list_model_events, limit=limit)
    return [ModelEventOut(**e.__dict__) for e in events]
