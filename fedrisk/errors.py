"""The error hierarchy of the fedrisk core package: one base, builtin-compatible subclasses."""

from __future__ import annotations

from enum import StrEnum


class FedRiskError(Exception):
    """Base class of every error raised by the ``fedrisk`` package."""


class ConfigError(FedRiskError, ValueError):
    """A configuration value is invalid (wrong type, out of range, unknown name)."""


class DataFileError(FedRiskError, ValueError):
    """A data file cannot be read: malformed CSV/Parquet, bad encoding, unknown format."""


class DatasetNotFoundError(FedRiskError, FileNotFoundError):
    """A named dataset's file is not where fedrisk looked for it."""


class SchemaError(FedRiskError, ValueError):
    """A frame does not satisfy its dataset schema. ``problems`` lists every violation found."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems or [])


class ModelError(FedRiskError, ValueError):
    """A model cannot be built, loaded or fed: bad spec, wrong vector length, corrupted file."""


class ArtifactRefusal(StrEnum):
    """Why an artifact is refused: the ``reason`` every :class:`ArtifactError` carries."""

    UNSIGNED = "unsigned"
    UNTRUSTED = "untrusted"
    TAMPERED = "tampered"
    INCOMPATIBLE = "incompatible"
    UNREADABLE = "unreadable"


class ArtifactError(FedRiskError, ValueError):
    """A model artifact is malformed, incompatible or fails verification; ``reason`` says which."""

    def __init__(
        self, message: str, *, reason: ArtifactRefusal = ArtifactRefusal.INCOMPATIBLE
    ) -> None:
        super().__init__(message)
        self.reason = reason


class SignatureError(ArtifactError):
    """An artifact's signature is missing, made by an untrusted key, or does not verify."""

    def __init__(self, message: str, *, reason: ArtifactRefusal = ArtifactRefusal.TAMPERED) -> None:
        super().__init__(message, reason=reason)


class DecisionError(FedRiskError, ValueError):
    """A decision policy, scorecard or fraud rule set is invalid or cannot be applied."""


class IdentityError(FedRiskError, ValueError):
    """A party identity key, bundle or sealed secret is missing, wrong or tampered with."""


class ExecutableNotFoundError(FedRiskError, FileNotFoundError):
    """A console script (e.g. ``flower-superlink``) is not beside the interpreter nor on PATH."""


class ForeignPackageError(FedRiskError, ImportError):
    """A top-level name fedrisk installs (``server``, ``clients``…) resolves to another project."""


class ProcessStopError(FedRiskError, RuntimeError):
    """Processes of a tree survived SIGKILL. ``survivors`` lists their pids."""

    def __init__(self, message: str, survivors: list[int] | None = None) -> None:
        super().__init__(message)
        self.survivors: list[int] = list(survivors or [])


class RunRefusal(StrEnum):
    """Why a party refuses a run: the ``reason`` every :class:`RunRefusedError` carries."""

    NO_PIN = "no-pin"
    UNSIGNED_PIN = "unsigned-pin"
    UNTRUSTED_PIN = "untrusted-pin"
    FOREIGN_APP = "foreign-app"
    FEDRISK_VERSION = "fedrisk-version"
    CONFIG_KEY = "config-key"
    CONFIG_VALUE = "config-value"


class RunRefusedError(FedRiskError):
    """A run is not the one the federation pinned, or the pin itself is not trusted."""

    def __init__(self, message: str, *, reason: RunRefusal) -> None:
        super().__init__(message)
        self.reason = reason
