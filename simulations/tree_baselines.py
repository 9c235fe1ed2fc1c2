"""Baselines of the ``gbdt`` kind: the same boosted trees trained centrally, and scikit-learn's.

``centralized`` is :func:`fedrisk.ml.trees.fit_central` on the pooled training rows, with bins
from the pooled statistics at the resolution the federation uses: the same model family on the
same bins, trained in one place (early-stopped on its validation split, as the federation is).
The ``reference`` (:func:`simulations.baselines.reference_scores`, one definition for every
kind) is scikit-learn's ``HistGradientBoostingClassifier`` with its default settings, on the raw
columns (categorical columns as categories): :func:`hist_gradient_boosting_scores`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from fedrisk.data.schema import DatasetSchema, FeatureKind
from fedrisk.ml.features import FeatureStats
from fedrisk.ml.trees import (
    TREE_STATS_BINS,
    Shard,
    TreeBinning,
    TreeModel,
    TreeParams,
    base_margin_of,
    fit_central,
    tree_params_of,
)
from fedrisk.release.artifact import scorer_from_artifact

__all__ = [
    "central_tree_scores",
    "compare_trees",
    "fit_central_trees",
    "hist_gradient_boosting_scores",
]


def fit_central_trees(
    train: pd.DataFrame, schema: DatasetSchema, *, params: TreeParams, name: str = "central"
) -> TreeModel:
    """The federation's boosted trees trained on one frame (bins from its own statistics)."""
    target = schema.target_column
    assert target is not None
    stats = FeatureStats.from_frame(train, schema, n_bins=TREE_STATS_BINS)
    binning = TreeBinning.from_stats(stats, max_bins=params.max_bins)
    shard = Shard.split(name, binning.transform(train), train[target].to_numpy(), params=params)
    state = fit_central([shard], binning, params, base_margin=base_margin_of(stats))
    return TreeModel(state.forest())


def central_tree_scores(
    train: pd.DataFrame, test: pd.DataFrame, schema: DatasetSchema, *, seed: int
) -> dict[str, Any]:
    """AUC, KS and Gini of the central boosted trees on ``test`` (what ``train-central``
    prints)."""
    from fedrisk.ml.metrics import auc, ks

    target = schema.target_column
    assert target is not None
    y = test[target].to_numpy()
    p = fit_central_trees(train, schema, params=TreeParams(seed=seed)).predict_proba(test)
    score = float(auc(y, p))
    return {
        "auc": score,
        "ks": float(ks(y, p)),
        "gini": 2 * score - 1,
        "n_train": len(train),
        "n_test": len(test),
    }


def _sklearn_frame(frame: pd.DataFrame, schema: DatasetSchema) -> pd.DataFrame:
    out: dict[str, Any] = {}
    for spec in schema.features:
        if spec.kind is FeatureKind.CATEGORICAL:
            out[spec.name] = pd.Categorical(frame[spec.name], categories=spec.categories)
        else:
            out[spec.name] = pd.to_numeric(frame[spec.name], errors="coerce")
    return pd.DataFrame(out)


def hist_gradient_boosting_scores(
    train: pd.DataFrame, test: pd.DataFrame, schema: DatasetSchema, *, seed: int
) -> npt.NDArray[np.float64]:
    """scikit-learn's ``HistGradientBoostingClassifier`` (defaults) scores on ``test``."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    target = schema.target_column
    assert target is not None
    model = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=seed)
    model.fit(_sklearn_frame(train, schema), train[target].to_numpy())
    return np.asarray(model.predict_proba(_sklearn_frame(test, schema))[:, 1], dtype=np.float64)


def compare_trees(spec: Any, data: Any, *, federated: Any, plaintext: Any) -> Any:
    """The :class:`~simulations.runner.Comparison` of a ``gbdt`` run: federated, centralized
    (same trees, pooled), scikit-learn's reference, and each party alone."""
    from simulations.baselines import reference_scores
    from simulations.runner import Comparison, _safe_auc, evaluate_scores

    schema = data.dataset.schema
    target = schema.target_column
    y = data.pooled_test[target].to_numpy()
    params = tree_params_of(spec)
    central = fit_central_trees(data.pooled_train, schema, params=params)
    fed_model = scorer_from_artifact(federated.artifact)
    local: list[dict[str, Any]] = []
    for party in data.parties:
        alone = fit_central_trees(party.train, schema, params=params, name=party.name)
        scores = evaluate_scores(y, alone.predict_proba(data.pooled_test))
        own_y = party.test[target].to_numpy()
        local.append(
            {
                "party": party.name,
                "n_train": len(party.train),
                "n_test": len(party.test),
                **scores,
                "own_test_local_auc": _safe_auc(own_y, alone.predict_proba(party.test)),
                "own_test_federated_auc": _safe_auc(own_y, fed_model.predict_proba(party.test)),
            }
        )
    return Comparison(
        federated=evaluate_scores(y, fed_model.predict_proba(data.pooled_test)),
        plaintext=(
            evaluate_scores(
                y, scorer_from_artifact(plaintext.artifact).predict_proba(data.pooled_test)
            )
            if plaintext is not None
            else None
        ),
        centralized=evaluate_scores(y, central.predict_proba(data.pooled_test)),
        local=local,
        reference=reference_scores(
            data.pooled_train, data.pooled_test, schema, model="gbdt", seed=spec.seed
        ),
    )
