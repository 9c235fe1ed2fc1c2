"""Simulation studies: each lifecycle task × partition × model × seed against its baselines.

One *cell* is one (task, partition, model, seed). For each cell the study runs, on the same
parties and the same pooled test data (the union of the parties' test splits):

- the **encrypted federation**: the real Flower ServerApp and ClientApps with CKKS (one
  ``flwr run``, about 35 s of start-up plus the rounds);
- the **plaintext federation** (INSECURE, for comparison only), also a real Flower run, but
  only for the seeds in ``plaintext_seeds`` (by default the first seed) to save time: with
  identical parties and seeds it trains the same model up to CKKS noise (tests check this);
- the **centralized** model trained on the pooled training rows (early stopping on a 10 %
  validation split), the upper bound federated learning tries to reach;
- each party's **local-only** model on its own rows (early stopping as above), scored on the
  pooled test data and on the party's own test rows; plus a local-only model trained on the
  federated schedule (the same epochs per round, no early stopping) and scored after every
  round, for the "AUC per round, federated vs local" plot;
- the **cold start** of the smallest party: its AUC on its own test rows with the federated
  model minus with its local-only model. Under quantity skew it holds about 4 % of the rows
  (``small_lender`` is true when its share is ≤ 5 %).

Partitions: ``iid``; ``label`` = ``dirichlet:0.3``; ``feature`` = the scenario's ``by:``
column (age band or state); ``quantity`` = one party with 50 % of the rows and several small
ones down to about 4 %.

The modules:

- :mod:`~simulations.studies.config`: which cells a study runs (presets, partition kinds);
- :mod:`~simulations.studies.results`: the ``results.json`` schema, load and save;
- :mod:`~simulations.studies.curves`: ROC/KS curves and score histograms stored per model;
- :mod:`~simulations.studies.cells`: running and measuring one cell;
- :mod:`~simulations.studies.orchestration`: running and resuming a whole study;
- :mod:`~simulations.studies.summary`: summary rows over seeds and the notes on gaps.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from simulations.studies.config import (
    PARTITION_KINDS,
    PARTITION_LABELS,
    PRESETS,
    SMALL_LENDER_SHARE,
    TARGET_GAP,
    PartitionKind,
    StudyConfig,
    cell_key,
    get_preset,
    narrow,
    partition_text,
)
from simulations.studies.curves import ks_on_grid, model_curves, roc_on_grid, score_histogram
from simulations.studies.results import (
    BaselineResult,
    CellResult,
    ColdStart,
    FederatedResult,
    KsCurve,
    ModelCurves,
    PartyResult,
    RocCurve,
    RoundPoint,
    ScoreHistogram,
    StudyResults,
    load_results,
    save_results,
)
from simulations.studies.summary import SummaryRow, gap_note, mean_sd, summarize

if TYPE_CHECKING:
    from simulations.studies.cells import CellScores, evaluate_cell, local_round_auc, run_cell
    from simulations.studies.orchestration import ProgressHandler, planned_cells, run_study

# Running cells imports torch and Flower (through the runner). Presets, results and summaries
# must not, so a CLI can refuse a bad preset or results file before any heavy import: these
# names are imported from their module on first use.
_RUNNING = {
    "CellScores": "cells",
    "evaluate_cell": "cells",
    "local_round_auc": "cells",
    "run_cell": "cells",
    "ProgressHandler": "orchestration",
    "planned_cells": "orchestration",
    "run_study": "orchestration",
}


def __getattr__(name: str) -> object:
    module = _RUNNING.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "PARTITION_KINDS",
    "PARTITION_LABELS",
    "PRESETS",
    "SMALL_LENDER_SHARE",
    "TARGET_GAP",
    "BaselineResult",
    "CellResult",
    "CellScores",
    "ColdStart",
    "FederatedResult",
    "KsCurve",
    "ModelCurves",
    "PartitionKind",
    "PartyResult",
    "ProgressHandler",
    "RocCurve",
    "RoundPoint",
    "ScoreHistogram",
    "StudyConfig",
    "StudyResults",
    "SummaryRow",
    "cell_key",
    "evaluate_cell",
    "gap_note",
    "get_preset",
    "ks_on_grid",
    "load_results",
    "local_round_auc",
    "mean_sd",
    "model_curves",
    "narrow",
    "partition_text",
    "planned_cells",
    "roc_on_grid",
    "run_cell",
    "run_study",
    "save_results",
    "score_histogram",
    "summarize",
]
