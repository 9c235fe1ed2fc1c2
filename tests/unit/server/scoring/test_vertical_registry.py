"""The scoring registry loads a vertical model's signed guest part, and refuses a tampered
part, a wrong signer's part and a host's part with typed reasons, like any artifact."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedrisk.errors import ArtifactRefusal
from fedrisk.ml.vertical import PartyPreprocessor
from fedrisk.release.identity import generate_signing_key, save_public_key
from fedrisk.release.vertical import VerticalPart, write_part
from server.scoring.registry import ModelRegistry
from tests.support.feature_hosts import MODEL_ID, guest_part, install_guest_part


def test_a_signed_guest_part_loads_as_a_vertical_model(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    part = install_guest_part(registry)

    loaded = ModelRegistry(registry)
    loaded.load_all()

    model = loaded.vertical[MODEL_ID]
    assert not loaded.refused and MODEL_ID not in loaded.models
    assert model.hosts == ["shop", "telecom"]
    own, _ = model.own({"income": 2500.0})
    assert own == pytest.approx(part.partial_scores(pd.DataFrame({"income": [2500.0]}))[0])


def test_a_tampered_guest_part_is_refused(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    install_guest_part(registry)
    artifact = registry / MODEL_ID / "artifact.json"
    artifact.write_text(artifact.read_text().replace('"weights":[-1.0,', '"weights":[-9.0,'))

    loaded = ModelRegistry(registry)
    loaded.load_all()

    assert loaded.refused[MODEL_ID].reason is ArtifactRefusal.TAMPERED
    assert MODEL_ID not in loaded.vertical


def test_a_guest_part_of_an_untrusted_signer_is_refused(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    install_guest_part(registry)
    save_public_key(generate_signing_key().public_key(), registry / "trusted_keys" / "bank.pub")

    loaded = ModelRegistry(registry)
    loaded.load_all()

    assert loaded.refused[MODEL_ID].reason is ArtifactRefusal.UNTRUSTED


def test_a_hosts_part_is_refused_in_the_lenders_registry(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    guest, _ = guest_part()
    host = guest.model_copy(update={"party": "shop", "role": "host"})
    signing = generate_signing_key()
    (registry / "trusted_keys").mkdir(parents=True)
    save_public_key(signing.public_key(), registry / "trusted_keys" / "shop.pub")
    released = write_part(host, tmp_path / "release", signing_key=signing)
    shutil.copytree(released, registry / MODEL_ID)

    loaded = ModelRegistry(registry)
    loaded.load_all()

    assert loaded.refused[MODEL_ID].reason is ArtifactRefusal.INCOMPATIBLE
    assert "guest's" in loaded.refused[MODEL_ID].message


def test_the_guest_row_equals_the_parts_own_preprocessing(tmp_path: Path) -> None:
    """The request path builds the guest's row without pandas; the oracle is the part's own
    :meth:`VerticalPart.partial_scores` (numeric, categorical, missing and clipped values)."""
    frame = pd.DataFrame(
        {"income": [1000.0, 5000.0, 9000.0, 2000.0], "segment": ["a", "b", "c", "a"]}
    )
    prep = PartyPreprocessor(("income",), ("segment",)).fit(
        frame, np.ones(len(frame), dtype=bool), rows=np.arange(len(frame))
    )
    part = VerticalPart(
        model_id=MODEL_ID,
        party="bank",
        role="guest",
        parties=["bank", "shop"],
        columns=["_intercept", *prep.columns],
        weights=[-0.5, 0.7, 0.2, -0.3, 0.9],
        preprocessing=prep.to_dict(),
    )
    registry = tmp_path / "registry"
    signing = generate_signing_key()
    (registry / "trusted_keys").mkdir(parents=True)
    save_public_key(signing.public_key(), registry / "trusted_keys" / "bank.pub")
    shutil.copytree(
        write_part(part, tmp_path / "release", signing_key=signing), registry / MODEL_ID
    )
    loaded = ModelRegistry(registry)
    loaded.load_all()
    model = loaded.vertical[MODEL_ID]
    applicants = [
        {"income": 2500.0, "segment": "b"},
        {"income": 1e9, "segment": "c"},
        {"income": None, "segment": None},
        {"income": 7000, "segment": "a"},
    ]

    own = [model.own(a)[0] for a in applicants]

    plain = part.partial_scores(pd.DataFrame(applicants))
    assert own == pytest.approx(plain.tolist(), abs=1e-12)
