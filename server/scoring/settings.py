"""Configuration of the scoring service: one pydantic-settings model, parsed once at start-up.

Every environment variable the service reads is read here, as ``FEDRISK_<FIELD>`` (for example
``FEDRISK_IDENTIFIER_KEY``, ``FEDRISK_DB_URL``, ``FEDRISK_INSECURE_DEV``). Values passed to the
constructor (the ``serve`` command's flags, or a test) take precedence over the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fedrisk.federation.identifiers import IdentifierKind

Stage = Literal["application", "behaviour", "collection"]
STAGES: tuple[Stage, ...] = ("application", "behaviour", "collection")

ENV_PREFIX = "FEDRISK_"
"""Prefix of the service's environment variables: field ``identifier_key`` is read from
``FEDRISK_IDENTIFIER_KEY``."""

DEFAULT_IDENTIFIER_KEY = "fedrisk-development-identifier-key"
"""Key of the identifier HMAC in development mode when none is configured (a warning is logged)."""

DEFAULT_CHALLENGER_SHARE = 0.1
"""Traffic share of a challenger promoted without one, unless the settings say otherwise."""


def stage_named(value: object) -> Stage | None:
    """The lifecycle stage called ``value``, or None when there is no such stage."""
    for stage in STAGES:
        if stage == value:
            return stage
    return None


class Settings(BaseSettings):
    """Scoring-service settings.

    Attributes
    ----------
    registry_dir
        Model registry: ``<model_id>/artifact.json`` + ``artifact.sig``, ``trusted_keys/*.pub``.
    db_url
        SQLAlchemy URL; default ``sqlite:///<registry_dir>/../scoring.db``.
    policy_path
        Lifecycle policy TOML (cut-offs, limit and price tables); built-in defaults when unset.
    fraud_rules_path
        Anti-fraud rules (TOML or YAML); built-in defaults when unset.
    reason_table_path
        Reason-code table TOML overriding the codes and texts derived from each model's schema.
    max_body_bytes
        Largest JSON request body; bigger ones get 413.
    max_upload_bytes
        Largest batch upload (CSV or Parquet).
    challenger_shares
        Default traffic share of a challenger per stage, used when a promotion names no share.
    default_challenger_share
        Share of the stages ``challenger_shares`` does not name.
    identifier_key
        Key of the HMAC that hashes applicant ids and fraud-linking identifiers before storage.
        Required unless ``development`` is set.
    graph_ring_size
        Connected applications (incl. the new one) from which the relationship graph flags a ring.
    graph_hub_degree
        Identifiers shared by more applications than this are hubs and are ignored for linking.
    write_queue
        Pending decision writes allowed before the service answers 503.
    batch_chunk_rows
        Rows read, scored and streamed back per chunk of a batch upload.
    api_key_cache_seconds
        How long a verified API key is trusted without checking the database again (the longest
        a revoked key keeps working in a running service); 0 checks every request.
    purpose_examples_path
        CSV of labelled loan descriptions (columns ``text``, ``label``): when set, the service
        trains the purpose classifier from it (plus reviewers' corrections) at start-up and on
        ``POST /v1/purpose/retrain``, and ``POST /v1/decisions/{id}/purpose`` classifies.
    purpose_min_confidence
        Purpose predictions less probable than this go to the review queue.
    session_seconds
        Lifetime of a dashboard sign-in (browser session cookie); the person signs in again after.
    secure_cookies
        Mark the session cookie ``Secure`` even when the request arrived as plain HTTP (behind a
        TLS-terminating proxy); requests that arrive over TLS always get it.
    insecure_dev
        Serve requests without an API key as an admin, and start without any key stored; every
        request is logged with a warning. A local trial only. A key that is sent is still
        checked.
    development
        Development or test run: without ``identifier_key`` the built-in development key is used
        (with a warning). Never set it in production.
    audit_key_path
        The service's Ed25519 key that signs checkpoints of the audit chain (mode 0600, created
        at first start when no checkpoint exists yet); default ``audit/signing.key`` beside a
        SQLite database, else beside the registry.
    audit_checkpoint_path
        Append-only JSONL file of signed checkpoints; default ``audit/checkpoints.jsonl`` in
        the same folder. Put it where whoever can write the database cannot write.
    audit_checkpoint_records
        A checkpoint is signed once this many records were appended since the last one ...
    audit_checkpoint_seconds
        ... or this many seconds after the head moved, and always at start-up and shutdown.
    audit_webhook_url
        Every checkpoint is also POSTed here (JSON), off the decision path.
    audit_webhook_attempts
        Tries per checkpoint (exponential back-off from 0.5 s); a failure is logged.
    monitoring_webhook_url
        Each new monitoring alert is POSTed here (JSON) by ``POST /v1/monitoring/alerts/check``.
    monitoring_reference_path
        Reference PD bands (JSON, ``fedrisk.release.reference.ScoreReference``) used when the
        A-card champion's artifact carries none (artifacts released before it had them).
    vertical_hosts
        Feature services of a vertical model's hosts, party name -> ``https://`` base URL
        (``fedrisk party serve``); as JSON in ``FEDRISK_VERTICAL_HOSTS``. Empty: no vertical
        model can be scored.
    vertical_client_certificate, vertical_client_key
        The lender's certificate and key (PEM) under the federation's CA, presented to the
        hosts (mutual TLS).
    vertical_ca_certificate
        The federation's CA certificate (PEM) the hosts' certificates must chain to.
    vertical_identifier_key_path
        The federation's identifier key file (``IdentifierKey.save``): applicants are sent to
        the hosts only as its keyed hash. Not ``identifier_key``, which hashes for storage and
        never leaves the lender.
    vertical_id_kind, vertical_country_code
        How the applicant id is normalised before hashing (as in the training run's alignment).
    vertical_deadline_seconds
        Per-call deadline of a host; a later answer makes that host's part missing.

    Notes
    -----
    The identifier key decides which stored hashes can be linked to a person and which
    applications the fraud graph connects. A production service that silently fell back to a
    key published in this source would store hashes anyone can recompute, so outside
    ``development`` a missing key (or the published development key) is refused when the
    settings are built, before anything starts.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="forbid", frozen=True
    )

    registry_dir: Path
    db_url: str | None = None
    policy_path: Path | None = None
    fraud_rules_path: Path | None = None
    reason_table_path: Path | None = None
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1024)
    challenger_shares: dict[Stage, float] = Field(default_factory=dict)
    default_challenger_share: float = Field(default=DEFAULT_CHALLENGER_SHARE, gt=0.0, lt=1.0)
    identifier_key: SecretStr | None = None
    graph_ring_size: int = Field(default=5, ge=2)
    graph_hub_degree: int = Field(default=50, ge=2)
    write_queue: int = Field(default=10_000, ge=1)
    batch_chunk_rows: int = Field(default=65_536, ge=1, le=10_000_000)
    api_key_cache_seconds: float = Field(default=10.0, ge=0.0, le=300.0)
    purpose_examples_path: Path | None = None
    purpose_min_confidence: float = Field(default=0.6, gt=0.0, le=1.0)
    session_seconds: float = Field(default=8 * 3600.0, ge=60.0, le=7 * 24 * 3600.0)
    secure_cookies: bool = False
    insecure_dev: bool = False
    development: bool = False
    audit_key_path: Path | None = None
    audit_checkpoint_path: Path | None = None
    audit_checkpoint_records: int = Field(default=1000, ge=1)
    audit_checkpoint_seconds: float = Field(default=1.0, gt=0.0, le=3600.0)
    audit_webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    audit_webhook_attempts: int = Field(default=4, ge=1, le=20)
    monitoring_webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    monitoring_reference_path: Path | None = None
    vertical_hosts: dict[str, Annotated[str, Field(pattern=r"^https://")]] = Field(
        default_factory=dict
    )
    vertical_client_certificate: Path | None = None
    vertical_client_key: Path | None = None
    vertical_ca_certificate: Path | None = None
    vertical_identifier_key_path: Path | None = None
    vertical_id_kind: IdentifierKind = "opaque"
    vertical_country_code: str = Field(default="86", pattern=r"^[0-9]{1,3}$")
    vertical_deadline_seconds: float = Field(default=0.25, gt=0.0, le=10.0)

    @field_validator("challenger_shares")
    @classmethod
    def _shares_in_range(cls, value: dict[Stage, float]) -> dict[Stage, float]:
        for stage, share in value.items():
            if not 0.0 < share < 1.0:
                raise ValueError(f"challenger share of {stage} must be in (0, 1); got {share}")
        return value

    @model_validator(mode="after")
    def _vertical_hosts_need_tls_and_key(self) -> Self:
        if not self.vertical_hosts:
            return self
        needed = (
            "vertical_client_certificate",
            "vertical_client_key",
            "vertical_ca_certificate",
            "vertical_identifier_key_path",
        )
        unset = [name for name in needed if getattr(self, name) is None]
        if unset:
            raise ValueError(
                f"{', '.join(unset)} must be set when vertical_hosts is; got none (mutual TLS "
                "to the hosts and the federation's identifier key)"
            )
        return self

    @model_validator(mode="after")
    def _identifier_key_outside_development(self) -> Self:
        if self.development:
            return self
        env = f"{ENV_PREFIX}IDENTIFIER_KEY"
        if self.identifier_key is None or not self.identifier_key.get_secret_value():
            raise ValueError(
                f"identifier_key must be set in production (environment variable {env}); got "
                f"none. For a local trial or tests set development=True "
                f"({ENV_PREFIX}DEVELOPMENT=1 or `serve --development`)"
            )
        if self.identifier_key.get_secret_value() == DEFAULT_IDENTIFIER_KEY:
            raise ValueError(
                f"identifier_key must be a secret of your own in production ({env}); got the "
                "published development key"
            )
        return self

    @property
    def uses_development_key(self) -> bool:
        """Whether identifiers are hashed with the published development key (development only)."""
        return self.identifier_key_bytes() == DEFAULT_IDENTIFIER_KEY.encode()

    def identifier_key_bytes(self) -> bytes:
        """Key of the identifier HMAC: the configured one, else the development key."""
        key = self.identifier_key.get_secret_value() if self.identifier_key is not None else ""
        return (key or DEFAULT_IDENTIFIER_KEY).encode()

    def share_for(self, stage: Stage) -> float:
        """Default challenger share of ``stage``."""
        return self.challenger_shares.get(stage, self.default_challenger_share)

    def default_shares(self) -> dict[Stage, float]:
        """Default challenger share of every stage."""
        return {stage: self.share_for(stage) for stage in STAGES}
