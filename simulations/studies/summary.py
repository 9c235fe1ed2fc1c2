"""A study's summary: one row per (task, partition, model) over its seeds, and why it misses.

:func:`summarize` averages the seeds of every (task, partition, model) and gives each row a
status against the 0.01 target; :func:`gap_note` explains, from measured facts of the cells,
why a row misses the target (or beats centralized).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from fedrisk.decisions.stages import Stage
from fedrisk.ml.kinds import ModelKind
from simulations.studies.config import PARTITION_KINDS, TARGET_GAP, PartitionKind
from simulations.studies.results import CellResult, StudyResults, rounded


class SummaryRow(BaseModel):
    """One (task, partition, model) over its seeds: mean and sample sd (None for one seed)."""

    model_config = ConfigDict(extra="forbid")

    task: str
    stage: Stage
    synthetic: bool
    partition_kind: PartitionKind
    partition: str
    model: ModelKind
    n_seeds: int
    parties: int
    rounds: int
    optimizer: str = "default"
    server_optimizer: str = "fedavg"
    n_test_bad: float
    encrypted_auc_mean: float
    encrypted_auc_sd: float | None
    encrypted_ks_mean: float
    encrypted_ks_sd: float | None
    plaintext_auc_mean: float | None
    plaintext_seeds: int
    encrypted_vs_plaintext_max_abs: float | None
    centralized_auc_mean: float
    centralized_auc_sd: float | None
    centralized_ks_mean: float
    centralized_ks_sd: float | None
    gap_mean: float
    """Encrypted federated minus centralized AUC."""
    gap_sd: float | None
    local_auc_mean: float
    """Local-only AUC on the pooled test data, mean over parties and seeds."""
    local_ks_mean: float
    """Local-only KS on the pooled test data, mean over parties and seeds."""
    best_local_auc_mean: float
    cold_start_party: str
    cold_start_share: float
    cold_start_n_test_bad: float
    """Bads in the smallest party's own test rows (mean over seeds): how noisy its gain is."""
    small_lender: bool
    cold_start_gain_mean: float | None
    cold_start_gain_sd: float | None
    cold_start_n: int
    seconds_per_round: float
    bytes_up_per_party_round: float
    status: Literal["within", "federated better", "gap"]
    note: str


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None with fewer than two values)."""
    array = np.asarray(values, dtype=np.float64)
    mean = rounded(float(array.mean()))
    return mean, (rounded(float(array.std(ddof=1))) if len(array) > 1 else None)


def _groups(results: StudyResults) -> dict[tuple[str, str, str], list[CellResult]]:
    groups: dict[tuple[str, str, str], list[CellResult]] = {}
    for cell in results.cells.values():
        groups.setdefault((cell.task, cell.partition, cell.model), []).append(cell)
    order = {task: i for i, task in enumerate(results.config.tasks)}
    kinds = {kind: i for i, kind in enumerate(PARTITION_KINDS)}

    def rank(item: tuple[tuple[str, str, str], list[CellResult]]) -> tuple[int, int, str]:
        (task, _, model), cells = item
        return order.get(task, len(order)), kinds[cells[0].partition_kind], model

    return {
        key: sorted(cells, key=lambda c: c.seed) for key, cells in sorted(groups.items(), key=rank)
    }


def summarize(results: StudyResults) -> list[SummaryRow]:
    """One row per (task, partition, model), with a note wherever the 0.01 target is missed."""
    rows: list[SummaryRow] = []
    for cells in _groups(results).values():
        first = cells[0]
        enc_auc = mean_sd([c.encrypted.auc for c in cells])
        enc_ks = mean_sd([c.encrypted.ks for c in cells])
        cen_auc = mean_sd([c.centralized.auc for c in cells])
        cen_ks = mean_sd([c.centralized.ks for c in cells])
        gap = mean_sd([c.encrypted.auc - c.centralized.auc for c in cells])
        plain = [c for c in cells if c.plaintext is not None]
        plain_auc = (
            mean_sd([c.plaintext.auc for c in plain if c.plaintext is not None])[0]
            if plain
            else None
        )
        diffs = [abs(c.encrypted.auc - c.plaintext.auc) for c in plain if c.plaintext is not None]
        gains = [c.cold_start.gain for c in cells if c.cold_start.gain is not None]
        gain = mean_sd(gains) if gains else (None, None)
        locals_ = [p.local_auc for c in cells for p in c.party_results]
        status: Literal["within", "federated better", "gap"] = (
            "gap"
            if gap[0] < -TARGET_GAP
            else ("federated better" if gap[0] > TARGET_GAP else "within")
        )
        row = SummaryRow(
            task=first.task,
            stage=first.stage,
            synthetic=first.synthetic,
            partition_kind=first.partition_kind,
            partition=first.partition,
            model=first.model,
            n_seeds=len(cells),
            parties=first.parties,
            rounds=first.rounds,
            optimizer=first.optimizer,
            server_optimizer=first.server_optimizer,
            n_test_bad=rounded(np.mean([c.n_test_bad for c in cells])),
            encrypted_auc_mean=enc_auc[0],
            encrypted_auc_sd=enc_auc[1],
            encrypted_ks_mean=enc_ks[0],
            encrypted_ks_sd=enc_ks[1],
            plaintext_auc_mean=plain_auc,
            plaintext_seeds=len(plain),
            encrypted_vs_plaintext_max_abs=rounded(max(diffs)) if diffs else None,
            centralized_auc_mean=cen_auc[0],
            centralized_auc_sd=cen_auc[1],
            centralized_ks_mean=cen_ks[0],
            centralized_ks_sd=cen_ks[1],
            gap_mean=gap[0],
            gap_sd=gap[1],
            local_auc_mean=rounded(np.mean(locals_)),
            local_ks_mean=rounded(np.mean([p.local_ks for c in cells for p in c.party_results])),
            best_local_auc_mean=rounded(
                np.mean([max(p.local_auc for p in c.party_results) for c in cells])
            ),
            cold_start_party=first.cold_start.party,
            cold_start_share=first.cold_start.share_of_rows,
            cold_start_n_test_bad=rounded(np.mean([c.cold_start.n_test_bad for c in cells])),
            small_lender=first.cold_start.small_lender,
            cold_start_gain_mean=gain[0],
            cold_start_gain_sd=gain[1],
            cold_start_n=len(gains),
            seconds_per_round=rounded(np.mean([c.encrypted.seconds_per_round for c in cells])),
            bytes_up_per_party_round=rounded(
                np.mean([c.encrypted.bytes_up_per_party_round for c in cells])
            ),
            status=status,
            note="",
        )
        rows.append(row.model_copy(update={"note": gap_note(row, cells)}))
    return rows


def _schedule_note(row: SummaryRow, cells: Sequence[CellResult]) -> str | None:
    """Whether the per-round AUC peaked before the last round or was still rising."""
    peaks = [max(h.auc for h in c.encrypted.history) - c.encrypted.auc for c in cells]
    rising = []
    for c in cells:
        history = [h.auc for h in c.encrypted.history]
        back = max(0, len(history) - 1 - max(1, len(history) // 4))
        rising.append(history[-1] - history[back])
    if float(np.mean(peaks)) > 0.005:
        return (
            f"The federated AUC peaked {float(np.mean(peaks)):.4f} above its final value before "
            "the last round: training ran past its best round (federated runs have no early "
            "stopping). Federated early stopping on a held-out validation split, or fewer "
            "rounds / a lower learning rate, would close this."
        )
    if float(np.mean(rising)) > 0.002:
        return (
            f"The AUC was still rising in the last quarter of the {row.rounds} rounds "
            f"(+{float(np.mean(rising)):.4f}): more rounds would close part of the gap."
        )
    return None


def _drift_notes(row: SummaryRow, cells: Sequence[CellResult]) -> list[str]:
    """What the partition and the model kind do to the parties' updates (client drift)."""
    parts = []
    if row.partition_kind == "label":
        rates = [p.bad_rate for c in cells for p in c.party_results]
        parts.append(
            f"Label skew: the parties' bad rates range from {min(rates):.1%} to "
            f"{max(rates):.1%}, so local updates pull in different directions (client "
            "drift)."
        )
        if row.optimizer != "sgd":
            parts.append(
                "Every party starts a fresh Adam optimiser each round, whose first steps "
                "have about the same size whatever the gradient, so the average of the "
                "parties' steps is biased away from the pooled optimum; plain SGD at the "
                "parties (the scenario's label_skew plan) avoids that."
            )
        if row.server_optimizer == "fedavg":
            parts.append(
                "A server optimiser that every party applies to the decrypted average "
                "(FedAdam / FedYogi, run option server-optimizer), fewer local steps per round "
                "with more rounds, or a proximal term (FedProx) may reduce the drift "
                "(benchmarks/client_drift.py measures them; on the MLP rows only FedYogi on "
                "the C-card did)."
            )
        else:
            parts.append(
                f"The parties already step the global model with {row.server_optimizer} "
                "(the scenario's label-skew plan); what remains is the drift a fixed number "
                "of rounds does not average out."
            )
    elif row.partition_kind == "feature":
        parts.append(
            f"Feature skew ({row.partition}): each party sees only its own slice of the "
            "feature space, so local updates fit different regions; a proximal term or fewer "
            "local steps per round with more rounds reduces the drift."
        )
    if row.model == "mlp":
        parts.append(
            "The MLP is non-convex: averaging MLPs trained apart converges more slowly than "
            "logistic regression; more rounds at a lower learning rate help."
        )
    return parts


def gap_note(row: SummaryRow, cells: Sequence[CellResult]) -> str:
    """Why the encrypted federated model misses (or beats) centralized by more than 0.01.

    Every sentence is backed by a measured fact of the cells: plaintext agreement, seed
    noise, the shape of the per-round AUC, the partition and the model kind.
    """
    if row.status == "within":
        return ""
    gap, sd = row.gap_mean, row.gap_sd
    spread = f" (sd over seeds {sd:.4f})" if sd is not None else ""
    noisy = (sd is not None and sd >= TARGET_GAP) or row.n_test_bad < 300
    noise = (
        [
            f"The pooled test data holds only {row.n_test_bad:.0f} bads, so AUC differences "
            "of this size are partly seed noise; more seeds or k-fold test sets would measure "
            "the gap more precisely."
        ]
        if noisy
        else []
    )
    if row.status == "federated better":
        better = (
            f"Federated beats centralized by {gap:.4f}{spread}. The centralized model stops "
            "early on a 10 % validation split of the pooled rows, the federated one trains a "
            "fixed number of rounds with the same data, so neither is an upper bound of the "
            "other."
        )
        return " ".join([better, *noise])
    parts = [f"Federated encrypted is {-gap:.4f} AUC below centralized{spread}."]
    if row.encrypted_vs_plaintext_max_abs is not None:
        parts.append(
            "Encryption is not the cause: the plaintext federation differs by at most "
            f"{row.encrypted_vs_plaintext_max_abs:.4f} AUC."
        )
    schedule = _schedule_note(row, cells)
    if schedule is not None:
        parts.append(schedule)
    return " ".join([*parts, *_drift_notes(row, cells), *noise])
