"""Configuration of the scoring service: one pydantic model, parsed once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

Stage = Literal["application", "behaviour", "collection"]
STAGES: tuple[Stage, ...] = ("application", "behaviour", "collection")

DEFAULT_IDENTIFIER_KEY = "fedrisk-development-identifier-key"
"""Key of the identifier HMAC when none is configured (development only; a warning is logged)."""


class Settings(BaseModel):
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
    max_body_bytes
        Largest JSON request body; bigger ones get 413.
    max_upload_bytes
        Largest batch upload (CSV or Parquet).
    challenger_shares
        Default traffic share of a challenger per stage, used when a promotion names no share.
    identifier_key
        Key of the HMAC that hashes applicant ids and fraud-linking identifiers before storage.
    graph_ring_size
        Connected applications (incl. the new one) from which the relationship graph flags a ring.
    graph_hub_degree
        Identifiers shared by more applications than this are hubs and are ignored for linking.
    write_queue
        Pending decision writes allowed before the service answers 503.
    admin_token
        When set, model-management and review endpoints need ``Authorization: Bearer <token>``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    registry_dir: Path
    db_url: str | None = None
    policy_path: Path | None = None
    fraud_rules_path: Path | None = None
    reason_table_path: Path | None = None
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1024)
    challenger_shares: dict[Stage, float] = Field(default_factory=dict)
    default_challenger_share: float = Field(default=0.1, gt=0.0, lt=1.0)
    identifier_key: SecretStr = SecretStr(DEFAULT_IDENTIFIER_KEY)
    graph_ring_size: int = Field(default=5, ge=2)
    graph_hub_degree: int = Field(default=50, ge=2)
    write_queue: int = Field(default=10_000, ge=1)
    batch_chunk_rows: int = Field(default=65_536, ge=1, le=10_000_000)
    admin_token: SecretStr | None = None

    @field_validator("challenger_shares")
    @classmethod
    def _shares_in_range(cls, value: dict[Stage, float]) -> dict[Stage, float]:
        for stage, share in value.items():
            if not 0.0 < share < 1.0:
                raise ValueError(f"challenger share of {stage} must be in (0, 1); got {share}")
        return value

    def share_for(self, stage: Stage) -> float:
        """Default challenger share of ``stage``."""
        return self.challenger_shares.get(stage, self.default_challenger_share)
