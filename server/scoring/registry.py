"""Model registry of the scoring service: verified artifacts, scorers, champion and challenger.

Each artifact in ``REGISTRY/<model_id>/`` is verified against the trusted keys in
``REGISTRY/trusted_keys/*.pub`` and turned into a :class:`LoadedModel` (the artifact's
:class:`fedrisk.ml.pipeline.RiskPipeline`, reason ranker, scaling), built once. A refused
artifact is remembered with the typed ``reason`` of its :class:`fedrisk.errors.ArtifactError`.
Traffic per stage goes to the champion, except a stable hash of the subject id sends the
configured share to the challenger.

A vertical model's guest part (:mod:`server.scoring.vertical_models`) is verified and refused
the same way and kept in :attr:`ModelRegistry.vertical`; it can be an A-card champion or
challenger, scored with the hosts' live parts by the decision route only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedrisk.data.schema import DatasetSchema, FeatureKind, FeatureSpec
from fedrisk.decisions.contribution_reasons import ContributionRanker
from fedrisk.decisions.reasons import ReasonCode, ReasonCodeTable, ReasonRanker
from fedrisk.decisions.scorecard import ScorecardScaling
from fedrisk.errors import ArtifactError, ArtifactRefusal, FedRiskError
from fedrisk.files import staged_directory
from fedrisk.ml.inference import sigmoid
from fedrisk.ml.pipeline import RiskPipeline
from fedrisk.ml.tree_shap import TreeExplainer
from fedrisk.ml.trees import TreeModel
from fedrisk.release.artifact import (
    ARTIFACT_FILE,
    MODEL_ID_PATTERN,
    SIGNATURE_FILE,
    TRUSTED_KEYS_DIR,
    ModelArtifact,
    forest_from_artifact,
    load_trusted_keys,
    pipeline_from_artifact,
    read_artifact,
)
from server.scoring.errors import ConflictError, InvalidInputError, NotFoundError, UnavailableError
from server.scoring.settings import STAGES, Stage
from server.scoring.store import Assignment
from server.scoring.vertical_models import VerticalModel, build_vertical_model, is_vertical_part

logger = logging.getLogger(__name__)

Role = Literal["champion", "challenger"]


@dataclass(frozen=True)
class Scored:
    """Model output for a batch of rows."""

    x: npt.NDArray[np.float32]
    logits: npt.NDArray[np.float64]
    pd: npt.NDArray[np.float64]
    score: npt.NDArray[np.float64]


_MISSING = object()


class FeatureChecker:
    """Checks request features against a model schema; built once per model.

    Unknown features, missing or null non-nullable ones, wrong kinds, numbers outside the schema's
    ``[min, max]`` and unknown categories are all reported, each with its ``loc``.
    """

    def __init__(self, schema: DatasetSchema, *, model_id: str) -> None:
        self.model_id = model_id
        self.names = schema.feature_names
        self._known = frozenset(self.names)
        self._specs = [
            (
                s.name,
                s.kind is FeatureKind.NUMERIC,
                s.min,
                s.max,
                frozenset(s.categories or ()),
                s.nullable,
            )
            for s in schema.features
        ]

    def check(
        self, features: Mapping[str, object], *, prefix: tuple[str, ...] = ("body", "features")
    ) -> None:
        """Raise :class:`InvalidInputError` listing every problem; return silently when valid."""
        errors: list[dict[str, object]] = []
        for name in features:
            if name not in self._known:
                errors.append(
                    _error(
                        (*prefix, name),
                        "extra_forbidden",
                        f"unknown feature for model {self.model_id}",
                    )
                )
        for name, numeric, lo, hi, categories, nullable in self._specs:
            value = features.get(name, _MISSING)
            loc = (*prefix, name)
            if value is _MISSING or value is None:
                if not nullable:
                    kind = "missing" if value is _MISSING else "null_not_allowed"
                    errors.append(
                        _error(loc, kind, f"feature {name} is required by model {self.model_id}")
                    )
                continue
            if numeric:
                if not isinstance(value, float | int) or isinstance(value, bool):
                    errors.append(_error(loc, "float_type", f"feature {name} must be a number"))
                elif (lo is not None and value < lo) or (hi is not None and value > hi):
                    errors.append(
                        _error(
                            loc,
                            "out_of_range",
                            f"feature {name} must be in [{lo}, {hi}]; got {value}",
                        )
                    )
            elif not isinstance(value, str):
                errors.append(
                    _error(loc, "string_type", f"feature {name} must be a category string")
                )
            elif value not in categories:
                errors.append(
                    _error(
                        loc,
                        "enum",
                        f"feature {name} must be one of {sorted(categories)}; got {value!r}",
                    )
                )
        if errors:
            raise InvalidInputError(errors)


def _error(loc: tuple[str, ...], kind: str, msg: str) -> dict[str, object]:
    return {"type": kind, "loc": list(loc), "msg": msg}


@dataclass
class LoadedModel:
    """A verified artifact with everything needed to score, built once at load time."""

    artifact: ModelArtifact
    artifact_sha256: str
    signer: str
    pipeline: RiskPipeline | TreeModel
    ranker: ReasonRanker | ContributionRanker
    scaling: ScorecardScaling
    schema: DatasetSchema
    checker: FeatureChecker

    @property
    def model_id(self) -> str:
        """The artifact's model id (its version)."""
        return self.artifact.model_id

    def score_records(self, records: Sequence[Mapping[str, object]]) -> Scored:
        """Preprocess and score plain-mapping rows (the request path, no pandas)."""
        return self._score(self.pipeline.transform_records(records))

    def score_frame(self, frame: pd.DataFrame) -> Scored:
        """Preprocess and score the rows of a frame (the batch path)."""
        return self._score(self.pipeline.transform(frame))

    def _score(self, x: npt.NDArray[np.float32]) -> Scored:
        logits = self.pipeline.scorer_.logits(x)
        return Scored(
            x=x, logits=logits, pd=sigmoid(logits), score=self.scaling.score_from_logit(logits)
        )

    def reasons(self, scored: Scored) -> list[list[ReasonCode]]:
        """Up to four reason codes per scored row (occlusion against the artifact's baseline)."""
        return self.ranker.rank_transformed(scored.x, logits=scored.logits)


@dataclass(frozen=True)
class Refusal:
    """An artifact the registry would not load, and why."""

    path: str
    reason: ArtifactRefusal
    message: str


def artifact_digest(directory: Path) -> str:
    """SHA-256 hex of ``artifact.json`` (what the DB records for a registered model)."""
    return hashlib.sha256((directory / ARTIFACT_FILE).read_bytes()).hexdigest()


def build_model(
    directory: Path,
    *,
    trusted_keys: Mapping[str, Ed25519PublicKey],
    reason_table: ReasonCodeTable | None = None,
) -> LoadedModel:
    """Verify one artifact directory and build its scoring objects.

    The pipeline comes from :func:`fedrisk.release.artifact.pipeline_from_artifact`, the one
    artifact -> scorer path.

    Raises
    ------
    SignatureError
        Unsigned, untrusted signer, or tampered content (``reason`` says which).
    ArtifactError
        Unreadable (``reason`` unreadable) or incompatible artifact: preprocessing that does not
        fit the model, a baseline missing features, an unknown format.
    """
    artifact = read_artifact(directory, trusted_keys=trusted_keys)
    signer = json.loads((directory / SIGNATURE_FILE).read_bytes()).get("key_id", "")
    schema = artifact.dataset_schema
    table = reason_table or ReasonCodeTable.from_schema(schema)
    pipeline: RiskPipeline | TreeModel
    ranker: ReasonRanker | ContributionRanker
    try:
        if artifact.model_spec.kind == "gbdt":
            pipeline = forest_from_artifact(artifact)
            explainer = TreeExplainer(pipeline.forest)
            ranker = ContributionRanker(
                explainer.shap_values_of,
                table=table,
                scaling=artifact.scorecard,
                features=schema.feature_names,
            )
        else:
            pipeline = pipeline_from_artifact(artifact)
            ranker = ReasonRanker(
                pipeline.scorer_.logits,
                pipeline.preprocessor_,
                artifact.baseline,
                table=table,
                scaling=artifact.scorecard,
                features=schema.feature_names,
            )
    except ArtifactError:
        raise
    except FedRiskError as e:
        raise ArtifactError(f"artifact {artifact.model_id}: cannot rank its reasons: {e}") from e
    return LoadedModel(
        artifact=artifact,
        artifact_sha256=artifact_digest(directory),
        signer=str(signer),
        pipeline=pipeline,
        ranker=ranker,
        scaling=artifact.scorecard,
        schema=schema,
        checker=FeatureChecker(schema, model_id=artifact.model_id),
    )


def challenger_bucket(subject_id: str, *, salt: str) -> float:
    """Stable pseudo-uniform number in [0, 1) for a subject: the traffic-split hash.

    The same subject always lands in the same bucket for the same experiment (``salt`` is the
    challenger's model id), so an applicant is not bounced between models.
    """
    digest = hashlib.blake2b(f"{salt}\x00{subject_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class ModelRegistry:
    """Verified models of a registry directory and the champion/challenger assignment per stage.

    Parameters
    ----------
    registry_dir
        ``REGISTRY`` with ``<model_id>/`` artifacts and ``trusted_keys/*.pub``.
    reason_table
        Optional reason-code table overriding the derived codes/texts.
    """

    def __init__(self, registry_dir: Path, *, reason_table: ReasonCodeTable | None = None) -> None:
        self.registry_dir = Path(registry_dir)
        self.reason_table = reason_table
        self.trusted_keys: dict[str, Ed25519PublicKey] = {}
        self.reload_trusted_keys()
        self.models: dict[str, LoadedModel] = {}
        self.vertical: dict[str, VerticalModel] = {}
        self.refused: dict[str, Refusal] = {}
        self.assignments: dict[Stage, Assignment] = {
            stage: Assignment(stage=stage) for stage in STAGES
        }

    # -- loading ------------------------------------------------------------------------------
    def reload_trusted_keys(self) -> None:
        """Read ``trusted_keys/*.pub`` again (a newly trusted releasing party needs no restart)."""
        keys_dir = self.registry_dir / TRUSTED_KEYS_DIR
        self.trusted_keys = load_trusted_keys(keys_dir) if keys_dir.is_dir() else {}
        if not self.trusted_keys:
            logger.warning("no trusted keys in %s: every artifact will be refused", keys_dir)

    def artifact_dirs(self) -> list[Path]:
        """Candidate artifact directories (skips ``trusted_keys`` and hidden/temp dirs)."""
        if not self.registry_dir.is_dir():
            return []
        return sorted(
            p
            for p in self.registry_dir.iterdir()
            if p.is_dir() and p.name != TRUSTED_KEYS_DIR and not p.name.startswith(".")
        )

    def verify(self, directory: Path) -> LoadedModel:
        """Verify and build one artifact without registering it (see :func:`build_model`)."""
        return build_model(
            directory, trusted_keys=self.trusted_keys, reason_table=self.reason_table
        )

    def load_directory(self, directory: Path) -> LoadedModel | VerticalModel | None:
        """Load one registry directory; a refused artifact is logged and remembered, not raised."""
        try:
            model = (
                self._verify_vertical(directory)
                if is_vertical_part(directory)
                else self.verify(directory)
            )
        except ArtifactError as e:
            refusal = Refusal(path=str(directory), reason=e.reason, message=str(e))
            self.refused[directory.name] = refusal
            logger.error("refused model artifact %s (%s): %s", directory, refusal.reason, e)
            return None
        self.refused.pop(directory.name, None)
        if isinstance(model, VerticalModel):
            self.vertical[model.model_id] = model
            what = f"vertical, guest part of {model.part.party}, hosts {', '.join(model.hosts)}"
        else:
            self.models[model.model_id] = model
            what = f"stage {model.artifact.stage}"
        logger.info("loaded model %s (%s, signer %s)", model.model_id, what, model.signer)
        return model

    def _verify_vertical(self, directory: Path) -> VerticalModel:
        model = build_vertical_model(
            directory,
            trusted_keys=self.trusted_keys,
            reason_table=self.reason_table,
            checker=FeatureChecker,
            digest=artifact_digest,
        )
        if model.model_id != directory.name:
            raise ArtifactError(
                f"vertical part in {directory} must be of model {directory.name!r}; got "
                f"{model.model_id!r}"
            )
        return model

    def has(self, model_id: str) -> bool:
        """Whether ``model_id`` is loaded, whole or vertical."""
        return model_id in self.models or model_id in self.vertical

    def digest_of(self, model_id: str) -> str | None:
        """The loaded ``artifact.json``'s SHA-256 of ``model_id`` (whole or vertical), or None."""
        model = self.models.get(model_id) or self.vertical.get(model_id)
        return None if model is None else model.artifact_sha256

    def load_all(self, *, only: Iterable[str] | None = None) -> None:
        """Load every artifact directory (or only the named ones) not loaded yet."""
        wanted = None if only is None else set(only)
        for directory in self.artifact_dirs():
            if self.has(directory.name) or (wanted is not None and directory.name not in wanted):
                continue
            self.load_directory(directory)

    def install(self, source: Path) -> tuple[LoadedModel, Path]:
        """Verify an artifact directory and copy it into the registry.

        The source is verified before anything is copied, and the copy lands under a temporary
        name that is renamed into place, so a bad artifact never touches the registry.

        Raises
        ------
        SignatureError, ArtifactError
            The artifact is refused.
        ConflictError
            The registry already holds different content under this model id.
        """
        self.reload_trusted_keys()
        if "\x00" in str(source):
            raise ArtifactError("artifact directory path must not contain NUL bytes")
        model = self.verify(source)
        target = self.registry_dir / model.model_id
        if target.resolve() == source.resolve():
            return model, target
        if target.exists():
            if artifact_digest(target) != model.artifact_sha256:
                raise ConflictError(
                    f"model_id {model.model_id!r} already exists in the registry with different "
                    "content; released models are immutable, use a new model_id"
                )
            return self.models.get(model.model_id, model), target
        try:
            with staged_directory(target) as tmp:
                for name in (ARTIFACT_FILE, SIGNATURE_FILE):
                    shutil.copyfile(source / name, tmp / name)
        except OSError as e:
            raise ArtifactError(f"cannot copy artifact into {target}: {e}") from e
        # re-verify the installed copy: what is served is what was checked
        return self.verify(target), target

    def install_upload(
        self, artifact_bytes: bytes, signature_bytes: bytes
    ) -> tuple[LoadedModel, Path]:
        """Verify uploaded ``artifact.json`` + ``artifact.sig`` bytes and install them."""
        try:
            model_id = json.loads(artifact_bytes).get("model_id")
        except (ValueError, AttributeError) as e:
            raise ArtifactError("artifact must be a JSON object with a model_id") from e
        if not isinstance(model_id, str) or not MODEL_ID_PATTERN.fullmatch(model_id):
            raise ArtifactError(
                f"artifact model_id must match {MODEL_ID_PATTERN.pattern}; got {model_id!r}"
            )
        with tempfile.TemporaryDirectory(prefix="fedrisk-upload-") as tmp:
            staged = Path(tmp) / model_id
            staged.mkdir()
            (staged / ARTIFACT_FILE).write_bytes(artifact_bytes)
            (staged / SIGNATURE_FILE).write_bytes(signature_bytes)
            return self.install(staged)

    def add(self, model: LoadedModel) -> None:
        """Make a verified model available for routing."""
        self.models[model.model_id] = model
        self.refused.pop(model.model_id, None)

    def refuse(self, model_id: str, *, reason: ArtifactRefusal, message: str) -> Refusal:
        """Unload a model (when loaded) and remember why it is refused."""
        self.models.pop(model_id, None)
        self.vertical.pop(model_id, None)
        refusal = Refusal(path=str(self.registry_dir / model_id), reason=reason, message=message)
        self.refused[model_id] = refusal
        logger.error("refused model artifact %s (%s): %s", model_id, reason, message)
        return refusal

    # -- routing ------------------------------------------------------------------------------
    def set_assignments(self, assignments: Mapping[Stage, Assignment]) -> None:
        """Replace the champion/challenger table (after a DB change)."""
        self.assignments = dict(assignments)

    def get(self, model_id: str) -> LoadedModel:
        """A loaded model by id. Raises NotFoundError."""
        try:
            return self.models[model_id]
        except KeyError as e:
            raise NotFoundError(f"model {model_id!r} is not loaded") from e

    def route(self, stage: Stage, subject_id: str) -> tuple[LoadedModel, Role]:
        """Model answering for ``subject_id`` at ``stage``.

        Raises
        ------
        UnavailableError
            The stage has no loaded champion.
        """
        assignment = self.assignments[stage]
        challenger = assignment.challenger_id
        if (
            challenger is not None
            and challenger in self.models
            and challenger_bucket(subject_id, salt=challenger) < assignment.challenger_share
        ):
            return self.models[challenger], "challenger"
        champion = assignment.champion_id
        if champion is None or champion not in self.models:
            raise UnavailableError(f"stage {stage} has no loaded champion model")
        return self.models[champion], "champion"

    def route_any(self, stage: Stage, subject_id: str) -> tuple[LoadedModel | VerticalModel, Role]:
        """Like :meth:`route`, and a vertical champion or challenger answers too."""
        assignment = self.assignments[stage]
        challenger = assignment.challenger_id
        if (
            challenger is not None
            and self.has(challenger)
            and challenger_bucket(subject_id, salt=challenger) < assignment.challenger_share
        ):
            return self.vertical.get(challenger) or self.models[challenger], "challenger"
        champion = assignment.champion_id
        if champion is not None and champion in self.vertical:
            return self.vertical[champion], "champion"
        return self.route(stage, subject_id)

    def champion(self, stage: Stage) -> LoadedModel:
        """The stage's champion. Raises UnavailableError.

        Raises
        ------
        ConflictError
            The champion is a vertical model: whatever needs a whole model (batch scoring,
            monitoring views) cannot use it.
        """
        champion = self.assignments[stage].champion_id
        if champion is not None and champion in self.vertical:
            raise ConflictError(
                f"stage {stage}'s champion {champion} is a vertical model; batch scoring needs a "
                "whole model, while a vertical score needs each host's live part per applicant "
                "(one masked request per applicant): score its applications one by one with "
                "POST /v1/applications/decision"
            )
        if champion is None or champion not in self.models:
            raise UnavailableError(f"stage {stage} has no loaded champion model")
        return self.models[champion]

    def role_of(self, model_id: str) -> tuple[Stage, Role] | None:
        """Stage and role a model currently holds, or None."""
        for stage, assignment in self.assignments.items():
            if assignment.champion_id == model_id:
                return stage, "champion"
            if assignment.challenger_id == model_id:
                return stage, "challenger"
        return None


def feature_kind(spec: FeatureSpec) -> str:
    """``numeric`` or ``categorical`` (for docs and errors)."""
    return "numeric" if spec.kind is FeatureKind.NUMERIC else "categorical"


def describe_schema(schema: DatasetSchema) -> list[dict[str, Any]]:
    """Feature list of a model for ``GET /v1/models``."""
    return [
        {
            "name": s.name,
            "kind": feature_kind(s),
            "min": s.min,
            "max": s.max,
            "categories": list(s.categories) if s.categories else None,
            "nullable": s.nullable,
            "description": s.description,
        }
        for s in schema.features
    ]
