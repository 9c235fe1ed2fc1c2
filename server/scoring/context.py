"""Runtime context of the scoring service: components built at start-up, shared by the routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import Engine

from fedrisk.decisions.fraud_rules import RuleSet
from fedrisk.decisions.lifecycle import LifecyclePolicy
from fedrisk.errors import ArtifactRefusal
from server.scoring import store
from server.scoring.antifraud import FraudScreen, IdentifierHasher
from server.scoring.apikeys import KeyVerifier
from server.scoring.registry import ModelRegistry
from server.scoring.service import ScoringService
from server.scoring.settings import Settings
from server.scoring.telemetry import Metrics
from server.scoring.writer import GroupCommitWriter

if TYPE_CHECKING:
    from fedrisk.decisions.purpose import PurposeClassifier

logger = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    """Everything the routes need; built at start-up, stored on ``app.state.ctx``."""

    settings: Settings
    engine: Engine
    writer: GroupCommitWriter
    registry: ModelRegistry
    policy: LifecyclePolicy
    rules: RuleSet
    screen: FraudScreen
    hasher: IdentifierHasher
    metrics: Metrics
    service: ScoringService
    keys: KeyVerifier
    assignments_version: int = 0
    purpose: PurposeClassifier | None = None
    """The loan-purpose classifier (None unless ``purpose_examples_path`` is set)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def read(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a read-only ``fn(connection, ...)`` on a worker thread."""

        def run() -> Any:
            with self.engine.connect() as connection:
                return fn(connection, *args, **kwargs)

        return await anyio.to_thread.run_sync(run)

    def refuse_changed_artifacts(
        self, model_ids: Iterable[str], digests: Mapping[str, str]
    ) -> None:
        """Refuse every loaded model of ``model_ids`` whose ``artifact.json`` is no longer the one
        registered (``digests``: model id -> SHA-256 at registration)."""
        for model_id in model_ids:
            loaded = self.registry.digest_of(model_id)
            if loaded is None or digests.get(model_id) == loaded:
                continue
            self.registry.refuse(
                model_id,
                reason=ArtifactRefusal.TAMPERED,
                message=f"artifact of {model_id} changed since it was registered",
            )
            self.metrics.refused_artifacts.labels(ArtifactRefusal.TAMPERED).inc()

    def refresh_models(self) -> None:
        """Load newly registered models and the current assignments (blocking; DB + files)."""
        with self.engine.connect() as connection:
            registered = store.registered_model_stages(connection)
            digests = store.registered_digests(connection)
            assignments = store.load_assignments(connection)
            version = store.assignments_version(connection)
        missing = [m for m in registered if not self.registry.has(m)]
        if missing:
            self.registry.load_all(only=missing)
        self.refuse_changed_artifacts(missing, digests)
        self.registry.set_assignments(assignments)
        self.assignments_version = version

    async def reload_assignments(self) -> None:
        """Read the champion/challenger table again after this process changed it."""
        assignments = await self.read(store.load_assignments)
        self.registry.set_assignments(assignments)
        self.assignments_version = await self.read(store.assignments_version)
