"""Differential privacy of a federated run: its plan, its RDP accountant, client-level clipping.

Two modes, chosen per run (run-config ``dp-mode``):

``sample`` (sample-level DP-SGD at every party, :mod:`fedrisk.ml.dp_sgd`)
    Each local step draws a Poisson sample of the party's rows with rate ``q``
    (``dp-sampling-rate``), clips every row's gradient to L2 norm ``C`` (``dp-clip-norm``), sums
    them and adds ``N(0, (σC)^2 I)``. A round is ``local_epochs * ceil(1/q)`` such steps. One
    customer's row is at one party only, so the release's ε is the largest party's ε (parallel
    composition over disjoint rows).
``client`` (distributed client-level DP)
    Each party clips its round update ``w_trained - w_global`` to L2 norm ``C`` and adds its
    share ``N(0, (σC)^2 / m I)`` of the noise, ``m = min-parties``; the encrypted sum of
    ``k >= m`` honest parties then carries noise of variance ``k/m (σC)^2 >= (σC)^2``, while no
    party and not the coordinator ever sees a clipped update without noise. The updates are
    averaged with equal weights (a party's row count would otherwise scale its sensitivity).

Accounting (both modes)
    Rényi DP (Mironov 2017) with Google's ``dp-accounting`` ``RdpAccountant`` (the one Flower's
    ``flwr[dp]`` extra installs), converted to ``(ε, δ)`` at the run's ``dp-delta``.

    - sample: ``T = rounds * local_epochs * ceil(1/q)`` self-composed Poisson-subsampled
      Gaussian mechanisms (Mironov, Talwar, Zhang 2019), each with noise multiplier σ and rate q;
      a party that trained in ``r`` rounds has composed ``r * local_epochs * ceil(1/q)`` of them.
    - client: ``rounds`` self-composed Gaussian mechanisms of sensitivity ``C`` and noise ``σC``
      on the sum, no subsampling amplification claimed (every party trains every round; the
      coordinator's choice of parties is not secret randomness).

    The noise multiplier is calibrated to the budget ``dp-epsilon`` over the planned rounds (or
    taken from ``dp-noise-multiplier`` and checked); a plan whose ε exceeds the budget is refused.

Notes
-----
What DP here does not cover: the pooled feature statistics (means, histograms, quantile cuts)
that fix the shared preprocessing and travel inside the artifact, the pooled bad rate behind the
class weight and the logit offset, and the per-round pooled AUC/KS. They are aggregates over every
party's rows but carry no noise. Client-level noise assumes at least ``min-parties`` parties add
their share honestly: k colluding parties that know their own shares leave ``(m - k)/m`` of the
variance. The noise is sampled in floating point (Mironov 2012's attack on the low-order bits is
not addressed).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any, Final, Literal, get_args

import numpy as np
import numpy.typing as npt

from fedrisk.errors import ConfigError

__all__ = [
    "ACCOUNTANT",
    "DP_MODES",
    "MIN_NOISE_MULTIPLIER",
    "DpMode",
    "PrivacyBudgetError",
    "PrivacyPlan",
    "accountant_version",
    "client_epsilon",
    "clip_update",
    "noisy_client_update",
    "party_epsilons",
    "plan_privacy",
    "sample_epsilon",
]

DpMode = Literal["off", "sample", "client"]
DP_MODES: Final[tuple[DpMode, ...]] = get_args(DpMode)

ACCOUNTANT: Final = "rdp"
"""The accountant named in the artifact (``dp_accounting.rdp.RdpAccountant``)."""

_MAX_NOISE_MULTIPLIER: Final = 1e4
MIN_NOISE_MULTIPLIER: Final = 0.3
"""The least noise a calibrated plan adds: a budget that less noise would meet gets this much
(and spends less than the budget). Below it the privacy is nominal, and the accountant's series
for fractional orders stop converging, which makes calibration slow."""

FloatArray = npt.NDArray[np.float64]


class PrivacyBudgetError(ConfigError):
    """A DP configuration whose ε at δ exceeds the run's budget, or that cannot meet it."""


@functools.lru_cache(maxsize=256)
def sample_epsilon(
    noise_multiplier: float, *, sampling_rate: float, steps: int, delta: float
) -> float:
    """ε at ``delta`` of ``steps`` Poisson-subsampled Gaussian steps (DP-SGD), RDP-accounted."""
    if steps == 0:
        return 0.0
    import dp_accounting
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    accountant.compose(
        dp_accounting.PoissonSampledDpEvent(
            sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)
        ),
        steps,
    )
    return float(accountant.get_epsilon(delta))


@functools.lru_cache(maxsize=256)
def client_epsilon(noise_multiplier: float, *, rounds: int, delta: float) -> float:
    """ε at ``delta`` of ``rounds`` Gaussian mechanisms on the clipped sum, RDP-accounted."""
    if rounds == 0:
        return 0.0
    import dp_accounting
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier), rounds)
    return float(accountant.get_epsilon(delta))


@dataclass(frozen=True)
class PrivacyPlan:
    """A run's DP settings with the noise multiplier that meets its budget (see module notes)."""

    mode: Literal["sample", "client"]
    epsilon_budget: float
    delta: float
    clip_norm: float
    noise_multiplier: float
    sampling_rate: float
    """Poisson rate of DP-SGD steps (sample mode); 1.0 in client mode."""
    rounds: int
    local_epochs: int
    min_parties: int

    @property
    def steps_per_round(self) -> int:
        """Accounted mechanisms per round a party trains in."""
        if self.mode == "client":
            return 1
        return self.local_epochs * math.ceil(1.0 / self.sampling_rate)

    def epsilon(self, rounds: int | None = None) -> float:
        """The accountant's ε at δ after ``rounds`` trained rounds (default: all planned)."""
        done = self.rounds if rounds is None else rounds
        if self.mode == "client":
            return client_epsilon(self.noise_multiplier, rounds=done, delta=self.delta)
        return sample_epsilon(
            self.noise_multiplier,
            sampling_rate=self.sampling_rate,
            steps=done * self.steps_per_round,
            delta=self.delta,
        )

    @property
    def noise_share_std(self) -> float:
        """Client mode: the standard deviation of one party's share of the noise."""
        return self.noise_multiplier * self.clip_norm / math.sqrt(self.min_parties)

    def describe_composition(self) -> str:
        """The composition the accountant computed, in words (recorded in the artifact)."""
        if self.mode == "client":
            return (
                f"RDP: {self.rounds} self-composed Gaussian mechanisms, sensitivity C="
                f"{self.clip_norm:g} of the sum, noise sigma*C, no subsampling amplification"
            )
        return (
            f"RDP: {self.rounds} rounds x {self.steps_per_round} Poisson-subsampled Gaussian "
            f"steps (q={self.sampling_rate:g}, sigma={self.noise_multiplier:.4g}) per party; "
            "release epsilon = max over parties (disjoint rows)"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON fields."""
        return asdict(self)


def _calibrate(mode: Literal["sample", "client"], plan: Mapping[str, Any]) -> float:
    import dp_accounting
    from dp_accounting import rdp

    rounds = int(plan["rounds"])
    if mode == "client":

        def event(sigma: float) -> dp_accounting.DpEvent:
            return dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(sigma), rounds)

    else:
        q = float(plan["sampling_rate"])
        steps = rounds * int(plan["local_epochs"]) * math.ceil(1.0 / q)

        def event(sigma: float) -> dp_accounting.DpEvent:
            return dp_accounting.SelfComposedDpEvent(
                dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)),
                steps,
            )

    target, delta = float(plan["epsilon"]), float(plan["delta"])
    floor = rdp.RdpAccountant().compose(event(MIN_NOISE_MULTIPLIER)).get_epsilon(delta)
    if floor <= target:
        return MIN_NOISE_MULTIPLIER
    try:
        sigma = dp_accounting.calibrate_dp_mechanism(
            rdp.RdpAccountant,
            event,
            target,
            delta,
            dp_accounting.LowerEndpointAndGuess(MIN_NOISE_MULTIPLIER, 1.0),
            tol=1e-3,
        )
    except (ValueError, RuntimeError) as e:
        raise PrivacyBudgetError(
            f"dp-epsilon must be reachable with a noise multiplier <= {_MAX_NOISE_MULTIPLIER:g}; "
            f"got dp-epsilon={plan['epsilon']} at dp-delta={plan['delta']} ({e})"
        ) from e
    return float(sigma)


def plan_privacy(
    mode: Literal["sample", "client"],
    *,
    epsilon: float,
    delta: float,
    clip_norm: float,
    noise_multiplier: float,
    sampling_rate: float,
    rounds: int,
    local_epochs: int,
    min_parties: int,
) -> PrivacyPlan:
    """The run's DP plan: σ calibrated to the budget over ``rounds`` (``noise_multiplier`` 0),
    or the given σ once its ε is checked against the budget.

    Raises
    ------
    PrivacyBudgetError
        If the given noise multiplier spends more than ``epsilon`` at ``delta``.
    """
    settings = {
        "epsilon": epsilon,
        "delta": delta,
        "rounds": rounds,
        "local_epochs": local_epochs,
        "sampling_rate": sampling_rate,
    }
    sigma = noise_multiplier if noise_multiplier > 0 else _calibrate(mode, settings)
    plan = PrivacyPlan(
        mode=mode,
        epsilon_budget=epsilon,
        delta=delta,
        clip_norm=clip_norm,
        noise_multiplier=sigma,
        sampling_rate=sampling_rate if mode == "sample" else 1.0,
        rounds=rounds,
        local_epochs=local_epochs,
        min_parties=min_parties,
    )
    spent = plan.epsilon()
    if spent > epsilon:
        raise PrivacyBudgetError(
            f"dp-epsilon budget must cover the run; got a plan spending epsilon={spent:.4g} at "
            f"delta={delta:g} over {rounds} rounds ({mode} mode, noise multiplier {sigma:.4g}) "
            f"against a budget of {epsilon:g}. Raise dp-noise-multiplier, lower the rounds, or "
            "set dp-noise-multiplier=0 to calibrate it to the budget."
        )
    return plan


def party_epsilons(
    plan: PrivacyPlan, history: Iterable[Mapping[str, object]], parties: Iterable[str]
) -> dict[str, float]:
    """Each party's accountant: ε at δ over the rounds the history says it trained in.

    Client mode accounts the released sum, not a party's rows: every party gets the run's ε
    over the rounds that were aggregated.
    """
    entries = list(history)
    if plan.mode == "client":
        spent = plan.epsilon(len(entries))
        return {name: spent for name in parties}
    trained: dict[str, int] = {name: 0 for name in parties}
    for entry in entries:
        names = entry.get("train_parties", ())
        for name in names if isinstance(names, list | tuple) else ():
            trained[str(name)] = trained.get(str(name), 0) + 1
    return {name: plan.epsilon(rounds) for name, rounds in trained.items()}


def clip_update(update: FloatArray, clip_norm: float) -> FloatArray:
    """``update`` scaled down to L2 norm ``clip_norm`` if longer (unchanged otherwise)."""
    norm = float(np.linalg.norm(update))
    if norm <= clip_norm:
        return np.asarray(update, dtype=np.float64)
    return np.asarray(update, dtype=np.float64) * (clip_norm / norm)


def noisy_client_update(
    start: FloatArray, trained: FloatArray, *, plan: PrivacyPlan, rng: np.random.Generator
) -> FloatArray:
    """What a party sends in client mode: ``start + clip(trained - start) + its noise share``.

    Parameters
    ----------
    start, trained
        The round's global weights and this party's locally trained weights.
    plan
        A client-mode plan (noise share ``σC/sqrt(min_parties)`` per coordinate).
    rng
        Must be seeded from secret entropy at a party (``secrets``): noise anyone can replay
        protects nothing.
    """
    if plan.mode != "client":
        raise ConfigError(f"plan mode must be 'client' for a noisy update; got {plan.mode!r}")
    begin = np.asarray(start, dtype=np.float64)
    step = clip_update(np.asarray(trained, dtype=np.float64) - begin, plan.clip_norm)
    noise = rng.normal(0.0, plan.noise_share_std, size=step.shape)
    return np.asarray(begin + step + noise, dtype=np.float64)


def accountant_version() -> str:
    """``dp-accounting==<version>``, as recorded in the artifact."""
    try:
        return f"dp-accounting=={metadata.version('dp-accounting')}"
    except metadata.PackageNotFoundError:
        return "dp-accounting (version unknown)"
