"""The one stratified train/test split, used for parties' splits, baselines and validation sets.

For every class with ``n >= 2`` rows, ``round(test_fraction * n)`` of them, but at least 1 and
at most ``n - 1``, are drawn for the test side, so both sides hold every class that can be
split; a class with a single row stays on the train side. The draw comes from the
``np.random.Generator`` passed in: the same generator state gives the same split.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from fedrisk.errors import ConfigError, SchemaError

__all__ = ["split_frame", "stratified_split"]

IntArray = npt.NDArray[np.int64]


def stratified_split(
    labels: npt.ArrayLike, *, test_fraction: float, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Positions of the train rows and of the test rows, stratified by ``labels``.

    Parameters
    ----------
    labels
        One class label per row (any values numpy can compare; NaN is not a class).
    test_fraction
        Share of each class drawn for the test side, in (0, 1).
    rng
        Source of the draw; classes are drawn in sorted label order.

    Returns
    -------
    tuple of numpy.ndarray
        Sorted positions of the train rows and of the test rows; together they are
        ``0 .. len(labels) - 1``, each once.

    Raises
    ------
    ConfigError
        If ``test_fraction`` is not strictly between 0 and 1 or ``labels`` is not 1-D.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be between 0 and 1 (exclusive); got {test_fraction}")
    classes = np.asarray(labels)
    if classes.ndim != 1:
        raise ConfigError(f"labels must be one-dimensional; got shape {classes.shape}")
    test_parts: list[IntArray] = []
    for code in np.unique(classes):
        members = rng.permutation(np.flatnonzero(classes == code))
        n = len(members)
        n_test = min(max(round(test_fraction * n), 1), n - 1) if n >= 2 else 0
        test_parts.append(members[:n_test])
    test = np.sort(np.concatenate(test_parts)) if test_parts else np.empty(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(classes)), test, assume_unique=True)
    return train.astype(np.int64), test.astype(np.int64)


def split_frame(
    frame: pd.DataFrame, *, target: str, test_fraction: float = 0.2, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``frame`` into train and test rows stratified by column ``target`` (fresh indexes).

    Raises
    ------
    SchemaError
        If ``frame`` has no column ``target`` or the column has missing values.
    ConfigError
        If ``test_fraction`` is not strictly between 0 and 1.
    """
    if target not in frame.columns:
        raise SchemaError(f"frame must have the target column {target}; it is missing")
    labels = frame[target]
    if labels.isna().any():
        raise SchemaError(
            f"target {target} must have no missing values to stratify; got {labels.isna().sum()}"
        )
    train, test = stratified_split(labels.to_numpy(), test_fraction=test_fraction, rng=rng)
    return frame.iloc[train].reset_index(drop=True), frame.iloc[test].reset_index(drop=True)
