"""Reason codes: rank the raw features that lowered an applicant's score; stable codes and texts.

API
---
``ReasonCode(code, feature, text, points)``
    One ranked reason; ``points`` is how many score points the feature cost versus the baseline.
``ReasonCodeEntry(feature, code, text)``, ``ReasonCodeTable(entries)``
    Stable feature -> code/text mapping. Build with ``ReasonCodeTable.from_schema(schema)`` (codes
    ``"RC-" + 6 hex of sha256(feature name)``, texts from ``FeatureSpec.description``) or
    ``ReasonCodeTable.from_toml(path, schema=...)`` (explicit ``[[reasons]]`` entries win).
    ``.entry(feature)``, ``.reason(feature, points)``, ``.features``, ``.to_toml()``.
``reason_code_for(feature) -> str``
    The derived code of one feature name.
``ReasonRanker(predict_logit, preprocessor, baseline, *, table, scaling, features=None,
max_reasons=4)``
    Built once per model; ``.rank(applicant)``, ``.rank_frame(frame)`` and the fast
    ``.rank_transformed(X, logits=None)`` (takes the preprocessed rows the service already has).
``rank_reasons(predict_logit, preprocessor, applicant, baseline, *, table, scaling, max_reasons=4)``
    One-shot convenience; accepts a column-wise preprocessor or a bare transform callable.
The baseline is the artifact's reference applicant (``features.Preprocessor.reference_row()``).

Method: occlusion. For each raw feature the applicant's value is replaced by the baseline value and
the model re-scored; the points lost are ``factor * (logit(applicant) - logit(occluded))`` where
``factor = pdo / ln 2``. All occluded rows of an applicant (and of a whole batch) go through the
model in one forward pass, so the cost is one vectorised call whatever the model (LR or MLP).
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from fedrisk.data.schema import DatasetSchema
from fedrisk.decisions.scorecard import ScorecardScaling
from fedrisk.errors import DecisionError

__all__ = [
    "DEFAULT_MAX_REASONS",
    "ColumnwiseTransform",
    "ReasonCode",
    "ReasonCodeEntry",
    "ReasonCodeTable",
    "ReasonRanker",
    "rank_reasons",
    "reason_code_for",
]

DEFAULT_MAX_REASONS = 4
"""Adverse-action notices quote at most four key factors."""

_MIN_POINTS = 1e-9
"""Points at or below this are rounding noise, not a reason."""

LogitFn = Callable[[npt.NDArray[Any]], npt.NDArray[Any]]
TransformFn = Callable[[pd.DataFrame], npt.NDArray[Any]]
RawValue = float | int | str | None


@runtime_checkable
class ColumnwiseTransform(Protocol):
    """A preprocessor whose output columns each come from exactly one raw feature.

    ``fedrisk.ml.features.Preprocessor`` satisfies it. Column-wise transforms let occlusion happen
    on
    the transformed row (copy the baseline's columns in), which avoids pandas on the hot path.
    """

    def transform(self, frame: pd.DataFrame) -> npt.NDArray[Any]:
        """Preprocess raw rows into the model's input matrix."""
        ...

    def columns_of(self, feature: str) -> list[int]:
        """Output columns that come from one raw feature."""
        ...


class ReasonCode(BaseModel):
    """One reason the score is lower than the baseline applicant's.

    Attributes
    ----------
    code
        Stable code, e.g. ``"RC-1A2B3C"``; the same feature always has the same code.
    feature
        Raw feature name.
    text
        Human-readable text for adverse-action notices.
    points
        Score points this feature cost relative to the baseline value (> 0).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    feature: str
    text: str
    points: float


class ReasonCodeEntry(BaseModel):
    """One row of a reason-code table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature: str = Field(min_length=1)
    code: str = Field(pattern=r"^[A-Z0-9][A-Z0-9_-]{0,23}$")
    text: str = Field(min_length=1)


def reason_code_for(feature: str) -> str:
    """Derive the stable reason code of a feature name.

    Parameters
    ----------
    feature
        Raw feature name.

    Returns
    -------
    str
        ``"RC-"`` followed by the first 6 upper-case hex digits of ``sha256(feature)``.

    Notes
    -----
    A hash of the name (not a position) keeps codes stable when features are added, removed or
    reordered between model versions, which is what stored decisions and notices rely on.
    """
    return "RC-" + hashlib.sha256(feature.encode("utf-8")).hexdigest()[:6].upper()


def _default_text(feature: str, description: str) -> str:
    text = description.strip()
    if text:
        return text
    return f"Value of {feature} is less favourable than for a typical applicant"


class ReasonCodeTable(BaseModel):
    """Mapping of raw features to stable reason codes and texts (features and codes unique)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entries: tuple[ReasonCodeEntry, ...]
    _by_feature: dict[str, ReasonCodeEntry] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen_codes: dict[str, str] = {}
        seen_features: set[str] = set()
        for entry in self.entries:
            if entry.feature in seen_features:
                raise ValueError(f"feature names must be unique; got {entry.feature!r} twice")
            if entry.code in seen_codes:
                raise ValueError(
                    f"codes must be unique; got {entry.code!r} for both "
                    f"{seen_codes[entry.code]!r} and {entry.feature!r}"
                )
            seen_features.add(entry.feature)
            seen_codes[entry.code] = entry.feature
        return self

    def model_post_init(self, context: Any, /) -> None:
        """Index entries by feature for O(1) lookups."""
        self._by_feature = {entry.feature: entry for entry in self.entries}

    @classmethod
    def from_schema(
        cls, schema: DatasetSchema, *, overrides: Sequence[ReasonCodeEntry] = ()
    ) -> ReasonCodeTable:
        """Build the table of a schema: derived codes, texts from feature descriptions.

        Parameters
        ----------
        schema
            Dataset schema whose features get codes.
        overrides
            Explicit entries that replace the derived entry of their feature.

        Raises
        ------
        DecisionError
            If an override names an unknown feature or two codes collide.
        """
        by_feature = {
            spec.name: ReasonCodeEntry(
                feature=spec.name,
                code=reason_code_for(spec.name),
                text=_default_text(spec.name, spec.description),
            )
            for spec in schema.features
        }
        for entry in overrides:
            if entry.feature not in by_feature:
                raise DecisionError(
                    f"reason override feature must be one of the schema's features; "
                    f"got {entry.feature!r}"
                )
            by_feature[entry.feature] = entry
        return cls._checked(tuple(by_feature.values()), source=f"schema {schema.name!r}")

    @classmethod
    def from_toml(cls, path: Path, *, schema: DatasetSchema | None = None) -> ReasonCodeTable:
        """Load a table from TOML (``[[reasons]]`` with ``feature``, ``code``, ``text``).

        With ``schema``, features missing from the file get derived entries, and entries for
        features outside the schema are an error.

        Raises
        ------
        DecisionError
            If the file cannot be read or parsed, or an entry is invalid.
        """
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise DecisionError(f"reason table {path} must be readable TOML; got {e}") from e
        raw = data.get("reasons", [])
        unknown = sorted(set(data) - {"reasons"})
        if unknown or not isinstance(raw, list):
            raise DecisionError(
                f"reason table {path} must hold only a [[reasons]] array; got keys {sorted(data)}"
            )
        try:
            entries = [ReasonCodeEntry.model_validate(item) for item in raw]
        except ValidationError as e:
            raise DecisionError(f"reason table {path}: {_first_error(e)}") from e
        if schema is None:
            return cls._checked(tuple(entries), source=str(path))
        try:
            return cls.from_schema(schema, overrides=entries)
        except DecisionError as e:
            raise DecisionError(f"reason table {path}: {e}") from e

    @classmethod
    def _checked(cls, entries: tuple[ReasonCodeEntry, ...], *, source: str) -> ReasonCodeTable:
        try:
            return cls(entries=entries)
        except ValidationError as e:
            raise DecisionError(f"reason table from {source}: {_first_error(e)}") from e

    @property
    def features(self) -> list[str]:
        """Features the table knows, in table order."""
        return [entry.feature for entry in self.entries]

    def entry(self, feature: str) -> ReasonCodeEntry:
        """The entry of one feature; ``DecisionError`` if the table does not know it."""
        try:
            return self._by_feature[feature]
        except KeyError as e:
            raise DecisionError(f"feature must be in the reason-code table; got {feature!r}") from e

    def reason(self, feature: str, points: float) -> ReasonCode:
        """Make the :class:`ReasonCode` of ``feature`` costing ``points``."""
        entry = self.entry(feature)
        return ReasonCode(code=entry.code, feature=feature, text=entry.text, points=points)

    def to_toml(self) -> str:
        """Serialise as TOML that :meth:`from_toml` reads back."""
        lines: list[str] = []
        for entry in self.entries:
            lines += [
                "[[reasons]]",
                f"feature = {_toml_str(entry.feature)}",
                f"code = {_toml_str(entry.code)}",
                f"text = {_toml_str(entry.text)}",
                "",
            ]
        return "\n".join(lines)


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _first_error(error: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(p) for p in item['loc']) or 'value'}: {item['msg']}"
        for item in error.errors()
    ]
    return "; ".join(problems)


class ReasonRanker:
    """Occlusion reason ranking for one model; build once per loaded model, reuse per request.

    Parameters
    ----------
    predict_logit
        Model forward pass on preprocessed rows, returning bad-vs-good logits of shape ``(n,)``
        (e.g. ``NumpyScorer.logits``).
    preprocessor
        Column-wise preprocessor (``transform`` + ``columns_of``), e.g. ``features.Preprocessor``.
    baseline
        Reference applicant's raw values (the artifact's ``baseline``).
    table
        Reason-code table covering every ranked feature.
    scaling
        Scorecard scaling; converts logit differences to points.
    features
        Raw features to rank; defaults to the baseline's keys.
    max_reasons
        How many reasons to return at most.

    Raises
    ------
    DecisionError
        If a feature lacks a baseline value, a table entry or output columns.
    """

    def __init__(
        self,
        predict_logit: LogitFn,
        preprocessor: ColumnwiseTransform,
        baseline: Mapping[str, float | str],
        *,
        table: ReasonCodeTable,
        scaling: ScorecardScaling,
        features: Sequence[str] | None = None,
        max_reasons: int = DEFAULT_MAX_REASONS,
    ) -> None:
        if max_reasons < 1:
            raise DecisionError(f"max_reasons must be >= 1; got {max_reasons}")
        names = list(baseline) if features is None else list(features)
        if not names:
            raise DecisionError("features must name at least one feature; got none")
        missing = [name for name in names if name not in baseline]
        if missing:
            raise DecisionError(f"baseline must give a value for every feature; missing {missing}")
        self._entries = [table.entry(name) for name in names]  # fails early on unknown features
        self._predict_logit = predict_logit
        self._preprocessor = preprocessor
        self._features = names
        self._baseline = dict(baseline)
        self._factor = scaling.factor
        self._max_reasons = max_reasons
        base_row = np.asarray(preprocessor.transform(_frame([dict(baseline)], names)))
        if base_row.ndim != 2 or base_row.shape[0] != 1:
            raise DecisionError(
                f"preprocessor.transform must return one row per input row; got {base_row.shape}"
            )
        self._base_row = base_row[0]
        self._width = base_row.shape[1]
        rows: list[int] = []
        cols: list[int] = []
        for j, name in enumerate(names):
            columns = list(preprocessor.columns_of(name))
            if not columns:
                raise DecisionError(f"columns_of({name!r}) must list >= 1 column; got none")
            rows += [j] * len(columns)
            cols += columns
        # (row, column) pairs where occluded row j takes the baseline's values of feature j
        self._occ_rows = np.asarray(rows, dtype=np.intp)
        self._occ_cols = np.asarray(cols, dtype=np.intp)

    @property
    def features(self) -> list[str]:
        """Raw features the ranker scores, in order."""
        return list(self._features)

    def rank(self, applicant: Mapping[str, RawValue]) -> list[ReasonCode]:
        """Rank the reasons of one applicant given as raw feature values."""
        row = _applicant_row(applicant, self._features)
        # transform_records (fedrisk.ml.features.Preprocessor) skips building a DataFrame
        records = getattr(self._preprocessor, "transform_records", None)
        if callable(records):
            x = np.asarray(records([row]))
        else:
            x = np.asarray(self._preprocessor.transform(_frame([row], self._features)))
        return self.rank_transformed(x)[0]

    def rank_frame(self, frame: pd.DataFrame) -> list[list[ReasonCode]]:
        """Rank the reasons of every row of a raw frame (one transform, one forward pass)."""
        x = np.asarray(self._preprocessor.transform(frame))
        return self.rank_transformed(x)

    def rank_transformed(
        self, x: npt.NDArray[Any], *, logits: npt.ArrayLike | None = None
    ) -> list[list[ReasonCode]]:
        """Rank reasons for preprocessed rows; the fast path for the scoring service.

        Parameters
        ----------
        x
            Preprocessed rows, shape ``(m, d)`` (or ``(d,)`` for one applicant).
        logits
            The rows' logits if already computed; saves ``m`` rows in the forward pass.

        Returns
        -------
        list of list of ReasonCode
            Per row, at most ``max_reasons`` reasons with ``points > 0``, largest first.
        """
        rows = np.atleast_2d(np.asarray(x))
        if rows.ndim != 2 or rows.shape[1] != self._width:
            raise DecisionError(f"x must have shape (m, {self._width}); got {np.asarray(x).shape}")
        m, n_f = rows.shape[0], len(self._features)
        occluded = np.repeat(rows, n_f, axis=0)
        offsets = (np.arange(m, dtype=np.intp) * n_f)[:, None]
        occ_rows = (offsets + self._occ_rows[None, :]).ravel()
        occ_cols = np.tile(self._occ_cols, m)
        occluded[occ_rows, occ_cols] = self._base_row[occ_cols]
        if logits is None:
            out = np.asarray(self._predict_logit(np.concatenate([rows, occluded])), np.float64)
            own, occ = out[:m], out[m:]
        else:
            own = np.asarray(logits, dtype=np.float64).reshape(m)
            occ = np.asarray(self._predict_logit(occluded), dtype=np.float64)
        # a feature cost points when the applicant's value raised the bad logit above the baseline's
        points = self._factor * (own[:, None] - occ.reshape(m, n_f))
        return [self._top(row) for row in points]

    def _top(self, points: npt.NDArray[np.float64]) -> list[ReasonCode]:
        return top_reasons(points, self._entries, max_reasons=self._max_reasons)


def top_reasons(
    points: npt.NDArray[np.float64], entries: Sequence[ReasonCodeEntry], *, max_reasons: int
) -> list[ReasonCode]:
    """The features that cost the most points (``points > 0``), most first, ties in order."""
    order = np.argsort(-points, kind="stable")[:max_reasons]
    reasons: list[ReasonCode] = []
    for j in order:
        value = float(points[j])
        if value > _MIN_POINTS and math.isfinite(value):
            entry = entries[j]
            # fields come from a validated table and a float: skip re-validation (hot path)
            reasons.append(
                ReasonCode.model_construct(
                    code=entry.code, feature=entry.feature, text=entry.text, points=value
                )
            )
    return reasons


def rank_reasons(
    predict_logit: LogitFn,
    preprocessor: ColumnwiseTransform | TransformFn,
    applicant: Mapping[str, RawValue],
    baseline: Mapping[str, float | str],
    *,
    table: ReasonCodeTable,
    scaling: ScorecardScaling,
    max_reasons: int = DEFAULT_MAX_REASONS,
) -> list[ReasonCode]:
    """Rank the raw features that lowered one applicant's score versus the baseline.

    Parameters
    ----------
    predict_logit
        Forward pass on preprocessed rows returning logits ``(n,)`` (``NumpyScorer.logits``).
    preprocessor
        A column-wise preprocessor (fast path, see :class:`ReasonRanker`) or any callable that
        maps a raw frame to the model's input matrix (occlusion then happens on raw values).
    applicant
        The applicant's raw feature values; must hold every baseline feature.
    baseline
        Reference applicant's raw values; its keys are the features ranked.
    table
        Reason-code table.
    scaling
        Scorecard scaling, for points.
    max_reasons
        At most this many reasons.

    Returns
    -------
    list of ReasonCode
        Features with ``points > 0``, most points first, ties in baseline order.

    Notes
    -----
    For repeated use build a :class:`ReasonRanker` once: it pre-transforms the baseline.
    """
    if isinstance(preprocessor, ColumnwiseTransform):
        ranker = ReasonRanker(
            predict_logit,
            preprocessor,
            baseline,
            table=table,
            scaling=scaling,
            max_reasons=max_reasons,
        )
        return ranker.rank(applicant)
    if max_reasons < 1:
        raise DecisionError(f"max_reasons must be >= 1; got {max_reasons}")
    names = list(baseline)
    row = _applicant_row(applicant, names)
    occluded = [row] + [{**row, name: baseline[name]} for name in names]
    x = np.asarray(preprocessor(_frame(occluded, names)))
    logits = np.asarray(predict_logit(x), dtype=np.float64)
    points = scaling.factor * (logits[0] - logits[1:])
    order = np.argsort(-points, kind="stable")[:max_reasons]
    return [
        table.reason(names[j], float(points[j]))
        for j in order
        if points[j] > _MIN_POINTS and math.isfinite(points[j])
    ]


def _applicant_row(applicant: Mapping[str, RawValue], names: Sequence[str]) -> dict[str, RawValue]:
    missing = [name for name in names if name not in applicant]
    if missing:
        raise DecisionError(f"applicant must give every model feature; missing {missing}")
    return {name: applicant[name] for name in names}


def _frame(rows: Sequence[Mapping[str, RawValue]], names: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame.from_records(list(rows), columns=list(names))
