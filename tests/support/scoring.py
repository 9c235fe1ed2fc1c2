"""Scoring-service test helpers: real uvicorn servers, request bodies, settings, stored rows."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import SecretStr
from sqlalchemy import Engine

from server.scoring.apikeys import Role, create_keys_at
from server.scoring.audit import utc_now
from server.scoring.db.engine import default_db_url
from server.scoring.settings import Settings
from server.scoring.writer import DecisionWrite, GroupCommitWriter
from tests.support.artifacts import TrainedModel, application_body, features_of
from tests.support.processes import (
    ProcessRegistry,
    free_port,
    read_log,
    start_process,
    stop_pid,
    wait_for,
)

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0
STANDARD_MODELS = {"acard-v1": "application", "bcard-v1": "behaviour", "ccard-v1": "collection"}
IDENTIFIER_KEY = "test-identifier-key-not-for-production"
"""Identifier HMAC key of every test service (a production service refuses to start without)."""


def service_settings(registry: Path, **overrides: Any) -> Settings:
    """Settings of an in-process test service; the test identifier key unless one is given."""
    overrides.setdefault("identifier_key", SecretStr(IDENTIFIER_KEY))
    return Settings(registry_dir=registry, **overrides)


def create_keys(db_url: str, roles: tuple[Role, ...] = tuple(Role)) -> dict[Role, str]:
    """One new API key per role in the (migrated) database at ``db_url``, named ``test-<role>``."""
    return create_keys_at(db_url, {role: f"test-{role.value}" for role in roles}, actor="tests")


def bearer(key: str) -> dict[str, str]:
    """Request headers carrying ``key``."""
    return {"authorization": f"Bearer {key}"}


def admin_headers(settings: Settings) -> dict[str, str]:
    """Headers with a new admin key stored in the database of ``settings`` (in-process tests)."""
    db_url = settings.db_url or default_db_url(settings.registry_dir)
    return bearer(create_keys(db_url, (Role.ADMIN,))[Role.ADMIN])


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
    keys: dict[Role, str] = field(default_factory=dict)
    """One API key per role, created before the server started."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, role: Role | None = Role.ADMIN, **kwargs: Any) -> httpx.Client:
        """An httpx client bound to the server (10 s timeout) sending the key of ``role``
        (admin by default, which may call every route; None sends no key)."""
        headers = {
            **(bearer(self.keys[role]) if role is not None else {}),
            **kwargs.pop("headers", {}),
        }
        return httpx.Client(
            base_url=self.base_url, timeout=kwargs.pop("timeout", 10.0), headers=headers, **kwargs
        )

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
    roles: tuple[Role, ...] = tuple(Role),
) -> ScoringServer:
    """Start ``python -m server.scoring serve`` on a free port and wait for /healthz.

    The service gets the test identifier key through ``FEDRISK_IDENTIFIER_KEY`` (``env`` may
    override it), and one API key for each of ``roles`` in its database first (none for an
    empty tuple: the server then starts only with ``--insecure-dev``). The PID is tracked in
    ``processes`` (stopped at teardown even on failure) when given; otherwise the caller must
    call :meth:`ScoringServer.stop`.
    """
    port = free_port()
    db = db_url or f"sqlite:///{workdir / 'scoring.db'}"
    keys = create_keys(db, roles) if roles else {}
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
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "FEDRISK_IDENTIFIER_KEY": IDENTIFIER_KEY,
            **(env or {}),
        },
    )
    if processes is not None:
        processes.track(proc.pid)
    server = ScoringServer(port, proc.pid, registry, db, log_path, processes, keys=keys)
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


@contextlib.contextmanager
def server_at(workdir: Path, registry: Path, **kwargs: Any) -> Iterator[ScoringServer]:
    """Start a server for the ``with`` block; stop it by PID afterwards, even on failure."""
    started = start_server(workdir, registry, **kwargs)
    try:
        yield started
    finally:
        started.stop()


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


# ------------------------------------------------------------------ rows written to a database
def decision_write(
    i: int, *, outcome: str = "approve", review: dict[str, Any] | None = None
) -> DecisionWrite:
    """A complete A-card decision (row, fraud link, optional review item) numbered ``i``."""
    decision_id = uuid.uuid4().hex
    stamp = utc_now()
    row = {
        "decision_id": decision_id,
        "created_at": stamp,
        "stage": "application",
        "subject_hash": f"{i:064x}",
        "fingerprint": uuid.uuid4().hex * 2,
        "model_id": "acard-v1",
        "role": "champion",
        "score": 600.0 + i / 7,
        "probability": 1 / (3 + i),
        "outcome": outcome,
        "reasons": [{"code": "RC-ABC123", "feature": "age", "points": 1.25 + i}],
        "rules_hit": ["FR-X"] if i % 3 == 0 else [],
        "details": {"credit_limit": 1000.0, "price_tier": "C"},
    }
    links = [
        {
            "application_key": uuid.uuid4().hex * 2,
            "decision_id": decision_id,
            "identifiers": {"device_id": f"{i % 5:064x}"},
            "created_at": stamp,
        }
    ]
    if review is not None:
        review = {"decision_id": decision_id, "stage": "application", "created_at": stamp, **review}
    return DecisionWrite(row=row, links=links, review=review)


def write_decisions(engine: Engine, items: list[DecisionWrite]) -> list[BaseException | None]:
    """Submit every decision to a real group-commit writer at once; the error of each, or None."""

    async def run() -> list[BaseException | None]:
        writer = GroupCommitWriter(engine)
        try:
            results = await asyncio.gather(
                *(writer.submit_decision(d) for d in items), return_exceptions=True
            )
        finally:
            writer.close()
        return [r if isinstance(r, BaseException) else None for r in results]

    return asyncio.run(run())
