"""Fixtures of the scoring-service tests: signed registries, real uvicorn servers, PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.artifacts import (
    Signer,
    TrainedModel,
    application_body,
    build_registry,
    features_of,
    trained_model,
)
from tests.support.postgres import PostgresServer, find_pg_bin, running_postgres
from tests.support.processes import (
    ProcessRegistry,
    free_port,
    process_registry,
    read_log,
    start_process,
    stop_pid,
    wait_for,
)

__all__ = ["process_registry"]

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 90.0
STANDARD_MODELS = {"acard-v1": "application", "bcard-v1": "behaviour", "ccard-v1": "collection"}


@dataclass
class ScoringServer:
    """A real ``fedrisk`` scoring service (uvicorn subprocess) on 127.0.0.1."""

    port: int
    pid: int
    registry: Path
    db_url: str
    log_path: Path
    processes: ProcessRegistry | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client bound to the server (10 s timeout)."""
        return httpx.Client(base_url=self.base_url, timeout=kwargs.pop("timeout", 10.0), **kwargs)

    def log(self) -> str:
        return read_log(self.log_path)

    def stop(self) -> None:
        """Stop the server by PID (idempotent)."""
        stop_pid(self.pid)


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def start_server(
    workdir: Path,
    registry: Path,
    *,
    db_url: str | None = None,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    processes: ProcessRegistry | None = None,
) -> ScoringServer:
    """Start ``python -m server.scoring serve`` on a free port and wait for /healthz.

    The PID is tracked in ``processes`` (stopped at teardown even on failure) when given;
    otherwise the caller must call :meth:`ScoringServer.stop`.
    """
    port = free_port()
    db = db_url or f"sqlite:///{workdir / 'scoring.db'}"
    log_path = workdir / f"server-{port}.log"
    argv = [
        sys.executable, "-m", "server.scoring", "serve",
        "--registry", str(registry), "--db", db,
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "info", *args,
    ]  # fmt: skip
    proc = start_process(
        argv,
        log_path=log_path,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    if processes is not None:
        processes.track(proc.pid)
    server = ScoringServer(port, proc.pid, registry, db, log_path, processes)
    try:
        wait_for(
            lambda: proc.poll() is not None or _healthy(port),
            timeout=START_TIMEOUT_S,
            what="scoring server start",
        )
    except TimeoutError:
        stop_pid(proc.pid)
        raise AssertionError(f"server did not start:\n{read_log(log_path)[-4000:]}") from None
    if proc.poll() is not None:
        raise AssertionError(f"server exited with {proc.returncode}:\n{read_log(log_path)[-4000:]}")
    return server


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


def sample_features(trained: TrainedModel, index: int = 0) -> dict[str, Any]:
    """JSON-ready features of one held-out synthetic row."""
    return features_of(trained.sample.iloc[index % len(trained.sample)], trained.schema)


def application(
    trained: TrainedModel, n: int, *, prefix: str = "app", **signals: Any
) -> dict[str, Any]:
    """An A-card request body with unique ids ``{prefix}-{n}``."""
    return application_body(
        sample_features(trained, n),
        application_id=f"{prefix}-{n}",
        applicant_id=f"{prefix}-cust-{n}",
        signals=signals,
    )


@contextlib.contextmanager
def server_at(workdir: Path, registry: Path, **kwargs: Any) -> Iterator[ScoringServer]:
    """Start a server for the ``with`` block; stop it by PID afterwards, even on failure."""
    started = start_server(workdir, registry, **kwargs)
    try:
        yield started
    finally:
        started.stop()
