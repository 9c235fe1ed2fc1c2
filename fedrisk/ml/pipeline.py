"""The one credit-risk estimator: preprocessing, a risk model and its calibration, as one object.

:class:`RiskPipeline` follows the scikit-learn contract: constructor arguments are its
parameters (:meth:`~RiskPipeline.get_params`), :meth:`~RiskPipeline.fit` returns the pipeline,
and everything learned ends in ``_``. Central baselines fit it on a frame; a party rebuilds it
each round from the federated statistics and the global weights
(:meth:`~RiskPipeline.from_fitted`) and trains it one round further
(:meth:`~RiskPipeline.partial_fit`); a released artifact turns back into one
(:func:`fedrisk.release.artifact.pipeline_from_artifact`), and the scoring service scores with it.

Scoring always runs the torch-free :class:`fedrisk.ml.inference.NumpyScorer`, so this module
imports no torch: a :class:`Trainer` (from :mod:`fedrisk.ml.training`) does the learning and is
passed in as a parameter, as scikit-learn pipelines take their final estimator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

from fedrisk.data.schema import DatasetSchema
from fedrisk.errors import ConfigError, ModelError, SchemaError
from fedrisk.ml.features import Preprocessor
from fedrisk.ml.inference import ModelSpec, NumpyScorer
from fedrisk.ml.kinds import network_kind

__all__ = [
    "FeatureEncoder",
    "ModelKind",
    "RiskPipeline",
    "TrainReport",
    "Trainer",
    "target_values",
]

FloatArray = npt.NDArray[np.float64]
ModelKind = Literal["lr", "mlp"]
Binning = Literal["none", "quantile"]


@dataclass(frozen=True)
class TrainReport:
    """What a training call did."""

    epochs: int
    train_losses: tuple[float, ...]
    n_examples: int
    pos_weight: float
    logit_offset: float
    val_losses: tuple[float, ...] = ()
    best_epoch: int | None = None


class FeatureEncoder(Protocol):
    """What a pipeline needs of its preprocessing: :class:`fedrisk.ml.features.Preprocessor`, or
    :class:`fedrisk.ml.woe.WoeEncoder` for a points scorecard."""

    schema: DatasetSchema

    @property
    def n_features_out(self) -> int:
        """Number of output columns."""
        ...

    def transform(self, frame: pd.DataFrame) -> npt.NDArray[np.float32]:
        """The model matrix of a frame."""
        ...

    def transform_records(self, records: Sequence[Mapping[str, object]]) -> npt.NDArray[np.float32]:
        """The model matrix of plain mappings."""
        ...

    def columns_of(self, feature: str) -> list[int]:
        """Output columns of one raw feature."""
        ...

    def reference_row(self) -> dict[str, float | str]:
        """The applicant reason codes are measured against."""
        ...

    def to_dict(self) -> dict[str, object]:
        """JSON-able state."""
        ...


class Trainer(Protocol):
    """Learns a model's weight vector from preprocessed rows (see :mod:`fedrisk.ml.training`)."""

    def train(
        self,
        spec: ModelSpec,
        x: npt.NDArray[np.float32],
        y: npt.NDArray[np.int64],
        *,
        weights: FloatArray | None,
    ) -> tuple[FloatArray, TrainReport]:
        """Train from ``weights`` (a fresh initialisation when None); return the new weights."""
        ...


def target_values(
    frame: pd.DataFrame, schema: DatasetSchema, *, source: str
) -> npt.NDArray[np.int64]:
    """The 0/1 target column of ``frame`` as int64.

    Raises
    ------
    SchemaError
        If the schema has no target, ``frame`` lacks it, or a value is missing or not 0/1.
    """
    target = schema.target_column
    if target is None:
        raise SchemaError(f"schema {schema.name} must have a target column to train; got None")
    if target not in frame.columns:
        raise SchemaError(f"{source} must have target column {target}; it is missing")
    values = pd.to_numeric(frame[target], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isin(values, (0.0, 1.0)).all():
        raise SchemaError(f"{source} target {target} must be 0/1 with no missing values")
    return values.astype(np.int64)


class RiskPipeline:
    """Preprocessor, risk model and calibration offset: fitted, scored and released as one.

    Parameters
    ----------
    schema
        The dataset schema (features and target).
    model_kind
        ``"lr"`` (logistic regression) or ``"mlp"``.
    hidden
        MLP hidden widths (ignored for ``"lr"``).
    binning, bin_features
        Passed to :class:`fedrisk.ml.features.Preprocessor`.
    trainer
        What learns the weights in :meth:`fit` and :meth:`partial_fit`
        (:class:`fedrisk.ml.training.EarlyStopping` for baselines,
        :class:`fedrisk.ml.training.LocalEpochs` for one federated round). Not needed to score.

    Attributes
    ----------
    preprocessor_ : FeatureEncoder
        The fitted preprocessing (a ``Preprocessor``, or a ``WoeEncoder`` for a scorecard).
    spec_ : ModelSpec
        The model architecture (its ``n_features`` is the preprocessor's output width).
    weights_ : numpy.ndarray
        The flat float64 weight vector (read-only).
    logit_offset_ : float
        Added to every logit: undoes the prior shift of class-weighted training.
    scorer_ : NumpyScorer
        The forward pass every prediction goes through.
    report_ : TrainReport or None
        How the last :meth:`fit` / :meth:`partial_fit` went; None when built from parts.
    """

    preprocessor_: FeatureEncoder
    spec_: ModelSpec
    weights_: FloatArray
    logit_offset_: float
    scorer_: NumpyScorer
    report_: TrainReport | None

    def __init__(
        self,
        schema: DatasetSchema,
        *,
        model_kind: ModelKind = "lr",
        hidden: tuple[int, ...] = (64, 32),
        binning: Binning = "none",
        bin_features: Sequence[str] | None = None,
        trainer: Trainer | None = None,
    ) -> None:
        if model_kind not in ("lr", "mlp"):
            raise ConfigError(f"model_kind must be 'lr' or 'mlp'; got {model_kind!r}")
        self.schema = schema
        self.model_kind: ModelKind = model_kind
        self.hidden = tuple(hidden)
        self.binning: Binning = binning
        self.bin_features = None if bin_features is None else tuple(bin_features)
        self.trainer = trainer

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_fitted(
        cls,
        preprocessor: FeatureEncoder,
        spec: ModelSpec,
        weights: npt.ArrayLike,
        *,
        logit_offset: float,
        trainer: Trainer | None = None,
    ) -> RiskPipeline:
        """A pipeline from parts fitted elsewhere (federated statistics, global weights, artifacts).

        Raises
        ------
        ModelError
            If the weights do not fit ``spec``, ``logit_offset`` is not finite, or
            ``spec.n_features`` differs from the preprocessor's output width.
        ConfigError
            If the preprocessor is not fitted.
        """
        if preprocessor.n_features_out != spec.n_features:
            raise ModelError(
                f"spec.n_features must equal the preprocessor's {preprocessor.n_features_out} "
                f"output columns; got {spec.n_features}"
            )
        binned = isinstance(preprocessor, Preprocessor) and preprocessor.binning == "quantile"
        pipeline = cls(
            preprocessor.schema,
            model_kind=network_kind(spec.kind),
            hidden=spec.hidden,
            binning="quantile" if binned else "none",
            bin_features=preprocessor.bin_features
            if isinstance(preprocessor, Preprocessor) and binned
            else None,
            trainer=trainer,
        )
        pipeline._set_fitted(preprocessor, spec, weights, logit_offset=logit_offset, report=None)
        return pipeline

    def _set_fitted(
        self,
        preprocessor: FeatureEncoder,
        spec: ModelSpec,
        weights: npt.ArrayLike,
        *,
        logit_offset: float,
        report: TrainReport | None,
    ) -> None:
        # The scorer checks the vector's length and finiteness and the offset's finiteness.
        scorer = NumpyScorer(spec, weights, logit_offset=logit_offset)
        vector = np.array(weights, dtype=np.float64)
        vector.flags.writeable = False
        self.preprocessor_ = preprocessor
        self.spec_ = spec
        self.weights_ = vector
        self.logit_offset_ = scorer.logit_offset
        self.scorer_ = scorer
        self.report_ = report

    # ------------------------------------------------------------------ estimator contract

    def get_params(self, deep: bool = True) -> dict[str, object]:
        """The constructor arguments (``deep`` is accepted for scikit-learn compatibility)."""
        del deep  # no parameter is itself an estimator with parameters
        return {
            "schema": self.schema,
            "model_kind": self.model_kind,
            "hidden": self.hidden,
            "binning": self.binning,
            "bin_features": self.bin_features,
            "trainer": self.trainer,
        }

    def set_params(self, **params: object) -> Self:
        """Change constructor arguments; learned state is kept until the next fit.

        Raises
        ------
        ConfigError
            If a name is not a parameter of the pipeline.
        """
        unknown = sorted(set(params) - set(self.get_params()))
        if unknown:
            raise ConfigError(
                f"params must be among {sorted(self.get_params())}; got unknown {unknown}"
            )
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def fit(self, frame: pd.DataFrame) -> Self:
        """Fit the preprocessing on ``frame``, then train a freshly initialised model on it.

        Raises
        ------
        SchemaError
            If ``frame`` lacks a feature or the target, or a target value is not 0/1.
        ConfigError
            If the pipeline has no trainer.
        """
        trainer = self._trainer()
        y = target_values(frame, self.schema, source="frame")
        preprocessor = Preprocessor(
            self.schema, binning=self.binning, bin_features=self.bin_features
        ).fit(frame)
        spec = ModelSpec(
            kind=self.model_kind, n_features=preprocessor.n_features_out, hidden=self.hidden
        )
        weights, report = trainer.train(spec, preprocessor.transform(frame), y, weights=None)
        self._set_fitted(
            preprocessor, spec, weights, logit_offset=report.logit_offset, report=report
        )
        return self

    def partial_fit(self, frame: pd.DataFrame) -> Self:
        """Train the current weights further on ``frame`` (one federated round, for example).

        The preprocessing stays as fitted: in a federated run it comes from every party's
        statistics, not from this party's rows.

        Raises
        ------
        SchemaError, ConfigError
            As :meth:`fit`; ConfigError also when the pipeline is not fitted yet.
        """
        trainer = self._trainer()
        self._check_fitted()
        y = target_values(frame, self.schema, source="frame")
        weights, report = trainer.train(
            self.spec_, self.preprocessor_.transform(frame), y, weights=self.weights_
        )
        self._set_fitted(
            self.preprocessor_, self.spec_, weights, logit_offset=report.logit_offset, report=report
        )
        return self

    def transform(self, frame: pd.DataFrame) -> npt.NDArray[np.float32]:
        """The model matrix of ``frame`` (what the model's first layer sees)."""
        self._check_fitted()
        return self.preprocessor_.transform(frame)

    def transform_records(self, records: Sequence[Mapping[str, object]]) -> npt.NDArray[np.float32]:
        """The model matrix of plain mappings (parsed JSON requests), without pandas."""
        self._check_fitted()
        return self.preprocessor_.transform_records(records)

    def decision_function(self, frame: pd.DataFrame) -> FloatArray:
        """Calibrated log-odds of default per row, shape ``(n,)``."""
        x = self.transform(frame)
        return self.scorer_.logits(x)

    def predict_proba(self, frame: pd.DataFrame) -> FloatArray:
        """Calibrated probability of default per row, shape ``(n,)`` (not scikit-learn's (n, 2))."""
        x = self.transform(frame)
        return self.scorer_.predict_proba(x)

    # ------------------------------------------------------------------ helpers

    def _trainer(self) -> Trainer:
        if self.trainer is None:
            raise ConfigError(
                "trainer must be set to fit; got None (pass fedrisk.ml.training.EarlyStopping "
                "or LocalEpochs)"
            )
        return self.trainer

    def _check_fitted(self) -> None:
        if not hasattr(self, "scorer_"):
            raise ConfigError("pipeline must be fitted before use; call fit or from_fitted")

    def __repr__(self) -> str:
        state = f", n_features={self.spec_.n_features}" if hasattr(self, "spec_") else ""
        return f"RiskPipeline(schema={self.schema.name!r}, model_kind={self.model_kind!r}{state})"
