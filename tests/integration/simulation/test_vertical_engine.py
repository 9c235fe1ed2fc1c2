"""Vertical LR through the real ServerApp and ClientApps in Flower's simulation engine: one
small run (the parties align their own tables by private set intersection first), checked
against the same protocol run in-process on joined rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrisk.data.vertical import align_by_join, load_vertical
from fedrisk.ml.metrics import auc
from fedrisk.ml.vertical import VerticalParams
from simulations.vertical import (
    prepare_vertical_workspace,
    run_in_engine,
    run_in_process,
    scores_from_parts,
)

pytestmark = pytest.mark.integration


def test_a_vertical_run_in_the_simulation_engine_releases_signed_parts(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    raw = load_vertical("synthetic-vertical", rng=rng, n_customers=800)
    views = align_by_join(raw, rng=rng)
    params = VerticalParams(epochs=1, batch_size=4096, seed=5)
    # One guest order seed for both: the same batches and padding.
    engine_ws = prepare_vertical_workspace(tmp_path / "engine", views, raw, order_seed=9)
    local_ws = prepare_vertical_workspace(tmp_path / "local", views, order_seed=9)

    engine = run_in_engine(engine_ws, params, model_id="vertical-engine-test")
    local = run_in_process(local_ws, params, model_id="vertical-local-test")

    assert engine.parties == {"bank": "guest", "ecommerce": "host", "telecom": "host"}
    # The engine's parties aligned by PSI; the coordinator learnt only the set sizes, and they
    # are the join's.
    assert engine.alignment == {
        "guest_rows": 800,
        "host_rows": {h.name: len(h.frame) for h in raw.hosts},
        "shared": {v.name: int(v.known.sum()) for v in views[1:]},
    }
    assert len(engine.history) == 1 and engine.history[0].bytes_per_party["telecom"] > 0
    # Both runs' parts verify against the parties' keys; the same steps give the same model up
    # to the flooding noise.
    y = views[0].labels
    assert y is not None
    test = views[0].rows("test")
    a_engine = auc(y[test], scores_from_parts(engine_ws, engine)[test])
    a_local = auc(y[test], scores_from_parts(local_ws, local)[test])
    assert abs(a_engine - a_local) < 0.01
