"""The results document of a study (``results.json``): its pydantic schema, load and save.

Results file (format ``fedrisk-study`` version 1)
-------------------------------------------------
``{"format", "version", "created_at", "updated_at", "config": StudyConfig,
"cells": {key: CellResult}, "failures": {key: message}}`` with ``key`` =
``"<task>|<partition>|<model>|seed<seed>"``. A :class:`CellResult` holds the cell's settings
(task, stage, dataset, partition kind and text, model, seed, parties, rounds, local epochs,
learning rate), data sizes (``n_train``, ``n_test``, ``n_test_bad``), ``encrypted`` and
``plaintext`` (AUC, KS, model id, seconds, seconds and bytes per round, and the per-round
``history`` of pooled-test AUC/KS the parties decrypted), ``centralized`` (AUC, KS),
``party_results`` (per party: sizes, share of rows, bad rate, local-only AUC/KS on the pooled
test, own-test AUC of the local and of the federated model, their difference ``own_gain``,
and ``local_round_auc``), ``cold_start``, and ``curves`` for plotting: per model
(``federated``, ``centralized``, ``local:<party>``) a ROC curve on a fixed 101-point FPR
grid, and for the federated and centralized models a KS chart (cumulative share of bads and
goods against the share of accounts, riskiest first, on a 101-point grid) and histograms of
scorecard points (600 at 50:1 odds, 20 points to double the odds) for goods and bads. No raw
scores are stored. All AUC/KS values are exact (not from histograms) except ``history``.
Every number is stored rounded to six decimals (:func:`rounded`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal, SupportsFloat, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedrisk.decisions.stages import Stage
from fedrisk.errors import ConfigError
from fedrisk.files import write_atomic
from fedrisk.ml.kinds import ModelKind
from simulations.studies.config import PartitionKind, StudyConfig

_DECIMALS = 6
_Document = TypeVar("_Document", bound=BaseModel)


def rounded(value: SupportsFloat) -> float:
    """``value`` as stored in the results (six decimals: far below any AUC difference shown)."""
    return round(float(value), _DECIMALS)


def rounded_all(values: Iterable[SupportsFloat]) -> list[float]:
    """Every value :func:`rounded`."""
    return [rounded(v) for v in values]


class StrictRecord(BaseModel):
    """A study record: unknown keys in a results file are refused, not dropped."""

    model_config = ConfigDict(extra="forbid")


class RoundPoint(StrictRecord):
    """Pooled-test AUC and KS after one federated round (from the decrypted histograms)."""

    round: int
    auc: float
    ks: float


class FederatedResult(StrictRecord):
    """One federated run (encrypted or plaintext), scored exactly on the pooled test data."""

    auc: float
    ks: float
    model_id: str
    seconds: float
    seconds_per_round: float
    bytes_up_per_party_round: float
    history: list[RoundPoint]


class BaselineResult(StrictRecord):
    """A non-federated model on the pooled test data."""

    auc: float
    ks: float


class PartyResult(StrictRecord):
    """One party: its data and its local-only model against the federated one."""

    party: str
    n_train: int
    n_test: int
    n_test_bad: int
    share_of_rows: float
    bad_rate: float
    local_auc: float
    """Local-only model (early-stopped), on the pooled test data."""
    local_ks: float
    own_test_local_auc: float | None
    own_test_federated_auc: float | None
    own_gain: float | None
    """Federated minus local-only AUC on the party's own test rows (None: one class there)."""
    local_round_auc: list[float]
    """Local-only model on the federated schedule, pooled-test AUC after each round."""


class ColdStart(StrictRecord):
    """What the smallest party gains by joining, on its own test rows."""

    party: str
    share_of_rows: float
    small_lender: bool
    n_test: int
    n_test_bad: int
    own_test_local_auc: float | None
    own_test_federated_auc: float | None
    gain: float | None


class RocCurve(StrictRecord):
    """True-positive rate (bads caught) at a fixed grid of false-positive rates."""

    fpr: list[float]
    tpr: list[float]


class KsCurve(StrictRecord):
    """Cumulative share of bads and of goods among the riskiest ``population`` share."""

    population: list[float]
    cum_bad: list[float]
    cum_good: list[float]
    ks: float
    at_population: float


class ScoreHistogram(StrictRecord):
    """Counts of goods and bads per scorecard-points bin (higher points = safer)."""

    edges: list[float]
    goods: list[int]
    bads: list[int]


class ModelCurves(StrictRecord):
    """Plot data of one model on the pooled test data."""

    roc: RocCurve
    ks: KsCurve | None = None
    scores: ScoreHistogram | None = None


class CellResult(StrictRecord):
    """Everything measured in one cell; see the module docstring."""

    key: str
    task: str
    stage: Stage
    dataset: str
    synthetic: bool
    partition_kind: PartitionKind
    partition: str
    model: ModelKind
    seed: int
    parties: int
    rounds: int
    local_epochs: int
    learning_rate: float
    optimizer: str = "default"
    proximal_mu: float = 0.0
    server_optimizer: str = "fedavg"
    server_learning_rate: float = 0.01
    n_train: int
    n_test: int
    n_test_bad: int
    encrypted: FederatedResult
    plaintext: FederatedResult | None
    centralized: BaselineResult
    reference: BaselineResult | None = None
    """The model kind's library reference on the pooled rows
    (:func:`simulations.baselines.reference_scores`); None when not installed or not measured
    (cells from before it was)."""
    party_results: list[PartyResult]
    cold_start: ColdStart
    curves: dict[str, ModelCurves]
    seconds: float


class StudyResults(StrictRecord):
    """The ``results.json`` of a study."""

    format: Literal["fedrisk-study"] = "fedrisk-study"
    version: Literal[1] = 1
    created_at: str
    updated_at: str
    config: StudyConfig
    cells: dict[str, CellResult] = Field(default_factory=dict)
    failures: dict[str, str] = Field(default_factory=dict)


def read_document(path: Path, model: type[_Document], *, what: str) -> _Document:
    """Read and validate one results document of type ``model``.

    Raises
    ------
    ConfigError
        If the file is unreadable or not such a document (``what`` names it in the message).
    """
    try:
        return model.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as e:
        raise ConfigError(f"results file must be {what}; {path}: {e}") from e


def load_results(path: Path) -> StudyResults:
    """Read and validate a study's ``results.json``.

    Raises
    ------
    ConfigError
        If the file is not a valid study results document.
    """
    return read_document(path, StudyResults, what="a fedrisk study results.json")


def save_results(results: StudyResults, path: Path) -> None:
    """Write ``results`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, results.model_dump_json(indent=1))
