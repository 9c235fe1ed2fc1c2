"""The demo's own pieces: its parties, its sample applications and its decision table."""

from __future__ import annotations

import itertools

import numpy as np
from rich.console import Console

from fedrisk.ml.features import Preprocessor
from fedrisk.ml.inference import ModelSpec
from fedrisk.release.artifact import Lineage, ModelArtifact
from simulations.demo import PARTY_NAMES, _applications, _decisions_table, _demo_parties


def _artifact(schema, frame) -> ModelArtifact:
    prep = Preprocessor(schema).fit(frame)
    rng = np.random.default_rng(0)
    spec = ModelSpec(kind="lr", n_features=prep.n_features_out)
    return ModelArtifact(
        model_id="demo-test",
        stage="application",
        model_spec=spec,
        weights=rng.normal(size=prep.n_features_out + 1).tolist(),
        preprocessing=prep.to_dict(),
        schema=schema,
        baseline=prep.reference_row(),
        lineage=Lineage(
            run_id="r",
            parties=list(PARTY_NAMES),
            rounds=1,
            dataset_fingerprint="f",
            created_at="2026-11-22T00:00:00+00:00",
        ),
    )


def test_demo_parties_are_the_three_party_types(monkeypatch) -> None:
    monkeypatch.delenv("FEDRISK_DATA_DIR", raising=False)

    label, schema, parties = _demo_parties(None, np.random.default_rng(0))

    assert "synthetic" in label
    assert [p.name for p in parties] == list(PARTY_NAMES)
    assert all(len(p.train) > 0 and len(p.test) > 0 for p in parties)
    assert schema.target_column is not None


def test_sample_applications_hold_a_decline_candidate_and_a_linked_ring(monkeypatch) -> None:
    monkeypatch.delenv("FEDRISK_DATA_DIR", raising=False)
    _, schema, parties = _demo_parties(None, np.random.default_rng(0))
    test = parties[0].test.reset_index(drop=True)

    apps = _applications(_artifact(schema, parties[0].train), schema, test)

    labels = [label for label, _ in apps]
    assert "high risk" in labels and "low risk" in labels
    ring = [body for label, body in apps if label.startswith("ring")]
    assert len(ring) == 6
    # Consecutive members share a device or a card, so all six form one component.
    for a, b in itertools.pairwise(ring):
        sa, sb = a["signals"], b["signals"]
        assert sa["device_id"] == sb["device_id"] or sa["bank_card"] == sb["bank_card"]
    assert set(apps[0][1]["features"]) == set(schema.feature_names)


def test_decisions_table_shows_reasons_and_ring_flags() -> None:
    answer = {
        "decision": "decline",
        "pd": 0.9,
        "score": 380.0,
        "credit_limit": None,
        "price_tier": None,
        "reasons": [{"code": "RC-1", "text": "Income", "points": 12.0}],
        "fraud": {"hits": [], "graph": {"is_ring": True, "component_size": 6}},
    }
    console = Console(width=200, record=True)

    console.print(_decisions_table([("high risk", answer)]))

    text = console.export_text()
    assert "decline" in text and "RC-1 Income" in text and "possible ring: 6" in text
