"""Signed model artifacts: round trip, tamper detection of every byte, trust, atomic writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from fedrisk.data.schema import DatasetSchema, FeatureKind, FeatureSpec
from fedrisk.decisions.scorecard import ScorecardScaling
from fedrisk.errors import ArtifactError, ArtifactRefusal, SignatureError
from fedrisk.ml.features import Preprocessor
from fedrisk.ml.inference import ModelSpec, count_parameters
from fedrisk.ml.pipeline import RiskPipeline
from fedrisk.release.artifact import (
    ARTIFACT_FILE,
    SIGNATURE_FILE,
    Lineage,
    ModelArtifact,
    RoundMetrics,
    artifact_from_pipeline,
    canonical_json_bytes,
    load_trusted_keys,
    pipeline_from_artifact,
    read_artifact,
    sign_artifact_bytes,
    write_artifact,
)
from fedrisk.release.identity import generate_signing_key, key_id, save_public_key
from tests.support.loans import LOANS_SCHEMA, loans


def _artifact(model_id: str = "credit-lr-001", **changes: object) -> ModelArtifact:
    schema = DatasetSchema(
        name="toy",
        id_column="id",
        target_column="bad",
        features=(
            FeatureSpec(name="income", kind=FeatureKind.NUMERIC, min=0, transform="log1p"),
            FeatureSpec(name="region", kind=FeatureKind.CATEGORICAL, categories=("n", "s")),
        ),
    )
    fields: dict[str, object] = {
        "model_id": model_id,
        "stage": "application",
        "model_spec": ModelSpec(kind="lr", n_features=3),
        "weights": [0.25, -1.5, 3.0e-7, 0.125],
        "preprocessing": {"means": [1.0, 2.0], "categories": {"region": ["n", "s"]}},
        "schema": schema,
        "baseline": {"income": 5.5, "region": "n"},
        "scorecard": ScorecardScaling(),
        "logit_offset": -1.25,
        "metrics": [RoundMetrics(round=1, auc=0.71, ks=0.33, n_parties=3)],
        "he_params": {"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": [60, 40, 40, 60]},
        "lineage": Lineage(
            run_id="run-7",
            parties=["bank", "ecommerce", "telecom"],
            rounds=5,
            dataset_fingerprint="ab" * 32,
            created_at="2025-01-02T03:04:05+00:00",
        ),
    }
    fields.update(changes)
    return ModelArtifact.model_validate(fields)


@pytest.fixture(scope="module")
def signer() -> Ed25519PrivateKey:
    return generate_signing_key()


@pytest.fixture(scope="module")
def trusted(signer: Ed25519PrivateKey) -> dict[str, Ed25519PublicKey]:
    return {"releaser": signer.public_key()}


@pytest.fixture
def written(tmp_path: Path, signer: Ed25519PrivateKey) -> Path:
    return write_artifact(_artifact(), tmp_path / "registry", signing_key=signer)


def test_written_artifact_verifies_and_round_trips(
    written: Path, trusted: dict[str, Ed25519PublicKey], signer: Ed25519PrivateKey
) -> None:
    artifact = read_artifact(written, trusted_keys=trusted)

    assert artifact == _artifact()
    assert artifact.schema.feature_names == ["income", "region"]
    assert artifact.dataset_schema is artifact.schema
    assert artifact.logit_offset == -1.25
    assert written.name == "credit-lr-001"
    assert sorted(p.name for p in written.iterdir()) == [ARTIFACT_FILE, SIGNATURE_FILE]
    sig = json.loads((written / SIGNATURE_FILE).read_text())
    assert sig["key_id"] == key_id(signer.public_key())
    assert read_artifact(written / ARTIFACT_FILE, trusted_keys=trusted) == artifact


def test_artifact_json_is_canonical(written: Path) -> None:
    content = (written / ARTIFACT_FILE).read_bytes()

    assert content == canonical_json_bytes(_artifact())
    assert (
        json.dumps(json.loads(content), sort_keys=True, separators=(",", ":")).encode() == content
    )


def test_every_single_byte_change_fails_verification(
    written: Path, trusted: dict[str, Ed25519PublicKey]
) -> None:
    path = written / ARTIFACT_FILE
    original = path.read_bytes()

    for position in range(len(original)):
        tampered = bytearray(original)
        tampered[position] ^= 0x01
        path.write_bytes(bytes(tampered))
        with pytest.raises(SignatureError, match=re.escape(str(path))):
            read_artifact(written, trusted_keys=trusted)


def test_appended_byte_fails_verification(
    written: Path, trusted: dict[str, Ed25519PublicKey]
) -> None:
    path = written / ARTIFACT_FILE
    path.write_bytes(path.read_bytes() + b"\n")

    with pytest.raises(SignatureError, match="tampered") as info:
        read_artifact(written, trusted_keys=trusted)
    assert info.value.reason is ArtifactRefusal.TAMPERED


def test_tampered_signature_fails(written: Path, trusted: dict[str, Ed25519PublicKey]) -> None:
    sig_path = written / SIGNATURE_FILE
    doc = json.loads(sig_path.read_text())
    doc["signature"] = ("B" if doc["signature"][0] != "B" else "C") + doc["signature"][1:]
    sig_path.write_text(json.dumps(doc))

    with pytest.raises(SignatureError) as info:
        read_artifact(written, trusted_keys=trusted)
    assert info.value.reason is ArtifactRefusal.TAMPERED


def test_untrusted_signer_fails(written: Path) -> None:
    stranger = {"other": generate_signing_key().public_key()}

    with pytest.raises(SignatureError, match="must be signed by a trusted key") as info:
        read_artifact(written, trusted_keys=stranger)
    assert info.value.reason is ArtifactRefusal.UNTRUSTED
    with pytest.raises(SignatureError, match="trusted: none") as info:
        read_artifact(written, trusted_keys={})
    assert info.value.reason is ArtifactRefusal.UNTRUSTED


def test_signature_by_another_key_claiming_a_trusted_id_fails(
    written: Path, trusted: dict[str, Ed25519PublicKey], signer: Ed25519PrivateKey
) -> None:
    content = (written / ARTIFACT_FILE).read_bytes()
    forged = json.loads(sign_artifact_bytes(content, signing_key=generate_signing_key()))
    forged["key_id"] = key_id(signer.public_key())
    (written / SIGNATURE_FILE).write_text(json.dumps(forged))

    with pytest.raises(SignatureError, match="tampered") as info:
        read_artifact(written, trusted_keys=trusted)
    assert info.value.reason is ArtifactRefusal.TAMPERED


def test_missing_or_malformed_signature_fails(
    written: Path, trusted: dict[str, Ed25519PublicKey]
) -> None:
    sig_path = written / SIGNATURE_FILE
    sig_path.write_text("{not json")
    with pytest.raises(SignatureError, match=re.escape(str(sig_path))) as info:
        read_artifact(written, trusted_keys=trusted)
    assert info.value.reason is ArtifactRefusal.TAMPERED

    sig_path.unlink()
    with pytest.raises(SignatureError, match="unsigned") as info:
        read_artifact(written, trusted_keys=trusted)
    assert info.value.reason is ArtifactRefusal.UNSIGNED


def test_signed_but_malformed_content_is_an_artifact_error(
    tmp_path: Path, signer: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    target = tmp_path / "credit-lr-001"
    target.mkdir()
    for content in (b"{broken", b'{"model_id":"credit-lr-001"}'):
        (target / ARTIFACT_FILE).write_bytes(content)
        (target / SIGNATURE_FILE).write_bytes(sign_artifact_bytes(content, signing_key=signer))

        with pytest.raises(ArtifactError, match="does not match the artifact schema") as info:
            read_artifact(target, trusted_keys=trusted)
        assert not isinstance(info.value, SignatureError)
        assert info.value.reason is ArtifactRefusal.INCOMPATIBLE


def test_missing_artifact_names_the_file(
    tmp_path: Path, trusted: dict[str, Ed25519PublicKey]
) -> None:
    with pytest.raises(ArtifactError, match=r"artifact\.json cannot be read") as info:
        read_artifact(tmp_path / "nothing", trusted_keys=trusted)
    assert info.value.reason is ArtifactRefusal.UNREADABLE


def test_renamed_artifact_directory_is_refused(
    written: Path, trusted: dict[str, Ed25519PublicKey]
) -> None:
    moved = written.rename(written.parent / "credit-lr-999")

    with pytest.raises(ArtifactError, match="must equal its model_id"):
        read_artifact(moved, trusted_keys=trusted)


def test_rewriting_is_idempotent_but_a_different_artifact_is_refused(
    written: Path, signer: Ed25519PrivateKey
) -> None:
    registry = written.parent
    again = write_artifact(_artifact(), registry, signing_key=signer)

    with pytest.raises(ArtifactError, match="must not already hold a different artifact"):
        write_artifact(_artifact(weights=[0.0, 0.0, 0.0, 1.0]), registry, signing_key=signer)

    assert again == written
    assert sorted(p.name for p in registry.iterdir()) == ["credit-lr-001"]  # no temp dirs left


def test_trusted_keys_load_from_a_directory(
    tmp_path: Path, written: Path, signer: Ed25519PrivateKey
) -> None:
    keys_dir = tmp_path / "trusted_keys"
    keys_dir.mkdir()
    save_public_key(signer.public_key(), keys_dir / "bank.pub")

    keys = load_trusted_keys(keys_dir)

    assert list(keys) == ["bank"]
    assert read_artifact(written, trusted_keys=keys) == _artifact()
    (keys_dir / "junk.pub").write_text("nope")
    with pytest.raises(ArtifactError, match=r"junk\.pub"):
        load_trusted_keys(keys_dir)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"model_id": "../escape"}, "model_id must be"),
        ({"model_id": ".hidden"}, "model_id must be"),
        ({"weights": [1.0, 2.0]}, "weights must number 4"),
        ({"weights": [1.0, 2.0, float("nan"), 0.0]}, "finite"),
        ({"stage": "origination"}, "stage"),
        ({"logit_offset": float("inf")}, "logit_offset must be finite"),
        ({"unexpected": 1}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_artifacts_are_rejected_on_construction(
    changes: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ValidationError, match=fragment):
        _artifact(**changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {"preprocessing": {"bad": float("inf")}},
        {"preprocessing": {"obj": object()}},
        {"he_params": {"scale": float("nan")}},
        {"baseline": {"income": float("nan")}},
    ],
    ids=["inf", "object", "nan-he", "nan-baseline"],
)
def test_non_json_values_are_rejected_on_construction(changes: dict[str, object]) -> None:
    # pydantic's JSON mode would otherwise write NaN/inf as null, silently changing the model
    with pytest.raises(ValidationError, match=r"NaN/inf|JSON"):
        _artifact(**changes)  # type: ignore[arg-type]


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    registry = tmp_path / "registry"

    # the signing step fails after artifact.json was written to the temporary directory
    with pytest.raises(AttributeError):
        write_artifact(_artifact(), registry, signing_key=None)  # type: ignore[arg-type]

    assert list(registry.iterdir()) == []


# ------------------------------------------------------------------ artifact <-> pipeline


def _pipeline(seed: int = 0) -> RiskPipeline:
    frame = loans(300, seed)
    prep = Preprocessor(LOANS_SCHEMA).fit(frame)
    spec = ModelSpec(kind="mlp", n_features=prep.n_features_out, hidden=(4,))
    weights = np.random.default_rng(seed).normal(0, 0.5, count_parameters(spec))
    return RiskPipeline.from_fitted(prep, spec, weights, logit_offset=-1.5)


def _lineage() -> Lineage:
    return Lineage(
        run_id="run-1",
        parties=["a", "b", "c"],
        rounds=3,
        dataset_fingerprint="cd" * 32,
        created_at="2025-01-02T03:04:05+00:00",
    )


def test_a_signed_pipeline_scores_the_same_after_release(
    tmp_path: Path, signer: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    # Arrange
    pipeline = _pipeline()
    frame = loans(200, 5)

    # Act
    artifact = artifact_from_pipeline(
        pipeline, model_id="acard-1", stage="application", lineage=_lineage()
    )
    path = write_artifact(artifact, tmp_path, signing_key=signer)
    released = pipeline_from_artifact(read_artifact(path, trusted_keys=trusted))

    # Assert
    np.testing.assert_array_equal(released.predict_proba(frame), pipeline.predict_proba(frame))
    np.testing.assert_array_equal(released.weights_, pipeline.weights_)
    assert released.logit_offset_ == artifact.logit_offset == -1.5
    assert released.spec_ == artifact.model_spec == pipeline.spec_
    assert artifact.baseline == pipeline.preprocessor_.reference_row()
    assert artifact.dataset_schema == LOANS_SCHEMA
    assert artifact.scorecard == ScorecardScaling()


def test_an_artifact_whose_parts_do_not_fit_is_incompatible() -> None:
    # Arrange
    good = artifact_from_pipeline(
        _pipeline(), model_id="acard-1", stage="application", lineage=_lineage()
    )
    wrong_width = good.model_copy(
        update={"model_spec": ModelSpec(kind="lr", n_features=3), "weights": [0.0] * 4}
    )
    broken_state = good.model_copy(update={"preprocessing": {"format": "something else"}})
    other_schema = good.model_copy(
        update={"schema": LOANS_SCHEMA.model_copy(update={"name": "other"})}
    )

    # Act / Assert
    for artifact, fragment in (
        (wrong_width, "n_features"),
        (broken_state, "preprocessing must be a valid preprocessor state"),
        (other_schema, "preprocessing schema must equal the artifact schema"),
    ):
        with pytest.raises(ArtifactError, match=fragment) as info:
            pipeline_from_artifact(artifact)
        assert info.value.reason is ArtifactRefusal.INCOMPATIBLE
        assert "acard-1" in str(info.value)
