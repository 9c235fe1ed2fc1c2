"""Signed model artifacts: the released global model with everything needed to score and audit it.

Layout of one artifact in a registry directory::

    REGISTRY/<model_id>/artifact.json   canonical JSON of ``ModelArtifact`` (sorted keys, no spaces)
    REGISTRY/<model_id>/artifact.sig    JSON: algorithm, signer key id, base64 Ed25519 signature
    REGISTRY/trusted_keys/<name>.pub    PEM Ed25519 public keys of the releasing parties

The signature covers the exact bytes of ``artifact.json`` (prefixed with a domain tag), so a change
of one byte anywhere in the file fails verification.

:func:`artifact_from_pipeline` packs a fitted :class:`fedrisk.ml.pipeline.RiskPipeline` and
:func:`pipeline_from_artifact` unpacks it: the one way from a released model to its scorer.
Every refusal raises an :class:`fedrisk.errors.ArtifactError` whose ``reason`` says why.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedrisk.data.schema import DatasetSchema
from fedrisk.decisions.scorecard import BinSummary, PointsRow, ScorecardScaling, points_table
from fedrisk.errors import (
    ArtifactError,
    ArtifactRefusal,
    FedRiskError,
    IdentityError,
    SignatureError,
)
from fedrisk.files import staged_directory
from fedrisk.ml.features import Preprocessor
from fedrisk.ml.inference import ModelSpec, count_parameters
from fedrisk.ml.pipeline import FeatureEncoder, RiskPipeline
from fedrisk.ml.privacy import ACCOUNTANT, PrivacyPlan, accountant_version, party_epsilons
from fedrisk.ml.trees import Forest, TreeModel
from fedrisk.ml.woe import WOE_FORMAT, WoeEncoder
from fedrisk.release.identity import key_id, load_verify_key
from fedrisk.release.reference import ScoreReference

ARTIFACT_FILE: Final = "artifact.json"
SIGNATURE_FILE: Final = "artifact.sig"
RESULTS_FILE: Final = "results.json"
TRUSTED_KEYS_DIR: Final = "trusted_keys"
SIGNATURE_FORMAT: Final = "fedrisk.release.artifact-signature/1"
SIGNATURE_ALGORITHM: Final = "ed25519"
SIGNING_DOMAIN: Final = b"fedrisk.release.artifact/1\n"
"""Prefix of every signed message, so an artifact signature can never be replayed as a signature
over some other kind of message made with the same key (and vice versa)."""

MODEL_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RoundMetrics(BaseModel):
    """Pooled evaluation of the global model after one federated round."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    round: int = Field(ge=0)
    auc: float
    ks: float
    n_parties: int = Field(ge=1)

    @field_validator("auc", "ks")
    @classmethod
    def _unit_interval(cls, value: float) -> float:
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise ValueError(f"metric must be in [0, 1]; got {value}")
        return value


class Lineage(BaseModel):
    """Where a model came from: the run, the parties, the data it was trained on, when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str = Field(min_length=1)
    parties: list[str]
    rounds: int = Field(ge=0)
    dataset_fingerprint: str
    created_at: str
    secure_aggregation: str | None = None
    """How the parties' vectors were protected from the coordinator, e.g. ``"ckks+pairwise-masks
    threshold=4/5"`` (None in artifacts written before it was recorded)."""

    @field_validator("created_at")
    @classmethod
    def _iso_timestamp(cls, value: str) -> str:
        try:
            datetime.fromisoformat(value)
        except ValueError as e:
            raise ValueError(f"created_at must be an ISO-8601 timestamp; got {value!r}") from e
        return value


def utc_now_iso() -> str:
    """Current UTC time as ISO-8601 with seconds, for ``Lineage.created_at``."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class PrivacyRecord(BaseModel):
    """The differential privacy a released model was trained under (:mod:`fedrisk.ml.privacy`).

    ``epsilon`` is the accountant's ε of the release at ``delta``: in sample mode the largest
    party's (each customer's rows sit at one party), in client mode the sum's over the rounds
    aggregated. It never exceeds ``epsilon_budget``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["sample", "client"]
    epsilon: float = Field(ge=0.0)
    delta: float = Field(gt=0.0, lt=1.0)
    epsilon_budget: float = Field(gt=0.0)
    clip_norm: float = Field(gt=0.0)
    noise_multiplier: float = Field(gt=0.0)
    sampling_rate: float = Field(gt=0.0, le=1.0)
    steps_per_round: int = Field(ge=1)
    rounds: int = Field(ge=0)
    epsilon_per_party: dict[str, float]
    accountant: str
    composition: str

    @classmethod
    def from_plan(
        cls, plan: PrivacyPlan, *, history: Sequence[Mapping[str, object]], parties: Sequence[str]
    ) -> PrivacyRecord:
        """The record of a run under ``plan``: each party's accountant over the rounds the
        history says it trained in, and the release's ε.

        Raises
        ------
        pydantic.ValidationError
            If the accountant's ε exceeds the budget (a run longer than planned).
        """
        per_party = party_epsilons(plan, history, parties)
        return cls(
            mode=plan.mode,
            epsilon=max(per_party.values(), default=0.0),
            delta=plan.delta,
            epsilon_budget=plan.epsilon_budget,
            clip_norm=plan.clip_norm,
            noise_multiplier=plan.noise_multiplier,
            sampling_rate=plan.sampling_rate,
            steps_per_round=plan.steps_per_round,
            rounds=len(history),
            epsilon_per_party=per_party,
            accountant=f"{ACCOUNTANT} ({accountant_version()})",
            composition=plan.describe_composition(),
        )

    @model_validator(mode="after")
    def _within_budget(self) -> PrivacyRecord:
        if self.epsilon > self.epsilon_budget:
            raise ValueError(
                f"epsilon must be within the budget {self.epsilon_budget}; got {self.epsilon}"
            )
        return self


# The contract names the field ``schema``, which shadows BaseModel's deprecated ``schema()``.
# Declaring it in a small base class keeps the warning (and the type: ignore) in one place.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)

    class _SchemaField(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        schema: DatasetSchema  # type: ignore[assignment]


class ModelArtifact(_SchemaField):
    """A released global model: weights, preprocessing, schema, scaling, metrics and lineage.

    ``schema`` (inherited field) is the ``DatasetSchema`` the model was trained on.

    ``logit_offset`` is added to the model's logit when scoring: it undoes the prior shift of
    class-weighted training (``RiskPipeline.logit_offset_``).

    A points scorecard (an LR on WOE features, preprocessing format ``fedrisk.woe/1``) also
    carries ``points_table``: feature, bin, WOE, IV and points, the table a reader checks.

    Notes
    -----
    ``he_params`` records the CKKS parameters the model was aggregated under (audit only);
    the artifact holds no key material.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = 1
    model_id: str
    stage: Literal["application", "behaviour", "collection"] | None = None
    model_spec: ModelSpec
    weights: list[float]
    preprocessing: dict[str, object]
    baseline: dict[str, float | str]
    scorecard: ScorecardScaling = Field(default_factory=ScorecardScaling)
    points_table: list[PointsRow] | None = None
    metrics: list[RoundMetrics] = Field(default_factory=list)
    logit_offset: float = 0.0
    he_params: dict[str, object] | None = None
    lineage: Lineage
    trees: dict[str, object] | None = None
    """The ``gbdt`` kind's forest (:meth:`fedrisk.ml.trees.Forest.to_dict`); None otherwise."""
    reference: ScoreReference | None = None
    """PD bands of the release population from the pooled evaluation histograms
    (:func:`fedrisk.release.reference.reference_from_histograms`): the baseline of drift (PSI)
    and performance monitoring. None for artifacts released without it."""
    privacy: PrivacyRecord | None = None
    """The run's differential privacy (ε, δ, clip norm, noise multiplier, mode); None without."""

    @field_validator("model_id")
    @classmethod
    def _safe_model_id(cls, value: str) -> str:
        # The id becomes a directory name: no separators, no leading dot, no "..".
        if not MODEL_ID_PATTERN.fullmatch(value):
            raise ValueError(
                "model_id must be 1-128 characters of letters, digits, '.', '_' or '-', starting "
                f"with a letter or digit; got {value!r}"
            )
        return value

    @field_validator("preprocessing", "he_params", "trees")
    @classmethod
    def _plain_json(cls, value: dict[str, object] | None) -> dict[str, object] | None:
        # Checked here, not at write time: pydantic's JSON mode would silently turn NaN into null.
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"value must be plain JSON data without NaN/inf; got {e}") from e
        return value

    @field_validator("logit_offset")
    @classmethod
    def _finite_offset(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"logit_offset must be finite; got {value}")
        return value

    @field_validator("baseline")
    @classmethod
    def _finite_baseline(cls, value: dict[str, float | str]) -> dict[str, float | str]:
        bad = sorted(k for k, v in value.items() if isinstance(v, float) and not math.isfinite(v))
        if bad:
            raise ValueError(f"baseline values must be finite; got NaN/inf for {bad}")
        return value

    @model_validator(mode="after")
    def _weights_match_spec(self) -> ModelArtifact:
        if (self.trees is not None) != (self.model_spec.kind == "gbdt"):
            raise ValueError(
                f"trees must be present exactly for the gbdt kind; got kind "
                f"{self.model_spec.kind} with trees {'set' if self.trees else 'absent'}"
            )
        expected = count_parameters(self.model_spec)
        if len(self.weights) != expected:
            raise ValueError(
                f"weights must number {expected} for {self.model_spec}; got {len(self.weights)}"
            )
        if not all(math.isfinite(w) for w in self.weights):
            raise ValueError("weights must all be finite; got NaN or inf")
        return self

    @property
    def model_kind(self) -> str:
        """``scorecard`` for a points scorecard, else the spec kind (``lr``, ``mlp``, ``gbdt``)."""
        return (
            "scorecard" if self.preprocessing.get("format") == WOE_FORMAT else self.model_spec.kind
        )

    @property
    def dataset_schema(self) -> DatasetSchema:
        """The same as ``schema``, under a name that does not shadow ``BaseModel.schema``."""
        return self.schema


def artifact_from_pipeline(
    pipeline: RiskPipeline,
    *,
    model_id: str,
    stage: Literal["application", "behaviour", "collection"] | None,
    lineage: Lineage,
    scorecard: ScorecardScaling | None = None,
    metrics: Sequence[RoundMetrics] = (),
    he_params: Mapping[str, object] | None = None,
    reference: ScoreReference | None = None,
    privacy: PrivacyRecord | None = None,
) -> ModelArtifact:
    """Pack a fitted pipeline as an artifact (inverse of :func:`pipeline_from_artifact`).

    The baseline kept for reason codes is the preprocessor's typical applicant.

    Raises
    ------
    pydantic.ValidationError
        If a field is invalid (e.g. ``model_id`` unsafe as a directory name).
    """
    preprocessor = pipeline.preprocessor_
    scaling = ScorecardScaling() if scorecard is None else scorecard
    return ModelArtifact(
        model_id=model_id,
        stage=stage,
        model_spec=pipeline.spec_,
        weights=pipeline.weights_.tolist(),
        preprocessing=preprocessor.to_dict(),
        schema=preprocessor.schema,
        baseline=preprocessor.reference_row(),
        scorecard=scaling,
        points_table=_points_table(pipeline, scaling),
        logit_offset=pipeline.logit_offset_,
        metrics=list(metrics),
        he_params=None if he_params is None else dict(he_params),
        lineage=lineage,
        reference=reference,
        privacy=privacy,
    )


def _check_schema(artifact: ModelArtifact, schema: DatasetSchema, *, part: str) -> None:
    expected = artifact.dataset_schema
    if schema.fingerprint() != expected.fingerprint():
        raise ArtifactError(
            f"artifact {artifact.model_id}: {part} schema must equal the artifact schema "
            f"{expected.name}; got {schema.name}"
        )


def _points_table(pipeline: RiskPipeline, scaling: ScorecardScaling) -> list[PointsRow] | None:
    """The points table of a scorecard pipeline (LR on WOE features); None for other models."""
    encoder = pipeline.preprocessor_
    if not isinstance(encoder, WoeEncoder) or pipeline.spec_.kind != "lr":
        return None
    # LR weight vector layout: one weight per WOE column, then the bias.
    weights = pipeline.weights_
    by_name = {b.name: float(weights[j]) for j, b in enumerate(encoder.binnings_)}
    by_feature = {b.name: b for b in encoder.binnings_}
    # Strongest feature first (selected_ is ordered by falling IV).
    bins = [
        BinSummary(b.name, b.labels, b.goods, b.bads, b.woe, b.bin_ivs)
        for b in (by_feature[name] for name in encoder.selected_)
    ]
    return points_table(
        scaling, bins, weights=by_name, intercept=float(weights[-1]) + pipeline.logit_offset_
    )


def _encoder_from_dict(state: Mapping[str, object]) -> FeatureEncoder:
    if state.get("format") == WOE_FORMAT:
        return WoeEncoder.from_dict(state)
    return Preprocessor.from_dict(state)


def pipeline_from_artifact(artifact: ModelArtifact) -> RiskPipeline:
    """The fitted pipeline of a released model: its preprocessing, weights and offset.

    Every consumer of an artifact scores through this (the scoring service, the simulations,
    the studies), so a model is scored the same way wherever it is used.

    Raises
    ------
    ArtifactError
        With reason ``incompatible``: the preprocessing is not a valid state, was fitted for
        another schema, or does not produce ``model_spec.n_features`` columns.
    """
    try:
        preprocessor = _encoder_from_dict(artifact.preprocessing)
    except FedRiskError as e:
        raise ArtifactError(
            f"artifact {artifact.model_id}: preprocessing must be a valid preprocessor state; {e}"
        ) from e
    _check_schema(artifact, preprocessor.schema, part="preprocessing")
    try:
        return RiskPipeline.from_fitted(
            preprocessor,
            artifact.model_spec,
            artifact.weights,
            logit_offset=artifact.logit_offset,
        )
    except FedRiskError as e:
        raise ArtifactError(f"artifact {artifact.model_id}: cannot build its scorer; {e}") from e


def artifact_from_forest(
    forest: Forest,
    *,
    model_id: str,
    stage: Literal["application", "behaviour", "collection"] | None,
    lineage: Lineage,
    baseline: Mapping[str, float | str],
    metrics: Sequence[RoundMetrics] = (),
    he_params: Mapping[str, object] | None = None,
) -> ModelArtifact:
    """Pack boosted trees as a ``gbdt`` artifact (inverse of :func:`scorer_from_artifact`)."""
    schema = forest.binning.schema
    return ModelArtifact(
        model_id=model_id,
        stage=stage,
        model_spec=ModelSpec(kind="gbdt", n_features=len(schema.features)),
        weights=[],
        preprocessing={},
        schema=schema,
        baseline=dict(baseline),
        metrics=list(metrics),
        he_params=None if he_params is None else dict(he_params),
        lineage=lineage,
        trees=forest.to_dict(),
    )


def forest_from_artifact(artifact: ModelArtifact) -> TreeModel:
    """The boosted-tree scorer of a ``gbdt`` artifact.

    Raises
    ------
    ArtifactError
        With reason ``incompatible``: not a gbdt artifact, or its forest is not valid for its
        schema.
    """
    if artifact.trees is None:
        raise ArtifactError(
            f"artifact {artifact.model_id}: kind must be gbdt; got {artifact.model_spec.kind}"
        )
    try:
        forest = Forest.from_dict(artifact.trees)
    except FedRiskError as e:
        raise ArtifactError(
            f"artifact {artifact.model_id}: trees must be a valid forest; {e}"
        ) from e
    _check_schema(artifact, forest.binning.schema, part="the forest's")
    return TreeModel(forest)


def scorer_from_artifact(artifact: ModelArtifact) -> RiskPipeline | TreeModel:
    """Whatever scores the artifact's model: trees for ``gbdt``, the pipeline otherwise."""
    if artifact.model_spec.kind == "gbdt":
        return forest_from_artifact(artifact)
    return pipeline_from_artifact(artifact)


def canonical_json_bytes(artifact: ModelArtifact) -> bytes:
    """The exact bytes written to ``artifact.json`` and signed: sorted keys, no whitespace, ASCII.

    Raises
    ------
    ArtifactError
        A field holds something JSON cannot represent (NaN, numpy scalars, ...).
    """
    try:
        payload = artifact.model_dump(mode="json")
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"artifact must be JSON-serializable; got {e}") from e
    return text.encode("ascii")


def sign_artifact_bytes(
    content: bytes, *, signing_key: Ed25519PrivateKey, domain: bytes = SIGNING_DOMAIN
) -> bytes:
    """The ``artifact.sig`` document for the exact ``artifact.json`` bytes ``content``.

    ``domain`` separates kinds of signed document (a vertical model part signs under its own).
    """
    signature = signing_key.sign(domain + content)
    doc = {
        "algorithm": SIGNATURE_ALGORITHM,
        "format": SIGNATURE_FORMAT,
        "key_id": key_id(signing_key.public_key()),
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    return json.dumps(doc, sort_keys=True, indent=2).encode("ascii") + b"\n"


def write_artifact(
    artifact: ModelArtifact, directory: Path, *, signing_key: Ed25519PrivateKey
) -> Path:
    """Sign ``artifact`` and write it to ``directory/<model_id>/`` atomically.

    Parameters
    ----------
    artifact
        The model to release.
    directory
        The registry directory; created if missing.
    signing_key
        The releasing party's Ed25519 key; its public half must be in the verifier's trusted keys.

    Returns
    -------
    Path
        The artifact directory.

    Raises
    ------
    ArtifactError
        An artifact with the same ``model_id`` and different content already exists (released
        models are immutable: bump the id instead).

    Notes
    -----
    Both files are written into a temporary directory beside the target, then renamed into place
    in one step, so readers never see a half-written or unsigned artifact.
    """
    content = canonical_json_bytes(artifact)
    directory = Path(directory)
    target = directory / artifact.model_id
    if target.exists():
        _check_same_artifact(target, content)
        return target
    try:
        with staged_directory(target) as tmp:
            (tmp / ARTIFACT_FILE).write_bytes(content)
            (tmp / SIGNATURE_FILE).write_bytes(
                sign_artifact_bytes(content, signing_key=signing_key)
            )
    except OSError as e:
        if target.exists():  # another writer won the race; same content is fine
            _check_same_artifact(target, content)
            return target
        raise ArtifactError(f"artifact {target} cannot be written: {e}") from e
    return target


def _check_same_artifact(target: Path, content: bytes) -> None:
    existing = target / ARTIFACT_FILE
    try:
        same = existing.read_bytes() == content
    except OSError:
        same = False
    if not same:
        raise ArtifactError(
            f"artifact directory {target} must not already hold a different artifact "
            "(released models are immutable; use a new model_id)"
        )


def _read_signature(sig_path: Path) -> tuple[str, bytes]:
    try:
        doc = json.loads(sig_path.read_bytes())
    except FileNotFoundError as e:
        raise SignatureError(
            f"artifact is unsigned: {sig_path} is missing", reason=ArtifactRefusal.UNSIGNED
        ) from e
    except (OSError, ValueError) as e:
        raise SignatureError(f"signature file {sig_path} must be JSON; got unreadable data") from e
    if not isinstance(doc, dict):
        raise SignatureError(f"signature file {sig_path} must hold a JSON object")
    if doc.get("algorithm") != SIGNATURE_ALGORITHM or doc.get("format") != SIGNATURE_FORMAT:
        raise SignatureError(
            f"signature file {sig_path} must use {SIGNATURE_ALGORITHM} / {SIGNATURE_FORMAT}; "
            f"got {doc.get('algorithm')!r} / {doc.get('format')!r}"
        )
    signer, encoded = doc.get("key_id"), doc.get("signature")
    if not isinstance(signer, str) or not isinstance(encoded, str):
        raise SignatureError(f"signature file {sig_path} must have string key_id and signature")
    try:
        signature = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureError(f"signature in {sig_path} must be base64; got invalid data") from e
    return signer, signature


def verify_signed_bytes(
    content: bytes,
    json_path: Path,
    sig_path: Path,
    *,
    trusted_keys: Mapping[str, Ed25519PublicKey],
    domain: bytes = SIGNING_DOMAIN,
) -> None:
    """Check ``content`` (read from ``json_path``) against the signature file ``sig_path``.

    Raises
    ------
    SignatureError
        Missing signature, signer not trusted, or content that does not match the signature.
    """
    signer, signature = _read_signature(sig_path)
    by_id = {key_id(pub): (name, pub) for name, pub in trusted_keys.items()}
    if signer not in by_id:
        raise SignatureError(
            f"artifact {json_path} must be signed by a trusted key; got signer {signer} "
            f"(trusted: {sorted(by_id) or 'none'})",
            reason=ArtifactRefusal.UNTRUSTED,
        )
    try:
        by_id[signer][1].verify(signature, domain + content)
    except InvalidSignature as e:
        raise SignatureError(
            f"artifact {json_path} does not match its signature (tampered or corrupted)"
        ) from e


def read_artifact(path: Path, *, trusted_keys: Mapping[str, Ed25519PublicKey]) -> ModelArtifact:
    """Read an artifact and verify its signature against trusted keys before parsing it.

    Parameters
    ----------
    path
        The artifact directory ``REGISTRY/<model_id>`` (or its ``artifact.json``).
    trusted_keys
        Public keys allowed to release models, by any name (e.g. from ``load_trusted_keys``); the
        signer is matched by key id.

    Raises
    ------
    SignatureError
        Missing signature, signer not trusted, or content that does not match the signature.
    ArtifactError
        Missing file, malformed JSON, a schema mismatch, or a directory named unlike its model_id.
    """
    path = Path(path)
    target = path.parent if path.name == ARTIFACT_FILE and path.is_file() else path
    json_path, sig_path = target / ARTIFACT_FILE, target / SIGNATURE_FILE
    try:
        content = json_path.read_bytes()
    except OSError as e:
        raise ArtifactError(
            f"artifact file {json_path} cannot be read: {e.strerror or e}",
            reason=ArtifactRefusal.UNREADABLE,
        ) from e
    verify_signed_bytes(content, json_path, sig_path, trusted_keys=trusted_keys)
    try:
        artifact = ModelArtifact.model_validate_json(content)
    except ValidationError as e:
        raise ArtifactError(f"artifact {json_path} does not match the artifact schema:\n{e}") from e
    if target.name != artifact.model_id:
        raise ArtifactError(
            f"artifact directory name must equal its model_id {artifact.model_id!r}; got {target}"
        )
    return artifact


def load_trusted_keys(directory: Path) -> dict[str, Ed25519PublicKey]:
    """Load every ``<name>.pub`` Ed25519 key in ``directory`` (e.g. ``REGISTRY/trusted_keys``).

    Raises
    ------
    ArtifactError
        The directory is missing or a key file is unreadable (the message names it).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"trusted key directory {directory} must exist; got none")
    keys: dict[str, Ed25519PublicKey] = {}
    for pub_path in sorted(directory.glob("*.pub")):
        try:
            keys[pub_path.stem] = load_verify_key(pub_path)
        except IdentityError as e:
            raise ArtifactError(f"trusted key {pub_path} cannot be used: {e}") from e
    return keys
