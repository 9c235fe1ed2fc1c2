"""Errors of the scoring service; each maps to one HTTP status in the app's exception handlers."""

from __future__ import annotations


class ScoringError(Exception):
    """Base class of the scoring service's own errors."""


class NotFoundError(ScoringError, LookupError):
    """An unknown stage, model, decision or review item (HTTP 404)."""


class ConflictError(ScoringError, ValueError):
    """The request contradicts the current state, e.g. claiming a resolved item (HTTP 409)."""


class InvalidInputError(ScoringError, ValueError):
    """Input that passed typing but not the model's schema (HTTP 422).

    ``errors`` uses FastAPI's validation-error shape (``type``, ``loc``, ``msg``), so clients see
    one format whichever layer refused the field; ``loc`` names the field.
    """

    def __init__(self, errors: list[dict[str, object]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))  # type: ignore[call-overload]
        self.errors = errors


class UnavailableError(ScoringError, RuntimeError):
    """The service cannot answer now: no champion model for a stage, write queue full (HTTP 503)."""


class NoApiKeyError(ScoringError, RuntimeError):
    """The service has no active API key and was not started in insecure development mode."""


class SchemaVersionError(ScoringError, RuntimeError):
    """The database cannot be migrated: a revision this code does not know, or tables that are
    neither a versioned schema nor the complete pre-migration one."""
