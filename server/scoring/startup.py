"""Start-up of the scoring service: every component built from the settings, one named step each.

:func:`build_context` runs the steps in order; any of them raising (a bad policy or rules file, a
database that cannot be migrated) stops start-up with nothing left open.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime

from sqlalchemy import Engine

from fedrisk.decisions.fraud_graph import GraphConfig
from fedrisk.decisions.fraud_rules import RuleSet, load_default_rules, load_rules
from fedrisk.decisions.lifecycle import load_policy
from fedrisk.decisions.reasons import ReasonCodeTable
from server.scoring import store
from server.scoring.anchor import AuditAnchor, open_service_anchor
from server.scoring.antifraud import FraudScreen, IdentifierHasher
from server.scoring.apikeys import KeyVerifier, count_active_keys
from server.scoring.context import ServiceContext
from server.scoring.db.engine import default_db_url, make_engine
from server.scoring.db.migrate import upgrade_database
from server.scoring.errors import NoApiKeyError
from server.scoring.payloads import FraudSignals
from server.scoring.purpose import train_purpose_classifier
from server.scoring.registry import LoadedModel, ModelRegistry
from server.scoring.service import ScoringService
from server.scoring.settings import ENV_PREFIX, Settings
from server.scoring.telemetry import Metrics
from server.scoring.vertical_hosts import VerticalScorer
from server.scoring.vertical_models import VerticalModel
from server.scoring.writer import DecisionWrite, GroupCommitWriter

logger = logging.getLogger(__name__)


def load_fraud_rules(settings: Settings) -> RuleSet:
    """The configured fraud rules, or the built-in ones."""
    if settings.fraud_rules_path is None:
        return load_default_rules()
    return load_rules(settings.fraud_rules_path)


def identifier_hasher(settings: Settings) -> IdentifierHasher:
    """The keyed hash of identifiers; warns when it uses the development key."""
    if settings.uses_development_key:
        logger.warning(
            "identifiers are hashed with the published development key (development mode); "
            "set %sIDENTIFIER_KEY in production",
            ENV_PREFIX,
        )
    return IdentifierHasher(settings.identifier_key_bytes())


def open_database(settings: Settings) -> Engine:
    """Engine of the configured database, migrated to the latest schema revision."""
    engine = make_engine(settings.db_url or default_db_url(settings.registry_dir))
    try:
        upgrade_database(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def require_api_keys(engine: Engine, settings: Settings) -> int:
    """Refuse to serve without an active API key, unless insecure development mode is on.

    Returns the number of active keys. Raises NoApiKeyError.
    """
    with engine.connect() as connection:
        active = count_active_keys(connection)
    if settings.insecure_dev:
        logger.warning(
            "INSECURE-DEV: requests without an API key are served as admin (%d active keys); "
            "never run this way where anyone else can reach the service",
            active,
        )
    elif active == 0:
        raise NoApiKeyError(
            "the service must have at least one active API key; got none. Create one with "
            "`fedrisk serve keys create --role admin --name NAME --db URL` (the key is printed "
            "once), or start with --insecure-dev for a local trial"
        )
    return active


def rebuild_fraud_screen(
    engine: Engine, settings: Settings, *, rules: RuleSet, hasher: IdentifierHasher
) -> FraudScreen:
    """Fraud rules with the stored external lists, and the graph and velocity history rebuilt
    from every stored application."""
    with engine.connect() as connection:
        lists = store.fraud_lists(connection)
        links = store.iter_fraud_links(connection)
    screen = FraudScreen(
        rules,
        graph_config=GraphConfig(
            max_component_size=settings.graph_ring_size, hub_threshold=settings.graph_hub_degree
        ),
        hasher=hasher,
        lists={name: values for name, values in lists.items() if name in rules.external_lists},
        known_fields=FraudSignals.model_fields.keys(),
    )
    n_apps = screen.rebuild(links, now=datetime.now(UTC))
    logger.info("relationship graph rebuilt from the store: %d applications", n_apps)
    return screen


def load_registry(
    settings: Settings, *, reason_table: ReasonCodeTable | None, metrics: Metrics
) -> ModelRegistry:
    """Every artifact of the registry directory, verified; refusals are counted."""
    registry = ModelRegistry(settings.registry_dir, reason_table=reason_table)
    registry.load_all()
    for refusal in registry.refused.values():
        metrics.refused_artifacts.labels(refusal.reason).inc()
    return registry


def register_found_models(ctx: ServiceContext) -> None:
    """Reconcile the registry directory with the database.

    A model registered before must still be the artifact that was registered (else it is
    refused); a model found in the directory but never registered is registered for the stage
    its artifact names (one without a stage waits for a manual registration).
    """
    with ctx.engine.connect() as connection:
        registered = store.registered_model_stages(connection)
        digests = store.registered_digests(connection)
    loaded: list[LoadedModel | VerticalModel] = [
        *ctx.registry.models.values(),
        *ctx.registry.vertical.values(),
    ]
    ctx.refuse_changed_artifacts([m.model_id for m in loaded if m.model_id in registered], digests)
    for model in loaded:
        model_id = model.model_id
        if model_id in registered:
            continue
        stage = model.stage if isinstance(model, VerticalModel) else model.artifact.stage
        if stage is None:
            logger.warning("model %s names no stage; register it with a stage to use it", model_id)
            continue
        ctx.writer.run_job_sync(
            functools.partial(
                store.register_model,
                model_id=model_id,
                stage=stage,
                artifact_sha256=model.artifact_sha256,
                actor="startup",
                note="found in the registry directory at start-up",
            )
        )


def build_context(settings: Settings, metrics: Metrics) -> ServiceContext:
    """Build every component, then load the registered models and their assignments.

    Raises
    ------
    DecisionError
        A bad policy or fraud-rules file.
    SchemaVersionError
        A database the migrations cannot bring up to date.
    NoApiKeyError
        No active API key, outside insecure development mode.
    """
    policy = load_policy(settings.policy_path)
    rules = load_fraud_rules(settings)
    reason_table = (
        None
        if settings.reason_table_path is None
        else ReasonCodeTable.from_toml(settings.reason_table_path)
    )
    hasher = identifier_hasher(settings)
    engine = open_database(settings)
    writer: GroupCommitWriter | None = None
    anchor: AuditAnchor | None = None
    try:
        require_api_keys(engine, settings)
        anchor = open_service_anchor(settings, engine)
        screen = rebuild_fraud_screen(engine, settings, rules=rules, hasher=hasher)

        def on_failure(write: DecisionWrite) -> None:
            screen.forget_unpersisted(write.links)

        writer = GroupCommitWriter(
            engine, max_queue=settings.write_queue, on_failure=on_failure, anchor=anchor
        )
        registry = load_registry(settings, reason_table=reason_table, metrics=metrics)
        service = ScoringService(
            registry=registry,
            policy=policy,
            screen=screen,
            writer=writer,
            hasher=hasher,
            metrics=metrics,
            vertical=VerticalScorer.from_settings(settings),
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
            service=service,
            keys=KeyVerifier(engine, cache_seconds=settings.api_key_cache_seconds),
        )
        register_found_models(ctx)
        ctx.refresh_models()
        if settings.purpose_examples_path is not None:
            ctx.purpose = train_purpose_classifier(engine, settings).classifier
        return ctx
    except BaseException:
        if writer is not None:
            writer.close()  # closes the anchor too
        elif anchor is not None:
            anchor.close()
        engine.dispose()
        raise
