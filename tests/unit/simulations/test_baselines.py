"""Tuned central baselines choose their regularisation on the validation split; references score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedrisk.data.datasets import Dataset, load_dataset
from fedrisk.ml.training import TrainConfig, train_centralized
from simulations.baselines import reference_scores


@pytest.fixture(scope="module")
def data() -> tuple[Dataset, pd.DataFrame, pd.DataFrame]:
    dataset = load_dataset("synthetic", rng=np.random.default_rng(2), n_rows=1500)
    return dataset, dataset.frame.iloc[:1200], dataset.frame.iloc[1200:]


def test_the_fit_with_the_lowest_validation_loss_is_kept(
    data: tuple[Dataset, pd.DataFrame, pd.DataFrame],
) -> None:
    # arrange
    dataset, train, test = data
    config = TrainConfig.for_model("lr", max_epochs=4, patience=2)

    def fit(decays: tuple[float, ...]) -> tuple[float, float]:
        result = train_centralized(
            train,
            test,
            dataset.schema,
            model_kind="lr",
            config=config,
            rng=np.random.default_rng(9),
            weight_decays=decays,
        )
        assert result.pipeline.report_ is not None
        return min(result.pipeline.report_.val_losses), result.auc

    # act
    alone = {decay: fit((decay,)) for decay in (0.0, 0.3)}
    tuned = fit((0.0, 0.3))

    # assert: each candidate saw the same split and start, so the tuned fit is the better one
    assert alone[0.0] != alone[0.3]
    assert tuned == min(alone.values())


def test_references_name_their_library_and_score_the_test_rows(
    data: tuple[Dataset, pd.DataFrame, pd.DataFrame],
) -> None:
    # arrange
    dataset, train, test = data

    # act
    lr = reference_scores(train, test, dataset.schema, model="lr")
    scorecard = reference_scores(train, test, dataset.schema, model="scorecard")

    # assert
    assert lr is not None and lr["model"] == "sklearn.LogisticRegression"
    assert 0.6 < lr["auc"] < 1.0
    pytest.importorskip("optbinning")
    assert scorecard is not None and scorecard["model"] == "optbinning.Scorecard"
    assert 0.6 < scorecard["auc"] < 1.0
