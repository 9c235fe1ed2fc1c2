"""FastAPI application factory of the scoring service: ``create_app(settings)`` with a lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from fedrisk.decisions.fraud_graph import GraphConfig
from fedrisk.decisions.fraud_rules import RuleSet, load_default_rules, load_rules
from fedrisk.decisions.lifecycle import load_policy
from fedrisk.decisions.reasons import ReasonCodeTable
from fedrisk.errors import ArtifactError, DecisionError, FedRiskError
from server.scoring import store
from server.scoring.antifraud import FraudScreen, IdentifierHasher
from server.scoring.context import ServiceContext
from server.scoring.database import create_schema, default_db_url, fraud_list_entries, make_engine
from server.scoring.errors import ConflictError, InvalidInputError, NotFoundError, UnavailableError
from server.scoring.middleware import EdgeMiddleware
from server.scoring.payloads import FraudSignals
from server.scoring.registry import ModelRegistry, Refusal, classify_refusal
from server.scoring.routes import router
from server.scoring.service import ScoringService
from server.scoring.settings import DEFAULT_IDENTIFIER_KEY, Settings
from server.scoring.telemetry import Metrics
from server.scoring.writer import DecisionWrite, GroupCommitWriter

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
"""How often the service checks the DB for model changes made by the CLI or another process."""


def _load_rules(settings: Settings) -> RuleSet:
    return (
        load_default_rules()
        if settings.fraud_rules_path is None
        else load_rules(settings.fraud_rules_path)
    )


def _startup(settings: Settings, metrics: Metrics) -> ServiceContext:
    """Build every component; raises (and so stops start-up) on a bad policy or rules file."""
    policy = load_policy(settings.policy_path)
    rules = _load_rules(settings)
    reason_table = (
        None
        if settings.reason_table_path is None
        else ReasonCodeTable.from_toml(settings.reason_table_path)
    )
    key = settings.identifier_key.get_secret_value()
    if key == DEFAULT_IDENTIFIER_KEY:
        logger.warning(
            "identifier_key is the development default; set FEDRISK_IDENTIFIER_KEY in production"
        )
    hasher = IdentifierHasher(key.encode())
    db_url = settings.db_url or default_db_url(settings.registry_dir)
    engine = make_engine(db_url)
    create_schema(engine)
    writer: GroupCommitWriter | None = None
    try:
        with engine.connect() as connection:
            lists: dict[str, list[str]] = {}
            for row in connection.execute(
                select(fraud_list_entries.c.list_name, fraud_list_entries.c.value)
            ):
                lists.setdefault(row.list_name, []).append(row.value)
            links = store.iter_fraud_links(connection)
            registered = store.registered_model_stages(connection)
            digests = store.registered_digests(connection)
        screen = FraudScreen(
            rules,
            graph_config=GraphConfig(
                max_component_size=settings.graph_ring_size, hub_threshold=settings.graph_hub_degree
            ),
            hasher=hasher,
            lists={k: v for k, v in lists.items() if k in rules.external_lists},
            known_fields=FraudSignals.model_fields.keys(),
        )

        def on_failure(write: DecisionWrite) -> None:
            screen.forget_unpersisted(write.links)

        writer = GroupCommitWriter(engine, max_queue=settings.write_queue, on_failure=on_failure)
        n_apps = screen.rebuild(links, now=datetime.now(UTC))
        logger.info("relationship graph rebuilt from the store: %d applications", n_apps)
        registry = ModelRegistry(settings.registry_dir, reason_table=reason_table)
        registry.load_all()
        for reason in (r.reason for r in registry.refused.values()):
            metrics.refused_artifacts.labels(reason).inc()
        for model_id, model in list(registry.models.items()):
            stage = registered.get(model_id) or model.artifact.stage
            if model_id in registered:
                if digests.get(model_id) != model.artifact_sha256:
                    registry.models.pop(model_id)
                    message = f"artifact of {model_id} changed since it was registered"
                    registry.refused[model_id] = Refusal(
                        path=str(settings.registry_dir / model_id),
                        reason="tampered",
                        message=message,
                    )
                    logger.error("refused model artifact: %s", message)
                    metrics.refused_artifacts.labels("tampered").inc()
                continue
            if stage is None:
                logger.warning(
                    "model %s names no stage; register it with a stage to use it", model_id
                )
                continue
            writer.run_job_sync(
                functools.partial(
                    store.register_model,
                    model_id=model_id,
                    stage=stage,
                    artifact_sha256=model.artifact_sha256,
                    actor="startup",
                    note="found in the registry directory at start-up",
                )
            )
        ctx = ServiceContext(
            settings=settings,
            engine=engine,
            writer=writer,
            registry=registry,
            policy=policy,
            rules=rules,
            screen=screen,
            hasher=hasher,
            metrics=metrics,
            service=ScoringService(
                registry=registry,
                policy=policy,
                screen=screen,
                writer=writer,
                hasher=hasher,
                metrics=metrics,
            ),
        )
        ctx.refresh_models()
        return ctx
    except BaseException:
        if writer is not None:
            writer.close()
        engine.dispose()
        raise


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the request path.

    The service keeps a large, growing set of long-lived objects (models, the relationship
    graph, velocity history). With CPython's default thresholds, full collections walked all
    of them every few seconds and put 100+ ms stalls into the p99 of the decision endpoint.
    Start-up objects are frozen (never scanned again) and collections made rarer; reference
    counting still frees everything that is not in a cycle immediately.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)


async def _poll_models(ctx: ServiceContext) -> None:
    """Pick up registrations and promotions made outside this process (the CLI)."""
    while True:
        await asyncio.sleep(POLL_SECONDS)
        try:
            version = await ctx.read(store.assignments_version)
            if version != ctx.assignments_version:
                async with ctx.lock:
                    await anyio.to_thread.run_sync(ctx.refresh_models)
                logger.info(
                    "model assignments changed (version %d): reloaded", ctx.assignments_version
                )
        except Exception:  # keep polling through a transient DB error
            logger.exception("polling model assignments failed")


def create_app(settings: Settings) -> FastAPI:
    """Build the scoring service.

    Parameters
    ----------
    settings
        Registry, database, policy and rule files, limits.

    Returns
    -------
    FastAPI
        The app; components start in its lifespan (so importing costs nothing).
    """
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = await anyio.to_thread.run_sync(_startup, settings, metrics)
        app.state.ctx = ctx
        _tune_gc()
        poller = asyncio.create_task(_poll_models(ctx))
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            if ctx.writer.mode == "inline":
                ctx.writer.close()  # flushes on the loop that owns the waiting futures
            else:
                await anyio.to_thread.run_sync(ctx.writer.close)
            ctx.engine.dispose()

    app = FastAPI(
        title="fedrisk scoring service",
        version="1.0",
        description=(
            "Lender-facing credit decisions from federated, signed models: application (A-card), "
            "behaviour (B-card) and collection (C-card) scoring, anti-fraud, batch scoring, model "
            "registry with champion/challenger, manual-review queue and a hash-chained audit log."
        ),
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.settings = settings
    _install_handlers(app)
    # Routes go straight onto the app: FastAPI 0.138 rebuilds the request handler of a route
    # that came through include_router() on every request (~0.2 ms of CPU each).
    app.router.routes.extend(router.routes)
    app.add_middleware(
        EdgeMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    return app


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ConflictError)
    async def _conflict(_: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(InvalidInputError)
    async def _invalid(_: Request, exc: InvalidInputError) -> JSONResponse:
        return JSONResponse({"detail": exc.errors}, status_code=422)

    @app.exception_handler(UnavailableError)
    async def _unavailable(_: Request, exc: UnavailableError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(ArtifactError)
    async def _artifact(_: Request, exc: ArtifactError) -> JSONResponse:
        reason = classify_refusal(exc)
        logger.error("refused model artifact (%s): %s", reason, exc)
        app.state.metrics.refused_artifacts.labels(reason).inc()
        return JSONResponse({"detail": {"reason": reason, "message": str(exc)}}, status_code=422)

    @app.exception_handler(DecisionError)
    async def _decision(_: Request, exc: DecisionError) -> JSONResponse:
        return JSONResponse(
            {"detail": [{"type": "value_error", "loc": ["body"], "msg": str(exc)}]}, status_code=422
        )

    @app.exception_handler(FedRiskError)
    async def _fedrisk(_: Request, exc: FedRiskError) -> JSONResponse:
        return JSONResponse(
            {"detail": [{"type": "value_error", "loc": ["body"], "msg": str(exc)}]}, status_code=422
        )
