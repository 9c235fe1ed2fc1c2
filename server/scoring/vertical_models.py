"""Vertical models in the lender's registry: a released guest part, verified, with what scoring
one applicant needs on the lender's side (feature checks, the guest's own logit and reasons).

A vertical model is released as signed parts (:mod:`fedrisk.release.vertical`); the lender
receives the guest's part and puts it into its registry as ``REGISTRY/<model_id>/`` (the
``artifact.json`` + ``artifact.sig`` the guest wrote under ``<release_dir>/<model_id>/<guest>/``).
The registry tells it from a whole model by its ``format`` and verifies it under the parts'
signing domain, so a part can never pass for a whole model nor the other way round. The hosts'
parts stay with the hosts, which answer their share of each decision
(:mod:`server.scoring.vertical_hosts`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedrisk.data.schema import DatasetSchema, FeatureKind, FeatureSpec
from fedrisk.decisions.contribution_reasons import ContributionRanker
from fedrisk.decisions.reasons import ReasonCode, ReasonCodeTable
from fedrisk.decisions.scorecard import ScorecardScaling
from fedrisk.errors import ArtifactError, ArtifactRefusal, FedRiskError
from fedrisk.ml.vertical import CLIP_SD, KNOWN_COLUMN, PartyPreprocessor
from fedrisk.release.artifact import ARTIFACT_FILE, SIGNATURE_FILE
from fedrisk.release.vertical import VerticalPart, read_part
from server.scoring.settings import Stage

if TYPE_CHECKING:
    from server.scoring.registry import FeatureChecker

VERTICAL_PART_FORMAT: Final = "fedrisk.vertical-part/1"
VERTICAL_STAGE: Final[Stage] = "application"
"""Vertical models score applications only: behaviour and collection reviews have no host
services to ask."""


def is_vertical_part(directory: Path) -> bool:
    """Whether ``directory/artifact.json`` claims to be a vertical model part (not verified)."""
    try:
        head = json.loads((directory / ARTIFACT_FILE).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and head.get("format") == VERTICAL_PART_FORMAT


def guest_schema(part: VerticalPart) -> DatasetSchema:
    """The applicant features the guest part takes: its numeric and categorical columns.

    Every feature is nullable: the guest part imputes a missing value as the training mean
    (zero after standardising), as it did in training.
    """
    prep = PartyPreprocessor.from_dict(part.preprocessing)
    numeric = [FeatureSpec(name=c, kind=FeatureKind.NUMERIC, nullable=True) for c in prep.numeric]
    categorical = [
        FeatureSpec(
            name=c,
            kind=FeatureKind.CATEGORICAL,
            categories=tuple(prep.levels_[c]),
            nullable=True,
        )
        for c in prep.categorical
    ]
    return DatasetSchema(
        name=f"{part.model_id}:{part.party}",
        id_column="_applicant",
        target_column=None,
        features=(*numeric, *categorical),
    )


@dataclass
class VerticalModel:
    """A verified guest part of a vertical model, ready to score the lender's side."""

    part: VerticalPart
    artifact_sha256: str
    signer: str
    schema: DatasetSchema
    checker: FeatureChecker
    scaling: ScorecardScaling
    ranker: ContributionRanker
    prep: PartyPreprocessor
    weights: npt.NDArray[np.float64]
    """The guest's feature weights (intercept excluded), in matrix column order."""
    by_feature: npt.NDArray[np.float64]
    """Matrix column -> raw feature (0/1, ``(columns, features)``): sums contributions."""
    numeric: list[tuple[int, str, float, float]]
    """(matrix column, feature, mean, scale) of each numeric feature."""
    levels: dict[tuple[str, str], int]
    """(categorical feature, level) -> its one-hot matrix column."""
    known_column: int | None
    clip: float

    @property
    def model_id(self) -> str:
        """The vertical model's id (shared by all its parts)."""
        return self.part.model_id

    @property
    def stage(self) -> Stage:
        """The lifecycle stage a vertical model serves."""
        return VERTICAL_STAGE

    @property
    def hosts(self) -> list[str]:
        """The parties whose parts complete the score, in name order."""
        return sorted(p for p in self.part.parties if p != self.part.party)

    def row(self, features: Mapping[str, object]) -> npt.NDArray[np.float64]:
        """The guest's matrix row of one applicant: what :meth:`PartyPreprocessor.transform`
        gives for a one-row frame, without building one (a frame costs ~0.5 ms a decision)."""
        x = np.zeros(len(self.prep.columns))
        for j, name, mean, scale in self.numeric:
            value = features.get(name)
            if isinstance(value, int | float) and math.isfinite(value):
                x[j] = min(max((float(value) - mean) / scale, -self.clip), self.clip)
        for name in self.prep.categorical:
            value = features.get(name)
            column = None if value is None else self.levels.get((name, str(value)))
            if column is not None:
                x[column] = 1.0
        if self.known_column is not None:
            x[self.known_column] = 1.0  # the guest knows its own applicant
        return x

    def own(self, features: Mapping[str, object]) -> tuple[float, list[ReasonCode]]:
        """The guest part's logit (intercept included) for one applicant, and the guest's
        reason codes (features that raised the logit above the average applicant's)."""
        x = self.row(features)
        logit = float(self.part.weights[0] + x @ self.weights)
        return logit, self.ranker.rank_transformed(x[None, :].astype(np.float32))[0]


def build_vertical_model(
    directory: Path,
    *,
    trusted_keys: Mapping[str, Ed25519PublicKey],
    reason_table: ReasonCodeTable | None,
    checker: type[FeatureChecker],
    digest: Callable[[Path], str],
) -> VerticalModel:
    """Verify a guest part in ``directory`` and build its scoring objects.

    ``checker`` and ``digest`` are the registry's feature checker and artifact digest, so a
    vertical model is checked and recorded exactly as a whole one.

    Raises
    ------
    SignatureError
        Unsigned, untrusted signer, or tampered content (``reason`` says which).
    ArtifactError
        Unreadable, not a guest's part, or a preprocessing that does not fit its weights.
    """
    try:
        part = read_part(directory, trusted_keys=trusted_keys)
    except ArtifactError:
        raise
    except ValueError as e:  # a signed file that is not a valid part
        raise ArtifactError(
            f"vertical part {directory} must be a valid part: {e}",
            reason=ArtifactRefusal.UNREADABLE,
        ) from e
    if part.role != "guest":
        raise ArtifactError(
            f"vertical part in the registry must be the guest's; got the {part.role} part of "
            f"{part.party} (a host keeps its part and serves it with `fedrisk party serve`)"
        )
    try:
        prep = PartyPreprocessor.from_dict(part.preprocessing)
        schema = guest_schema(part)
    except (KeyError, TypeError, ValueError, FedRiskError) as e:
        raise ArtifactError(f"vertical part {part.model_id}: unusable preprocessing: {e}") from e
    if part.columns != ["_intercept", *prep.columns]:
        raise ArtifactError(
            f"vertical part {part.model_id}: columns must be the intercept and the "
            f"preprocessing's columns {prep.columns}; got {part.columns}"
        )
    names = schema.feature_names
    by_feature = np.zeros((len(prep.columns), len(names)))
    for j, column in enumerate(prep.columns):
        by_feature[j, names.index(column.split("=", 1)[0])] = 1.0
    weights = np.asarray(part.weights[1:], dtype=np.float64)
    table = reason_table
    if table is None or not set(names) <= set(table.features):
        table = ReasonCodeTable.from_schema(schema)
    scaling = ScorecardScaling()

    def contributions(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        return np.asarray((np.asarray(x, dtype=np.float64) * weights) @ by_feature)

    signer = json.loads((directory / SIGNATURE_FILE).read_bytes()).get("key_id", "")
    return VerticalModel(
        part=part,
        artifact_sha256=digest(directory),
        signer=str(signer),
        schema=schema,
        checker=checker(schema, model_id=part.model_id),
        scaling=scaling,
        ranker=ContributionRanker(contributions, table=table, scaling=scaling, features=names),
        prep=prep,
        weights=weights,
        by_feature=by_feature,
        numeric=[
            (j, c, prep.means_[c], prep.scales_[c])
            for j, c in enumerate(prep.columns)
            if c in prep.numeric
        ],
        levels={
            (c, level): prep.columns.index(f"{c}={level}")
            for c in prep.categorical
            for level in prep.levels_[c]
        },
        known_column=prep.columns.index(KNOWN_COLUMN) if prep.known_indicator_ else None,
        clip=float(part.preprocessing.get("clip_sd", CLIP_SD)),
    )
