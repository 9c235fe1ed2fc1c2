"""Fixtures of the scoring-service tests: signed registries, real uvicorn servers, PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.artifacts import Signer, TrainedModel, build_registry, trained_model
from tests.support.postgres import PostgresServer, find_pg_bin, running_postgres
from tests.support.processes import ProcessRegistry, process_registry
from tests.support.scoring import STANDARD_MODELS, ScoringServer, start_server

__all__ = ["process_registry"]


@pytest.fixture(scope="session")
def trained() -> TrainedModel:
    """The small synthetic LR model every test artifact is built from (trained once)."""
    return trained_model()


@pytest.fixture
def registry_dir(tmp_path: Path, trained: TrainedModel) -> tuple[Path, Signer]:
    """A registry with a trusted signer and an A-, B- and C-card champion."""
    path = tmp_path / "registry"
    signer = build_registry(path, STANDARD_MODELS)
    return path, signer


@pytest.fixture
def server(
    tmp_path: Path, registry_dir: tuple[Path, Signer], process_registry: ProcessRegistry
) -> ScoringServer:
    """A fresh service with the standard registry and its own SQLite database."""
    return start_server(tmp_path, registry_dir[0], processes=process_registry)


@pytest.fixture(scope="module")
def shared_server(
    tmp_path_factory: pytest.TempPathFactory, trained: TrainedModel
) -> Iterator[ScoringServer]:
    """One service for a whole module of read-mostly tests (stopped by PID at module end)."""
    workdir = tmp_path_factory.mktemp("shared-server")
    registry = workdir / "registry"
    build_registry(registry, STANDARD_MODELS)
    started = start_server(workdir, registry)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for the session (skips without binaries, fails under CI)."""
    if find_pg_bin() is None:
        reason = (
            "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin "
            "(run tests/support/ensure_postgres.sh)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with running_postgres() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database URL: SQLite file, then a new database on the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'scoring.db'}"
    pg: PostgresServer = request.getfixturevalue("postgres")
    return pg.create_database()
