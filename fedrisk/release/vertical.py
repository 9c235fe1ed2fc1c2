"""A vertical model's released parts: the guest's (intercept, its weights and preprocessing, for
the lender's registry) and each host's (its weights and preprocessing, kept by that host).

Each part is signed by the party that trained it, in the same form as a model artifact
(``artifact.json`` + ``artifact.sig``, Ed25519) but under its own signing domain, so a part can
never pass for a whole model. Scoring one customer is ``intercept + sum of every party's
weights . its preprocessed row``; a host that does not know the customer contributes 0, exactly
as in training (:class:`fedrisk.ml.vertical.PartyPreprocessor`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedrisk.errors import ArtifactError
from fedrisk.files import staged_directory
from fedrisk.ml.vertical import PartyPreprocessor
from fedrisk.release.artifact import (
    ARTIFACT_FILE,
    SIGNATURE_FILE,
    sign_artifact_bytes,
    verify_signed_bytes,
)

PART_DOMAIN: Final = b"fedrisk.release.vertical-part/1\n"


class VerticalPart(BaseModel):
    """One party's part of a vertical logistic regression."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["fedrisk.vertical-part/1"] = "fedrisk.vertical-part/1"
    model_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,128}$")
    party: str = Field(min_length=1)
    role: Literal["guest", "host"]
    parties: list[str]
    columns: list[str]
    weights: list[float]
    preprocessing: dict[str, Any]
    metrics: dict[str, float] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _weights_match_columns(self) -> VerticalPart:
        if len(self.weights) != len(self.columns):
            raise ValueError(
                f"weights must match columns ({len(self.columns)}); got {len(self.weights)}"
            )
        return self

    def partial_scores(
        self, frame: pd.DataFrame, known: npt.NDArray[np.bool_] | None = None
    ) -> npt.NDArray[np.float64]:
        """This part's score contribution for raw rows (missing customers contribute 0)."""
        prep = PartyPreprocessor.from_dict(self.preprocessing)
        mask = np.ones(len(frame), dtype=bool) if known is None else known
        matrix = prep.transform(frame, mask)
        w = np.asarray(self.weights)
        if self.role == "guest":
            return np.asarray(w[0] + matrix @ w[1:], dtype=np.float64)
        return np.asarray(matrix @ w, dtype=np.float64)


def _directory(base: Path, part: VerticalPart) -> Path:
    return base / part.model_id / part.party


def write_part(part: VerticalPart, directory: Path, *, signing_key: Ed25519PrivateKey) -> Path:
    """Sign ``part`` and write it to ``directory/<model_id>/<party>/`` atomically."""
    content = json.dumps(
        part.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode("ascii")
    target = _directory(Path(directory), part)
    if target.exists():
        raise ArtifactError(f"vertical part {target} must not exist already (parts are immutable)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with staged_directory(target) as tmp:
        (tmp / ARTIFACT_FILE).write_bytes(content)
        (tmp / SIGNATURE_FILE).write_bytes(
            sign_artifact_bytes(content, signing_key=signing_key, domain=PART_DOMAIN)
        )
    return target


def read_part(path: Path, *, trusted_keys: Mapping[str, Ed25519PublicKey]) -> VerticalPart:
    """Read a part after checking its signature against ``trusted_keys``."""
    json_path, sig_path = path / ARTIFACT_FILE, path / SIGNATURE_FILE
    try:
        content = json_path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"vertical part {json_path} cannot be read: {e}") from e
    verify_signed_bytes(content, json_path, sig_path, trusted_keys=trusted_keys, domain=PART_DOMAIN)
    return VerticalPart.model_validate_json(content)
