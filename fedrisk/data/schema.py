"""Dataset schemas: which columns a party's credit data has and what values each may hold."""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedrisk.errors import ConfigError, SchemaError

__all__ = [
    "DatasetSchema",
    "FeatureKind",
    "FeatureSpec",
    "load_schema",
    "schema_from_toml",
    "schema_to_toml",
    "write_schema",
]


class FeatureKind(StrEnum):
    """How a feature's values are interpreted."""

    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


class FeatureSpec(BaseModel):
    """One model input column: its kind, allowed values, nullability and transform.

    Numeric features may bound their values with ``min``/``max`` (inclusive); categorical
    features list every allowed category as a string. ``transform="log1p"`` marks money
    amounts that are modelled as ``log(1 + x)``; it needs ``min >= 0``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    kind: FeatureKind
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    nullable: bool = False
    transform: Literal["none", "log1p"] = "none"
    description: str = ""

    @field_validator("min", "max")
    @classmethod
    def _finite_bound(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"bounds must be finite numbers; got {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind is FeatureKind.NUMERIC:
            if self.categories is not None:
                raise ValueError(f"feature {self.name}: a numeric feature must not list categories")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(
                    f"feature {self.name}: min must be <= max; got min={self.min}, max={self.max}"
                )
            if self.transform == "log1p" and (self.min is None or self.min < 0):
                raise ValueError(
                    f"feature {self.name}: transform log1p needs min >= 0; got min={self.min}"
                )
        else:
            if self.min is not None or self.max is not None:
                raise ValueError(f"feature {self.name}: a categorical feature must not set min/max")
            if not self.categories:
                raise ValueError(
                    f"feature {self.name}: a categorical feature must list its categories; "
                    f"got {self.categories}"
                )
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(
                    f"feature {self.name}: categories must be unique; got {list(self.categories)}"
                )
            if self.transform != "none":
                raise ValueError(
                    f"feature {self.name}: a categorical feature must have transform 'none'; "
                    f"got {self.transform!r}"
                )
        return self


class DatasetSchema(BaseModel):
    """The columns of one party dataset: id, optional binary target, features, meta columns.

    ``meta_columns`` are carried along with the rows but never used as model inputs (for
    example the ``party`` or ``segment`` a row belongs to); they are optional in a frame.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    id_column: str = Field(min_length=1)
    target_column: str | None
    features: tuple[FeatureSpec, ...] = Field(min_length=1)
    meta_columns: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _distinct_columns(self) -> Self:
        columns = [self.id_column]
        if self.target_column is not None:
            columns.append(self.target_column)
        columns.extend(f.name for f in self.features)
        columns.extend(self.meta_columns)
        repeated = sorted(c for c, n in Counter(columns).items() if n > 1)
        if repeated:
            raise ValueError(
                f"schema {self.name}: column names must be unique across id, target, features "
                f"and meta columns; got repeated {repeated}"
            )
        return self

    @property
    def feature_names(self) -> list[str]:
        """Names of the model input features, in schema order."""
        return [f.name for f in self.features]

    @property
    def columns(self) -> list[str]:
        """Every required column: id, target (when present) and features, in that order."""
        head = (
            [self.id_column] if self.target_column is None else [self.id_column, self.target_column]
        )
        return head + self.feature_names

    def feature(self, name: str) -> FeatureSpec:
        """Return the spec of feature ``name``.

        Raises
        ------
        SchemaError
            If the schema has no such feature.
        """
        for spec in self.features:
            if spec.name == name:
                return spec
        raise SchemaError(
            f"feature name must be one of {self.feature_names} in schema {self.name}; got {name!r}"
        )

    def fingerprint(self) -> str:
        """Return the sha256 hex digest of the schema's canonical JSON.

        Two schemas have the same fingerprint exactly when they are equal field by field.
        """
        payload = json.dumps(
            self.model_dump(mode="json"),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
            allow_nan=False,
        )
        return hashlib.sha256(payload.encode("ascii")).hexdigest()


def schema_from_toml(text: str, *, source: str = "<string>") -> DatasetSchema:
    """Parse a schema from TOML text.

    A missing ``target_column`` key means the dataset has no target (a passive party).

    Raises
    ------
    ConfigError
        If the text is not valid TOML or does not describe a valid schema.
    """
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"schema {source} must be valid TOML; {e}") from e
    # TOML has no null, so an absent key stands for "no target".
    data.setdefault("target_column", None)
    try:
        return DatasetSchema.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"schema {source} is invalid:\n{e}") from e


def load_schema(path: Path) -> DatasetSchema:
    """Load a dataset schema from a TOML file.

    Raises
    ------
    ConfigError
        If the file cannot be read or does not describe a valid schema.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"schema file {path} must be a readable UTF-8 file; {e}") from e
    return schema_from_toml(text, source=str(path))


_TOML_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(value: str) -> str:
    out: list[str] = []
    for char in value:
        code = ord(char)
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_float(value: float) -> str:
    text = repr(float(value))
    return text if ("." in text or "e" in text) else text + ".0"


def schema_to_toml(schema: DatasetSchema) -> str:
    """Render a schema as TOML text that :func:`schema_from_toml` reads back unchanged."""
    lines = [
        f"name = {_toml_string(schema.name)}",
        f"id_column = {_toml_string(schema.id_column)}",
    ]
    if schema.target_column is not None:
        lines.append(f"target_column = {_toml_string(schema.target_column)}")
    if schema.meta_columns:
        meta = ", ".join(_toml_string(c) for c in schema.meta_columns)
        lines.append(f"meta_columns = [{meta}]")
    for spec in schema.features:
        lines += ["", "[[features]]", f"name = {_toml_string(spec.name)}"]
        lines.append(f"kind = {_toml_string(spec.kind.value)}")
        if spec.min is not None:
            lines.append(f"min = {_toml_float(spec.min)}")
        if spec.max is not None:
            lines.append(f"max = {_toml_float(spec.max)}")
        if spec.categories is not None:
            cats = ", ".join(_toml_string(c) for c in spec.categories)
            lines.append(f"categories = [{cats}]")
        lines.append(f"nullable = {'true' if spec.nullable else 'false'}")
        lines.append(f"transform = {_toml_string(spec.transform)}")
        lines.append(f"description = {_toml_string(spec.description)}")
    return "\n".join(lines) + "\n"


def write_schema(schema: DatasetSchema, path: Path) -> None:
    """Write ``schema`` as TOML to ``path`` (UTF-8)."""
    Path(path).write_text(schema_to_toml(schema), encoding="utf-8")
