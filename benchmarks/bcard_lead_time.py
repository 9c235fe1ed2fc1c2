"""How many months before default the B-card early warning fires, on the UCI Taiwan card data.

Run from the repository root (data from ``FEDRISK_DATA_DIR``, default ``../shared/data``)::

    .venv/bin/python benchmarks/bcard_lead_time.py --json lead_time.json
    .venv/bin/python benchmarks/bcard_lead_time.py --seed 1 --test-share 0.5
    .venv/bin/python benchmarks/bcard_lead_time.py --cut-rate 0.1   # cut the riskiest 10 %

Method
------
- **Split.** The 30 000 accounts are split at random (``--seed``) into a training part and the
  evaluated part (``--test-share``); no evaluated account is seen in training.
- **B-card model.** A logistic regression :class:`~fedrisk.ml.pipeline.RiskPipeline` fitted by
  :func:`~fedrisk.ml.training.train_centralized` on the training accounts' behaviour frame
  (``taiwan``: six months of ``PAY_*``, ``BILL_AMT*``, ``PAY_AMT*``; target default next month).
  PDs become scorecard points with the default :class:`~fedrisk.decisions.scorecard.
  ScorecardScaling`, as a released artifact without its own scaling does.
- **Month by month, only what is known then.** For each evaluated account and each month
  ``t`` (April ... September 2005), the model scores a view of the account as of the end of
  ``t``: the latest month's columns (``PAY_0``, ``BILL_AMT1``, ``PAY_AMT1``) hold month ``t``,
  the next ones ``t - 1`` and so on. Months before April 2005 are unknown: by default
  (``--padding carry-back``) April's values are repeated there, so an early month's view looks
  like a steady account; ``--padding no-consumption`` fills status -2, bill 0, payment 0.
- **Warning.** :func:`fedrisk.decisions.lifecycle.decide_behaviour` with the packaged policy's
  behaviour stage (the code and cut-offs the scoring service uses) runs on that score, the
  account's limit and the signals the data holds: ``days_past_due`` = 30 x status when the
  status is >= 1, ``payment_delays`` = months with status >= 1 so far (the data has no other
  lenders or fund flows). The warning *fires* in month ``t`` when the decision lists an early
  warning or cuts or freezes the limit (score below the cut cut-off included). Reported also
  split into the score part (risk band "cut") and the signal part (listed warnings).
- **Default.** ``60dpd``: the first month whose status is >= 2 (two or more months late); an
  account never there but labelled ``default.payment.next.month`` = 1 defaults in October
  (month 6, right after the window). ``label``: the dataset's label only, default in October;
  accounts already delinquent earlier then count as warned by their delinquency.
- **Counted** by :func:`fedrisk.decisions.warning_lead.summarise_lead_times`: lead = default
  month - first month the warning fired before it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from fedrisk.data.datasets import (
    BILL_BY_MONTH,
    COLLECTION_MONTHS,
    PAID_BY_MONTH,
    STATUS_BY_MONTH,
    load_dataset,
)
from fedrisk.decisions.lifecycle import (
    BehaviourAction,
    BehaviourPolicy,
    BehaviourSignals,
    decide_behaviour,
    load_policy,
)
from fedrisk.decisions.scorecard import ScorecardScaling
from fedrisk.decisions.warning_lead import LeadTimeSummary, summarise_lead_times
from fedrisk.ml.training import train_centralized

# Calendar order, April (0) ... September 2005 (5); the source numbers them backwards.
N_MONTHS = len(STATUS_BY_MONTH)
TARGET = "default.payment.next.month"


PADDINGS = ("carry-back", "no-consumption")


def as_of(frame: pd.DataFrame, month: int, padding: str) -> pd.DataFrame:
    """The accounts as seen at the end of ``month``: months after it dropped, history shifted.

    Months before April 2005 are unknown: ``carry-back`` repeats April's values there,
    ``no-consumption`` fills status -2, bill 0 and payment 0.
    """
    view = frame.copy()
    for columns, unknown in ((STATUS_BY_MONTH, -2.0), (BILL_BY_MONTH, 0.0), (PAID_BY_MONTH, 0.0)):
        values = frame[list(columns)].to_numpy(dtype=np.float64)
        for slot, column in enumerate(columns):
            # slot 5 is the latest month; it takes ``month``, slot 4 takes ``month - 1``, ...
            source = month - (N_MONTHS - 1 - slot)
            if source >= 0:
                view[column] = values[:, source]
            else:
                view[column] = values[:, 0] if padding == "carry-back" else unknown
    return view


def default_months(frame: pd.DataFrame, definition: str) -> npt.NDArray[np.int64]:
    """Month of default per account (-1 never) under ``definition`` (``60dpd`` or ``label``)."""
    label = frame[TARGET].to_numpy(dtype=np.int64) == 1
    october = np.where(label, N_MONTHS, -1)
    if definition == "label":
        return october.astype(np.int64)
    late = frame[list(STATUS_BY_MONTH)].to_numpy(dtype=np.float64) >= 2.0
    return np.where(late.any(axis=1), np.argmax(late, axis=1), october).astype(np.int64)


def warning_tables(
    frame: pd.DataFrame, pd_by_month: npt.NDArray[np.float64], policy: BehaviourPolicy
) -> dict[str, npt.NDArray[np.bool_]]:
    """Per account and month: any warning, its score part and its signal part."""
    scores = ScorecardScaling().score(pd_by_month)
    status = frame[list(STATUS_BY_MONTH)].to_numpy(dtype=np.float64)
    limits = frame["LIMIT_BAL"].to_numpy(dtype=np.float64)
    shape = pd_by_month.shape
    tables = {k: np.zeros(shape, dtype=bool) for k in ("any", "score", "signals")}
    for i in range(shape[0]):
        for t in range(shape[1]):
            late = status[i, : t + 1] >= 1.0
            signals = BehaviourSignals(
                days_past_due=int(30 * status[i, t]) if late[-1] else 0,
                payment_delays=int(late.sum()),
            )
            decision = decide_behaviour(
                float(pd_by_month[i, t]),
                float(scores[i, t]),
                current_limit=float(limits[i]),
                signals=signals,
                policy=policy,
            )
            tables["signals"][i, t] = bool(decision.warnings)
            tables["score"][i, t] = (
                int(policy.risk_band_codes(pd_by_month[i, t], scores[i, t])) == 2
            )
            tables["any"][i, t] = bool(decision.warnings) or decision.action in (
                BehaviourAction.CUT,
                BehaviourAction.FREEZE,
            )
    return tables


def _fmt(value: float) -> str:
    return "  n/a" if math.isnan(value) else f"{value:5.3f}"


def _print_summary(title: str, s: LeadTimeSummary) -> None:
    print(
        f"  {title:<16} warned ahead {_fmt(s.warned_before_default)}  lead mean "
        f"{_fmt(s.lead_mean)}  median {_fmt(s.lead_median)}  >=2 {_fmt(s.lead_at_least_2)}  "
        f">=3 {_fmt(s.lead_at_least_3)}  false-warning {_fmt(s.false_warning_rate)} "
        f"(per month {_fmt(s.false_warning_month_rate)})  "
        f"(defaulters {s.defaulters}, not warnable {s.not_warnable}, "
        f"non-defaulters {s.non_defaulters})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="split and training seed")
    parser.add_argument("--test-share", type=float, default=0.3, help="share of accounts evaluated")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--padding",
        choices=PADDINGS,
        default="carry-back",
        help="how the months before April 2005 are filled in the early months' views",
    )
    parser.add_argument(
        "--cut-rate",
        type=float,
        help="instead of the policy's cut_cutoff, cut the scores of this share of the training "
        "accounts (September view), e.g. 0.1",
    )
    parser.add_argument(
        "--policy", type=Path, help="lifecycle policy file (default: the packaged policy)"
    )
    args = parser.parse_args()
    if not 0.0 < args.test_share < 1.0:
        parser.error(f"--test-share must be in (0, 1); got {args.test_share}")
    if args.cut_rate is not None and not 0.0 < args.cut_rate < 1.0:
        parser.error(f"--cut-rate must be in (0, 1); got {args.cut_rate}")

    rng = np.random.default_rng(args.seed)
    data = load_dataset("taiwan")
    frame = data.frame.reset_index(drop=True)
    order = rng.permutation(len(frame))
    n_test = round(len(frame) * args.test_share)
    test, train = frame.iloc[order[:n_test]], frame.iloc[order[n_test:]]
    test = test.reset_index(drop=True)

    started = time.perf_counter()
    fitted = train_centralized(train, test, data.schema, model_kind="lr", rng=rng)
    pd_by_month = np.column_stack(
        [fitted.pipeline.predict_proba(as_of(test, t, args.padding)) for t in range(N_MONTHS)]
    )
    policy = load_policy(args.policy).behaviour
    if args.cut_rate is not None:
        train_scores = ScorecardScaling().score(fitted.pipeline.predict_proba(train))
        cut = float(np.quantile(train_scores, args.cut_rate))
        # validated again, so a cut-off above raise_cutoff is refused, not silently used
        policy = BehaviourPolicy.model_validate(
            {
                **policy.model_dump(),
                "cut_cutoff": cut,
                "raise_cutoff": max(policy.raise_cutoff, cut + 1),
            }
        )
    tables = warning_tables(test, pd_by_month, policy)
    elapsed = time.perf_counter() - started

    results: dict[str, dict[str, object]] = {}
    print(
        f"B-card warning lead time, Taiwan: {len(train)} training / {len(test)} evaluated "
        f"accounts, model AUC {fitted.auc:.3f} on the evaluated accounts (September view), "
        f"{elapsed:.1f} s"
    )
    print(
        f"behaviour policy: basis {policy.basis}, raise_cutoff {policy.raise_cutoff}, "
        f"cut_cutoff {policy.cut_cutoff}; PD at the cut cut-off "
        f"{float(ScorecardScaling().pd_from_score(policy.cut_cutoff)):.3f}"
    )
    median_pd = np.median(pd_by_month, axis=0)
    print("median PD by month (Apr..Sep): " + " ".join(f"{p:.3f}" for p in median_pd))
    for definition in ("60dpd", "label"):
        months = default_months(test, definition)
        print(f"default = {definition}")
        for part, warned in tables.items():
            summary = summarise_lead_times(warned, months)
            _print_summary(f"warning {part}", summary)
            results[f"{definition}/{part}"] = summary.to_dict()
    if args.json is not None:
        payload = {
            "seed": args.seed,
            "test_share": args.test_share,
            "n_train": len(train),
            "n_test": len(test),
            "model_auc_september": fitted.auc,
            "policy": str(args.policy) if args.policy else "packaged",
            "cut_rate": args.cut_rate,
            "padding": args.padding,
            "cut_cutoff": policy.cut_cutoff,
            "median_pd_by_month": median_pd.tolist(),
            "months": list(COLLECTION_MONTHS),
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=float) + "\n", "utf-8")


if __name__ == "__main__":
    main()
