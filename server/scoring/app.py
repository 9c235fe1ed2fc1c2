"""FastAPI application factory of the scoring service: ``create_app(settings)`` with a lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fedrisk.errors import ArtifactError, DecisionError, FedRiskError
from server.scoring import store
from server.scoring.access import SECURITY_SCHEME
from server.scoring.api import ROUTERS
from server.scoring.context import ServiceContext
from server.scoring.dashboard.views import refused_page
from server.scoring.errors import ConflictError, InvalidInputError, NotFoundError, UnavailableError
from server.scoring.middleware import EdgeMiddleware
from server.scoring.settings import Settings
from server.scoring.startup import build_context
from server.scoring.telemetry import Metrics

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
"""How often the service checks the DB for model changes made by the CLI or another process."""


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
        ctx = await anyio.to_thread.run_sync(build_context, settings, metrics)
        app.state.ctx = ctx
        _tune_gc()
        poller = asyncio.create_task(_poll_models(ctx))
        try:
            yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            if ctx.service.vertical is not None:
                await ctx.service.vertical.aclose()
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
        # the API description is a guarded route of its own (api/operations.py); the Swagger and
        # ReDoc pages are left out: they load their scripts from a CDN and cannot send a key
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    _describe_security(app)
    app.state.metrics = metrics
    app.state.settings = settings
    _install_handlers(app)
    # Routes go straight onto the app: FastAPI 0.138 rebuilds the request handler of a route
    # that came through include_router() on every request (~0.2 ms of CPU each).
    for router in ROUTERS:
        app.router.routes.extend(router.routes)
    app.add_middleware(
        EdgeMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        insecure_dev=settings.insecure_dev,
    )
    return app


def _describe_security(app: FastAPI) -> None:
    """Declare the bearer API-key scheme the operations' ``security`` fields refer to."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # FastAPI's cached description; adding the scheme again is harmless
        schema.setdefault("components", {})["securitySchemes"] = {
            SECURITY_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key from `fedrisk serve keys create`, sent as "
                "`Authorization: Bearer <key>`",
            }
        }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # a person at a dashboard page gets a page saying why and where to sign in, with the
        # same status and headers an API client gets
        if exc.status_code in (401, 403) and request.url.path.startswith("/dashboard"):
            return refused_page(request, exc.status_code, str(exc.detail), exc.headers)
        return await http_exception_handler(request, exc)

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
        reason = exc.reason
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
