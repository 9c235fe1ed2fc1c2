"""Lead time of early warnings before default: how many months earlier than the default they fire.

Input is a month-by-month table per account: ``warned[i, t]`` says whether the B-card warning
fired for account ``i`` at the end of month ``t``, and ``default_month[i]`` is the month the
account defaulted in (``-1``: never, within the window). :func:`warning_lead_times` counts, for
each defaulter, the months between its *first* warning strictly before the default month and
that month; :func:`summarise_lead_times` turns that into the reported figures.

Only months before the default count: a warning in the default month itself is no warning
ahead of it. A defaulter whose default month is the first observed month (0) could not have
been warned within the window; it is counted apart (``not_warnable``) and left out of the
denominators, so the figures are not diluted by accounts the data cannot speak about.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedrisk.errors import DecisionError

__all__ = ["LeadTimeSummary", "summarise_lead_times", "warning_lead_times"]

NEVER = -1
"""``default_month`` value of an account that did not default in the window."""


def _check_inputs(
    warned: npt.ArrayLike, default_month: npt.ArrayLike
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    flags = np.asarray(warned)
    months = np.asarray(default_month)
    if flags.ndim != 2:
        raise DecisionError(
            f"warned must be a 2-D table (accounts x months); got shape {flags.shape}"
        )
    if flags.dtype != np.bool_:
        raise DecisionError(f"warned must hold booleans; got dtype {flags.dtype}")
    if months.shape != (flags.shape[0],) or not np.issubdtype(months.dtype, np.integer):
        raise DecisionError(
            f"default_month must be integers, one per account ({flags.shape[0]}); "
            f"got shape {months.shape} dtype {months.dtype}"
        )
    bad = (months < NEVER) | (months > flags.shape[1])
    if bad.any():
        raise DecisionError(
            f"default_month must be -1 (never) or a month in 0..{flags.shape[1]}; "
            f"got {months[bad][:5].tolist()}"
        )
    return flags, months.astype(np.int64)


def warning_lead_times(
    warned: npt.ArrayLike, default_month: npt.ArrayLike
) -> npt.NDArray[np.int64]:
    """Months from the first warning before default to the default, per account.

    Parameters
    ----------
    warned
        Boolean table, accounts x months (oldest month first).
    default_month
        Per account, the month index of default; ``-1`` for no default. It may equal the
        number of months (default in the month right after the observed window).

    Returns
    -------
    numpy.ndarray
        int64 per account: the lead in months (>= 1) for a defaulter warned before default;
        ``0`` for a defaulter not warned before default; ``-1`` for a non-defaulter.

    Raises
    ------
    DecisionError
        If the shapes or values do not fit.
    """
    flags, months = _check_inputs(warned, default_month)
    n_months = flags.shape[1]
    before = np.arange(n_months)[None, :] < months[:, None]
    ahead = flags & before
    any_ahead = ahead.any(axis=1)
    first = np.argmax(ahead, axis=1)
    lead = np.where(any_ahead, months - first, 0)
    return np.where(months == NEVER, NEVER, lead).astype(np.int64)


@dataclass(frozen=True)
class LeadTimeSummary:
    """The reported figures (shares in [0, 1]; NaN when there is nothing to divide by)."""

    defaulters: int
    not_warnable: int
    warned_before_default: float
    lead_mean: float
    lead_median: float
    lead_at_least_2: float
    lead_at_least_3: float
    lead_histogram: dict[int, int]
    non_defaulters: int
    false_warning_rate: float
    false_warning_month_rate: float

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (histogram keys as strings)."""
        out: dict[str, object] = dict(self.__dict__)
        out["lead_histogram"] = {str(k): v for k, v in self.lead_histogram.items()}
        return out


def _share(count: int, total: int) -> float:
    return count / total if total else float("nan")


def summarise_lead_times(warned: npt.ArrayLike, default_month: npt.ArrayLike) -> LeadTimeSummary:
    """Share of defaulters warned ahead, the lead distribution and the false-warning rate.

    ``lead_mean``, ``lead_median`` and ``lead_at_least_*`` are over the defaulters warned
    ahead; ``lead_at_least_*`` are shares of them. ``false_warning_rate`` is the share of
    non-defaulters warned in any observed month; ``false_warning_month_rate`` the share of their
    account-months with a warning (what a monthly review sees).
    """
    flags, months = _check_inputs(warned, default_month)
    lead = warning_lead_times(flags, months)
    warnable = months > 0
    defaulters = int((months != NEVER).sum())
    warned_leads = lead[warnable & (lead > 0)]
    n_warnable = int(warnable.sum())
    n_ahead = len(warned_leads)
    values, counts = np.unique(warned_leads, return_counts=True)
    non_defaulters = months == NEVER
    return LeadTimeSummary(
        defaulters=defaulters,
        not_warnable=defaulters - n_warnable,
        warned_before_default=_share(n_ahead, n_warnable),
        lead_mean=float(warned_leads.mean()) if n_ahead else float("nan"),
        lead_median=float(np.median(warned_leads)) if n_ahead else float("nan"),
        lead_at_least_2=_share(int((warned_leads >= 2).sum()), n_ahead),
        lead_at_least_3=_share(int((warned_leads >= 3).sum()), n_ahead),
        lead_histogram={int(v): int(c) for v, c in zip(values, counts, strict=True)},
        non_defaulters=int(non_defaulters.sum()),
        false_warning_rate=_share(
            int(flags[non_defaulters].any(axis=1).sum()), int(non_defaulters.sum())
        ),
        false_warning_month_rate=_share(
            int(flags[non_defaulters].sum()), int(flags[non_defaulters].size)
        ),
    )
