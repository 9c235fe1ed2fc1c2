"""The baselines a federated model is measured against: a tuned central fit and a library reference.

``centralized`` is the same model family trained on the pooled training rows, early-stopped on a
validation split with its regularisation chosen on that split
(:data:`fedrisk.ml.training.WEIGHT_DECAYS`), so a federated model that beats it beats a
well-trained model rather than an under-trained one. ``reference`` is what a practitioner would
reach for instead: scikit-learn's ``LogisticRegression`` on the same preprocessed features for
LR and MLP, optbinning's ``Scorecard`` (its own binning, LR and points) for the scorecard,
scikit-learn's ``HistGradientBoostingClassifier`` (defaults) for the GBDT.
``simulate``, the studies and ``train-central`` all call these, so there is one definition.
The GBDT's central fit is the federation's own trees on the same bins
(:mod:`simulations.tree_baselines`): its regularisation is the run's, and it early-stops on its
validation split, so it takes no weight-decay grid.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from fedrisk.data.schema import DatasetSchema, FeatureKind
from fedrisk.errors import ConfigError
from fedrisk.ml.features import Preprocessor
from fedrisk.ml.kinds import ModelKind
from fedrisk.ml.metrics import auc, ks
from fedrisk.ml.pipeline import target_values
from fedrisk.ml.training import WEIGHT_DECAYS, CentralResult, default_config, train_centralized

__all__ = ["TUNING", "reference_scores", "tuned_central"]

TUNING: dict[str, dict[str, object]] = {
    "lr": {"validation_fraction": 0.2, "patience": 10, "max_epochs": 300},
    "scorecard": {"validation_fraction": 0.2, "patience": 10, "max_epochs": 300},
    "mlp": {"validation_fraction": 0.2, "patience": 8},
}
"""Early stopping of the tuned baselines. A 10 % validation split of German credit (80 rows) is
so noisy that its loss stopped an LR after 5 epochs of 3 batches (AUC 0.801 against
scikit-learn's 0.830); 20 % with a longer patience lets the regularisation, not the noise,
decide (0.821)."""


def tuned_central(
    train: pd.DataFrame,
    test: pd.DataFrame,
    schema: DatasetSchema,
    *,
    model: ModelKind,
    rng: np.random.Generator,
    hidden: tuple[int, ...] = (64, 32),
) -> CentralResult:
    """The centralized baseline: early-stopped, regularisation chosen on the validation split.

    Raises
    ------
    ConfigError
        If ``model`` is ``gbdt``, whose central fit is
        :func:`simulations.tree_baselines.fit_central_trees`.
    """
    if model == "gbdt":
        raise ConfigError(
            "model must be one of lr, mlp, scorecard for a tuned network baseline; got 'gbdt' "
            "(its central fit is simulations.tree_baselines.fit_central_trees)"
        )
    return train_centralized(
        train,
        test,
        schema,
        model_kind=model,
        config=default_config(model).model_copy(update=TUNING[model]),
        rng=rng,
        hidden=hidden,
        weight_decays=WEIGHT_DECAYS[model],
    )


def reference_scores(
    train: pd.DataFrame,
    test: pd.DataFrame,
    schema: DatasetSchema,
    *,
    model: ModelKind,
    seed: int = 0,
) -> dict[str, Any] | None:
    """AUC and KS on ``test`` of the library reference for ``model``, and its name.

    None when the reference library is not installed (optbinning is optional). ``seed`` seeds
    the references that draw random numbers (the GBDT's).
    """
    y_train = target_values(train, schema, source="train")
    y_test = target_values(test, schema, source="test")
    p: np.ndarray | None
    if model == "gbdt":
        from simulations.tree_baselines import hist_gradient_boosting_scores

        p = hist_gradient_boosting_scores(train, test, schema, seed=seed)
        name = "sklearn.HistGradientBoostingClassifier"
    elif model == "scorecard":
        p = _optbinning_scorecard(train, test, schema, y_train)
        if p is None:
            return None
        name = "optbinning.Scorecard"
    else:
        from sklearn.linear_model import LogisticRegression

        prep = Preprocessor(schema).fit(train)
        estimator = LogisticRegression(max_iter=5000).fit(prep.transform(train), y_train)
        p = estimator.predict_proba(prep.transform(test))[:, 1]
        name = "sklearn.LogisticRegression"
    return {"model": name, "auc": float(auc(y_test, p)), "ks": float(ks(y_test, p))}


def _optbinning_scorecard(
    train: pd.DataFrame, test: pd.DataFrame, schema: DatasetSchema, y_train: np.ndarray
) -> np.ndarray | None:
    try:
        from optbinning import BinningProcess, Scorecard
    except ImportError:
        return None
    from sklearn.linear_model import LogisticRegression

    names = list(schema.feature_names)
    categorical = [f.name for f in schema.features if f.kind is FeatureKind.CATEGORICAL]

    def frame(rows: pd.DataFrame) -> pd.DataFrame:
        x = rows[names].copy()
        for name in categorical:
            x[name] = x[name].astype(str)
        return x

    scorecard = Scorecard(
        binning_process=BinningProcess(names, categorical_variables=categorical),
        estimator=LogisticRegression(max_iter=5000),
        scaling_method="pdo_odds",
        scaling_method_params={"pdo": 20, "odds": 50, "scorecard_points": 600},
    )
    with warnings.catch_warnings():
        # optbinning warns about pandas and scikit-learn deprecations it has not caught up with.
        warnings.simplefilter("ignore")
        scorecard.fit(frame(train), y_train)
        return np.asarray(scorecard.predict_proba(frame(test))[:, 1], dtype=np.float64)
