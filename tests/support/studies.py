"""Study results built from real objects (schema models, curves from seeded samples) for tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simulations.scenarios import SMOKE_SCENARIO
from simulations.studies import (
    PRESETS,
    BaselineResult,
    CellResult,
    ColdStart,
    FederatedResult,
    PartyResult,
    RoundPoint,
    StudyConfig,
    StudyResults,
    cell_key,
    model_curves,
)


def scored_sample(seed: int, n: int = 400, shift: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and PDs where bads score higher on average."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    logit = rng.normal(size=n) + shift * y - 1.0
    return y, 1.0 / (1.0 + np.exp(-logit))


def make_cell(
    *,
    task: str = SMOKE_SCENARIO.name,
    partition_kind: str = "quantity",
    partition: str = "quantity",
    model: str = "lr",
    seed: int = 0,
    enc_auc: float = 0.80,
    central_auc: float = 0.80,
    history: Sequence[float] = (0.78, 0.80),
    plaintext: bool = True,
    rounds: int = 2,
) -> CellResult:
    """A complete cell with real curves computed from a seeded sample."""
    y, p = scored_sample(seed)
    y2, p2 = scored_sample(seed + 100)
    fed = FederatedResult(
        auc=enc_auc,
        ks=0.45,
        model_id=f"application-{model}-{seed:012d}",
        seconds=40.0,
        seconds_per_round=1.2,
        bytes_up_per_party_round=2.0e6,
        history=[RoundPoint(round=i + 1, auc=a, ks=0.4) for i, a in enumerate(history)],
    )
    parties = [
        PartyResult(
            party=f"party_{i}",
            n_train=800 - 300 * i,
            n_test=200 - 75 * i,
            n_test_bad=60 - 20 * i,
            share_of_rows=[0.5, 0.46, 0.04][i],
            bad_rate=[0.2, 0.3, 0.5][i],
            local_auc=0.78 - 0.01 * i,
            local_ks=0.4,
            own_test_local_auc=0.77 - 0.02 * i,
            own_test_federated_auc=0.79,
            own_gain=0.02 + 0.02 * i,
            local_round_auc=[0.75 - 0.01 * i] * rounds,
        )
        for i in range(3)
    ]
    return CellResult(
        key=cell_key(task, partition, model, seed),
        task=task,
        stage="application",
        dataset="synthetic",
        synthetic=True,
        partition_kind=partition_kind,  # type: ignore[arg-type]
        partition=partition,
        model=model,  # type: ignore[arg-type]
        seed=seed,
        parties=3,
        rounds=rounds,
        local_epochs=1,
        learning_rate=0.0,
        n_train=16_000,
        n_test=4_000,
        n_test_bad=600,
        encrypted=fed,
        plaintext=fed.model_copy(update={"auc": enc_auc + 1e-6}) if plaintext else None,
        centralized=BaselineResult(auc=central_auc, ks=0.46),
        party_results=parties,
        cold_start=ColdStart(
            party="party_2",
            share_of_rows=0.04,
            small_lender=True,
            n_test=50,
            n_test_bad=20,
            own_test_local_auc=0.73,
            own_test_federated_auc=0.79,
            gain=0.06,
        ),
        curves={
            "federated": model_curves(y, p, full=True),
            "centralized": model_curves(y2, p2, full=True),
            **{f"local:party_{i}": model_curves(y, p, full=False) for i in range(3)},
        },
        seconds=60.0,
    )


def make_results(cells: Sequence[CellResult], config: StudyConfig | None = None) -> StudyResults:
    """A study's results holding ``cells`` (config: the smoke preset unless given)."""
    return StudyResults(
        created_at="2025-01-01T00:00:00+00:00",
        updated_at="2025-01-01T00:00:00+00:00",
        config=config or PRESETS["smoke"],
        cells={c.key: c for c in cells},
    )
