"""Adaptive server optimisers (FedAdam, FedYogi) that every party applies alike after decrypting.

Reddi et al. (2021, "Adaptive Federated Optimization") treat the change of the averaged model,
``Δ = mean(w_i) − x``, as a pseudo-gradient and step the global model ``x`` with Adam or Yogi on
the server. Our coordinator holds only ciphertexts and cannot run that step. Every party holds
the same decryption of the same sum, though, so each one runs the step itself and, being
deterministic, gets the same next global model as every other.

Where the optimiser's state lives
---------------------------------
The step needs the previous global model ``x`` and the moments ``m`` and ``v``. A party keeps
none of them between messages: each party appends the state it started its round from to its
trained weights before weighting and encrypting (:meth:`ServerOptimizer.carry`). Every party
started from the same state, so the decrypted weighted sum divided by the total count gives that
state back exactly, beside the averaged weights. The state is therefore a function of the
latest decrypted aggregate alone: a party that restarted or joined late, the evaluation and
release messages, and a coordinator resumed from its ciphertext checkpoint all derive it from
the one global sum they already receive. The price is a vector four times as long (still a
handful of ciphertexts for our models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from fedrisk.errors import ConfigError, ModelError
from fedrisk.ml.kinds import SERVER_OPTIMIZERS, ServerOptimizerKind

__all__ = ["BETA_1", "BETA_2", "TAU", "GlobalModel", "ServerOptimizer"]

FloatArray = npt.NDArray[np.float64]

BETA_1: Final = 0.9
BETA_2: Final = 0.99
TAU: Final = 1e-3
"""Reddi et al.'s defaults: moment decays 0.9 / 0.99 and adaptivity τ = 1e-3 (also ``v``'s
starting value τ², so the first step is about ``learning_rate`` per coordinate)."""


@dataclass(frozen=True)
class GlobalModel:
    """The global model a round starts from, with the adaptive optimiser's moments (None for
    FedAvg, which keeps no state)."""

    weights: FloatArray
    momentum: FloatArray | None = None
    second_moment: FloatArray | None = None


@dataclass(frozen=True)
class ServerOptimizer:
    """The step from a decrypted average to the next global model, identical at every party.

    Parameters
    ----------
    kind
        ``fedavg`` takes the average as the global model; ``fedadam`` and ``fedyogi`` step the
        previous global model along the average's change.
    learning_rate
        The server step size η (unused by ``fedavg``).
    """

    kind: ServerOptimizerKind = "fedavg"
    learning_rate: float = 0.01

    def __post_init__(self) -> None:
        if self.kind not in SERVER_OPTIMIZERS:
            raise ConfigError(
                f"server optimizer must be one of {', '.join(SERVER_OPTIMIZERS)}; got {self.kind!r}"
            )
        if not (np.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(
                f"server learning rate must be a positive number; got {self.learning_rate!r}"
            )

    @property
    def adaptive(self) -> bool:
        """Whether the optimiser carries state (FedAdam, FedYogi)."""
        return self.kind != "fedavg"

    def initial(self, weights: npt.ArrayLike) -> GlobalModel:
        """Round 1's global model: ``weights`` with zero momentum and ``v = τ²``."""
        x = np.asarray(weights, dtype=np.float64)
        if not self.adaptive:
            return GlobalModel(weights=x)
        return GlobalModel(
            weights=x, momentum=np.zeros_like(x), second_moment=np.full_like(x, TAU**2)
        )

    def carry(self, trained: npt.ArrayLike, start: GlobalModel) -> FloatArray:
        """What a party weights and encrypts: its trained weights, then (adaptive) the state
        ``start`` it trained from."""
        w = np.asarray(trained, dtype=np.float64)
        if not self.adaptive:
            return w
        if start.momentum is None or start.second_moment is None:
            raise ModelError(f"a {self.kind} round must start from a model with its moments")
        if w.shape != start.weights.shape:
            raise ModelError(
                f"trained weights must have the global model's {start.weights.size} values; "
                f"got {w.size}"
            )
        return np.concatenate([w, start.weights, start.momentum, start.second_moment])

    def step(self, mean: npt.ArrayLike) -> GlobalModel:
        """The next global model from the decrypted weighted average of the carried vectors.

        Raises
        ------
        ModelError
            If ``mean`` cannot be split into weights and state (an adaptive optimiser needs
            four equal parts).
        """
        arr = np.asarray(mean, dtype=np.float64)
        if not self.adaptive:
            return GlobalModel(weights=arr)
        if arr.ndim != 1 or arr.size == 0 or arr.size % 4:
            raise ModelError(
                f"a {self.kind} aggregate must hold weights, model, momentum and second moment "
                f"(4 equal parts); got {arr.size} values"
            )
        averaged, previous, m, v = np.split(arr, 4)
        delta = averaged - previous
        m = BETA_1 * m + (1.0 - BETA_1) * delta
        squared = delta * delta
        if self.kind == "fedadam":
            v = BETA_2 * v + (1.0 - BETA_2) * squared
        else:
            # Yogi moves v towards Δ² by an additive step, so a rare large Δ cannot blow v up
            # (nor one small Δ shrink it) as fast as Adam's multiplicative average does.
            v = v - (1.0 - BETA_2) * squared * np.sign(v - squared)
        # CKKS noise (~1e-12 after dividing the sum) must not take v below 0.
        v = np.maximum(v, 0.0)
        weights = previous + self.learning_rate * m / (np.sqrt(v) + TAU)
        return GlobalModel(weights=weights, momentum=m, second_moment=v)
