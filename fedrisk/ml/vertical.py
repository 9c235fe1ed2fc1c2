"""Vertical logistic regression's plaintext side: per-party preprocessing, the shared batch
schedule, the optimizer, and the plaintext oracle of the encrypted protocol.

Every party turns its own columns into a matrix with its own :class:`PartyPreprocessor`
(statistics from its own known training rows only), applies its own optimizer to its own
gradient. The guest alone orders the mini-batches (from its own secret seed) and pads each host's
list of row references (:func:`pad_references`), so a host never learns which of the guest's
customers it lacks.

The residual expands the sigmoid to first order around the guest's own score ``u_G``, which the
guest knows per customer: ``sigmoid(u_G + U) ~ sigmoid(u_G) + sigmoid'(u_G) U`` with ``U`` the
hosts' summed scores. It is exact in the guest's part and linear in the hosts' scores, which is
what lets those stay encrypted (the guest multiplies their ciphertexts by its plaintext slopes;
see ``docs/vertical.md``). In units of four:
``4d = 4(sigmoid(u_G) - y) + 4 sigmoid'(u_G) U``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fedrisk.errors import FedRiskError

FloatMatrix = npt.NDArray[np.float64]
FloatVector = npt.NDArray[np.float64]

CLIP_SD = 5.0
"""Standardized values are clipped to this many standard deviations, which bounds every
per-customer product the protocol encrypts (the masks are chosen against that bound)."""
KNOWN_COLUMN = "_known"


class VerticalTrainingError(FedRiskError, ValueError):
    """Vertical training inputs are inconsistent."""


class VerticalParams(BaseModel):
    """Hyper-parameters every party of a vertical run shares (from the run config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Chosen on the validation AUC of the plaintext oracle over seeds 0-4 of fate-hetero and
    # synthetic-vertical (docs/vertical.md, "Choosing the recipe"); 4,096 rows fill one
    # ciphertext chunk, so a batch costs no more ciphertexts than half of an 8,192-row one.
    epochs: int = Field(default=60, ge=1, le=1000)
    batch_size: int = Field(default=4096, ge=16)
    learning_rate: float = Field(default=0.1, gt=0.0, le=10.0)
    l2: float = Field(default=1e-3, ge=0.0)
    patience: int = Field(default=15, ge=1)
    seed: int = 0


@dataclass
class PartyPreprocessor:
    """Standardizes numeric columns and one-hot encodes categorical ones, from one party's own
    known training rows; unknown rows become all zeros (the imputed mean), and a host with
    partial overlap gets a ``_known`` indicator column."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    means_: dict[str, float] = field(default_factory=dict)
    scales_: dict[str, float] = field(default_factory=dict)
    levels_: dict[str, list[str]] = field(default_factory=dict)
    known_indicator_: bool = False

    def fit(
        self, frame: pd.DataFrame, known: npt.NDArray[np.bool_], *, rows: npt.NDArray[np.int64]
    ) -> Self:
        """Learn the statistics on ``rows`` that the party knows."""
        fit_rows = rows[known[rows]]
        if len(fit_rows) == 0:
            raise VerticalTrainingError("preprocessor must see at least one known training row")
        sub = frame.iloc[fit_rows]
        for col in self.numeric:
            values = pd.to_numeric(sub[col], errors="coerce").to_numpy(dtype=np.float64)
            mean = float(np.nanmean(values))
            sd = float(np.nanstd(values))
            self.means_[col] = mean
            self.scales_[col] = sd if sd > 1e-12 else 1.0
        for col in self.categorical:
            self.levels_[col] = sorted(str(v) for v in sub[col].dropna().unique())
        self.known_indicator_ = not bool(known.all())
        return self

    @property
    def columns(self) -> list[str]:
        """Names of the matrix columns, in order."""
        out = list(self.numeric)
        for col in self.categorical:
            out.extend(f"{col}={level}" for level in self.levels_[col])
        if self.known_indicator_:
            out.append(KNOWN_COLUMN)
        return out

    def transform(self, frame: pd.DataFrame, known: npt.NDArray[np.bool_]) -> FloatMatrix:
        """The party's matrix: zeros where a value or the whole customer is missing."""
        parts: list[FloatMatrix] = []
        for col in self.numeric:
            values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
            z = np.clip((values - self.means_[col]) / self.scales_[col], -CLIP_SD, CLIP_SD)
            parts.append(np.nan_to_num(z, nan=0.0)[:, None])
        for col in self.categorical:
            text = frame[col].astype("string").fillna("")
            parts.append(
                np.stack(
                    [(text == level).to_numpy(dtype=np.float64) for level in self.levels_[col]],
                    axis=1,
                )
            )
        if self.known_indicator_:
            parts.append(known.astype(np.float64)[:, None])
        matrix = np.concatenate(parts, axis=1) if parts else np.zeros((len(frame), 0))
        matrix[~known] = 0.0
        return matrix

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (for the released part)."""
        return {
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "means": self.means_,
            "scales": self.scales_,
            "levels": self.levels_,
            "known_indicator": self.known_indicator_,
            "clip_sd": CLIP_SD,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PartyPreprocessor:
        """Inverse of :meth:`to_dict`."""
        prep = cls(tuple(data["numeric"]), tuple(data["categorical"]))
        prep.means_ = {str(k): float(v) for k, v in data["means"].items()}
        prep.scales_ = {str(k): float(v) for k, v in data["scales"].items()}
        prep.levels_ = {str(k): [str(x) for x in v] for k, v in data["levels"].items()}
        prep.known_indicator_ = bool(data["known_indicator"])
        return prep


def batch_schedule(
    train_rows: npt.NDArray[np.int64], *, batch_size: int, seed: int, epoch: int
) -> list[npt.NDArray[np.int64]]:
    """The mini-batches of one epoch: the same at every party (derived from the public seed)."""
    order = np.random.default_rng([seed, epoch]).permutation(train_rows)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@dataclass
class AdamState:
    """Adam on one party's own weights (its moments never leave it)."""

    weights: FloatVector
    m: FloatVector
    v: FloatVector
    t: int = 0

    @classmethod
    def zeros(cls, n: int) -> AdamState:
        """Fresh state for ``n`` weights."""
        return cls(np.zeros(n), np.zeros(n), np.zeros(n))

    def step(self, grad: FloatVector, *, learning_rate: float) -> None:
        """One Adam update with the party's plaintext gradient."""
        self.t += 1
        self.m = 0.9 * self.m + 0.1 * grad
        self.v = 0.999 * self.v + 0.001 * grad**2
        m_hat = self.m / (1 - 0.9**self.t)
        v_hat = self.v / (1 - 0.999**self.t)
        self.weights = self.weights - learning_rate * m_hat / (np.sqrt(v_hat) + 1e-8)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (kept in the party's own run state)."""
        return {
            "w": self.weights.tolist(),
            "m": self.m.tolist(),
            "v": self.v.tolist(),
            "t": self.t,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdamState:
        """Inverse of :meth:`to_dict`."""
        return cls(
            np.asarray(data["w"], dtype=np.float64),
            np.asarray(data["m"], dtype=np.float64),
            np.asarray(data["v"], dtype=np.float64),
            int(data["t"]),
        )


def with_intercept(matrix: FloatMatrix) -> FloatMatrix:
    """The guest's matrix with the intercept's column of ones first."""
    return np.concatenate([np.ones((len(matrix), 1)), matrix], axis=1)


def penalized_gradient(
    xt_d4: FloatVector, weights: FloatVector, *, n: int, l2: float, intercept: bool
) -> FloatVector:
    """``X^T d / n + l2 w`` from ``X^T (4d)``; the intercept is not penalized."""
    penalty = l2 * weights
    if intercept:
        penalty[0] = 0.0
    return np.asarray(xt_d4 / (4.0 * n) + penalty, dtype=np.float64)


def sigmoid(u: FloatVector) -> FloatVector:
    """The logistic function."""
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * u)), dtype=np.float64)


def residual4(guest_score: FloatVector, labels: npt.NDArray[np.int64]) -> FloatVector:
    """The guest's part of ``4d``: ``4(sigmoid(u_G) - y)`` (the hosts' part is added under
    encryption)."""
    return np.asarray(4.0 * (sigmoid(guest_score) - labels), dtype=np.float64)


def host_slopes4(guest_score: FloatVector) -> FloatVector:
    """``4 sigmoid'(u_G)``: what multiplies the hosts' summed score in ``4d``."""
    p = sigmoid(guest_score)
    return np.asarray(4.0 * p * (1.0 - p), dtype=np.float64)


def pad_references(
    refs: npt.NDArray[np.int64], *, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """A host's references for a list of guest rows, padded where the host lacks the customer.

    ``refs`` holds, per guest row of the list, the host's reference of that customer or -1.
    Each -1 becomes a reference of one of the list's shared customers, drawn so that every
    shared reference appears either ``q`` or ``q + 1`` times in the whole list (``q`` = list
    length // shared count): with the guest's secret row order, the padded list is a uniformly
    random arrangement of that multiset, the same whichever customers the host lacks. The guest
    zeroes the padding's contribution under encryption.

    Raises
    ------
    VerticalTrainingError
        If the list has no shared customer to pad with.
    """
    out = np.asarray(refs, dtype=np.int64).copy()
    lacking = np.flatnonzero(out < 0)
    if len(lacking) == 0:
        return out
    shared = out[out >= 0]
    if len(shared) == 0:
        raise VerticalTrainingError(
            f"a host must share a customer in every list it scores; got none among {len(out)}"
        )
    q, extra = divmod(len(out), len(shared))
    fill = np.concatenate([np.repeat(shared, q - 1), rng.choice(shared, size=extra, replace=False)])
    out[lacking] = rng.permutation(fill)
    return out


@dataclass
class PlainVerticalResult:
    """What the plaintext oracle trained."""

    weights: list[FloatVector]
    history: list[dict[str, float]]
    best_epoch: int


def train_plain_vertical(
    matrices: Sequence[FloatMatrix],
    labels: npt.NDArray[np.int64],
    *,
    train_rows: npt.NDArray[np.int64],
    valid_rows: npt.NDArray[np.int64],
    params: VerticalParams,
) -> PlainVerticalResult:
    """The protocol's arithmetic without encryption: the oracle for the encrypted run and the
    plaintext side of the benchmark. ``matrices[0]`` is the guest's (intercept first)."""
    from fedrisk.ml.metrics import auc

    states = [AdamState.zeros(m.shape[1]) for m in matrices]
    history: list[dict[str, float]] = []
    best: tuple[float, int, list[FloatVector]] = (-np.inf, 0, [s.weights for s in states])
    for epoch in range(params.epochs):
        for batch in batch_schedule(
            train_rows, batch_size=params.batch_size, seed=params.seed, epoch=epoch
        ):
            u_guest = matrices[0][batch] @ states[0].weights
            u_hosts = sum(
                (m[batch] @ s.weights for m, s in zip(matrices[1:], states[1:], strict=True)),
                np.zeros(len(batch)),
            )
            d4 = residual4(u_guest, labels[batch]) + host_slopes4(u_guest) * u_hosts
            for i, (m, s) in enumerate(zip(matrices, states, strict=True)):
                grad = penalized_gradient(
                    m[batch].T @ d4, s.weights, n=len(batch), l2=params.l2, intercept=i == 0
                )
                s.step(grad, learning_rate=params.learning_rate)
        score = np.asarray(
            sum(m[valid_rows] @ s.weights for m, s in zip(matrices, states, strict=True))
        )
        valid_auc = float(auc(labels[valid_rows], score))
        history.append({"epoch": float(epoch + 1), "valid_auc": valid_auc})
        if valid_auc > best[0]:
            best = (valid_auc, epoch + 1, [s.weights.copy() for s in states])
        elif epoch + 1 - best[1] >= params.patience:
            break
    return PlainVerticalResult(weights=best[2], history=history, best_epoch=best[1])
