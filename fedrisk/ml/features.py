"""Feature preprocessing fitted only from additive statistics, so parties can fit it federatedly.

Every learned quantity (means, standard deviations, quantile cut points, modal categories) is a
function of a :class:`FeatureStats`, which is a flat vector of counts, sums, sums of squares,
fixed-range histograms and category counts. Each party computes its own vector; the vectors are
summed (under CKKS encryption in a federated run); the sum is exactly the statistics of the
union of the parties' rows, and :meth:`Preprocessor.fit_stats` turns it into a preprocessor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

from fedrisk.data.schema import DatasetSchema, FeatureKind, FeatureSpec
from fedrisk.errors import ConfigError, SchemaError

__all__ = [
    "UNKNOWN_CATEGORY",
    "FeatureStats",
    "Preprocessor",
    # the binning primitives the WOE encoder (woe.py) and the trees (trees.py) share
    "category_codes",
    "forward_transform",
    "histogram_index",
    "histogram_range",
    "quantile_cuts",
    "record_floats",
    "require_columns",
    "series_codes",
    "series_floats",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Output column suffix for a categorical value outside the schema's list, or a missing one.
UNKNOWN_CATEGORY = "__unknown__"

_PREPROCESSOR_FORMAT = "fedrisk.preprocessor/1"
# Category codes used internally: known categories are 0..k-1.
_CODE_UNKNOWN = -1
_CODE_MISSING = -2
# A decrypted CKKS count may come back as -1e-9 instead of 0; anything below this is corrupt.
_COUNT_TOLERANCE = -0.5


def forward_transform(spec: FeatureSpec, x: FloatArray) -> FloatArray:
    """Clip to the schema bounds, then apply the feature's transform (NaN stays NaN)."""
    lo = -np.inf if spec.min is None else spec.min
    hi = np.inf if spec.max is None else spec.max
    out = np.clip(x, lo, hi)
    if spec.transform == "log1p":
        np.log1p(out, out=out)
    return out


def _forward_scalar(spec: FeatureSpec, value: float | None) -> float:
    if value is None:
        return math.nan
    return float(forward_transform(spec, np.array([value], dtype=np.float64))[0])


def histogram_range(spec: FeatureSpec) -> tuple[float, float] | None:
    """The fixed histogram range (transformed space) of a bounded numeric feature, else None."""
    if spec.kind is not FeatureKind.NUMERIC or spec.min is None or spec.max is None:
        return None
    return _forward_scalar(spec, spec.min), _forward_scalar(spec, spec.max)


def _center(spec: FeatureSpec) -> float:
    """Shift subtracted before summing: keeps sums of squares small (less cancellation)."""
    lo = None if spec.min is None else _forward_scalar(spec, spec.min)
    hi = None if spec.max is None else _forward_scalar(spec, spec.max)
    if lo is not None and hi is not None:
        return 0.5 * (lo + hi)
    return lo if lo is not None else (hi if hi is not None else 0.0)


def _scale(spec: FeatureSpec) -> float:
    """Divisor applied after centring: half the transformed range, 1 for unbounded features.

    Notes
    -----
    These sums travel through CKKS, whose encoder works in float64: a slot holding ~1e16 (the
    sum of squares of raw money amounts over 24k rows) leaves errors of several units in every
    other slot of the same ciphertext, counts included. Scaled to [-1, 1] first, every sum stays
    below the row count and the decrypted statistics keep ~1e-8 absolute precision.
    """
    bounds = histogram_range(spec)
    if bounds is None or bounds[1] <= bounds[0]:
        return 1.0
    return 0.5 * (bounds[1] - bounds[0])


def histogram_index(t: FloatArray, lo: float, hi: float, n_bins: int) -> IntArray:
    """Bin index in ``[0, n_bins)`` of transformed values (bins closed on the left)."""
    if hi <= lo:
        return np.zeros(t.shape[0], dtype=np.int64)
    idx = np.floor((t - lo) * (n_bins / (hi - lo)))
    np.clip(idx, 0, n_bins - 1, out=idx)
    return idx.astype(np.int64)


def _format_category(value: object) -> str | None:
    """The string form of a categorical value, or None when missing."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        # Integer codes read as floats (1.0) must match the schema's "1".
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def category_codes(values: Iterable[object], categories: tuple[str, ...]) -> IntArray:
    lookup = {c: i for i, c in enumerate(categories)}
    out: list[int] = []
    for v in values:
        text = _format_category(v)
        out.append(_CODE_MISSING if text is None else lookup.get(text, _CODE_UNKNOWN))
    return np.asarray(out, dtype=np.int64).reshape(-1)


def series_codes(series: pd.Series[Any], categories: tuple[str, ...]) -> IntArray:
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        # pd.Categorical hashes instead of looping in Python; it codes unknown and NaN as -1.
        missing = series.isna().to_numpy()
        codes = pd.Categorical(series.to_numpy(dtype=object), categories=list(categories)).codes
        out = codes.astype(np.int64)
        out[missing] = _CODE_MISSING
        return out
    return category_codes(series.tolist(), categories)


def series_floats(series: pd.Series[Any], name: str) -> FloatArray:
    try:
        return pd.to_numeric(series, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as e:
        raise SchemaError(
            f"column {name} must be numeric; {e}", problems=[f"{name}: not numeric ({e})"]
        ) from e


def record_floats(values: Sequence[object], name: str) -> FloatArray:
    """Numeric values of one feature from plain records (parsed JSON); None is missing.

    Raises
    ------
    SchemaError
        If a value is not a number (booleans included).
    """
    column = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        if v is None:
            column[i] = math.nan
        elif isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool):
            column[i] = float(v)
        else:
            raise SchemaError(
                f"feature {name} must be a number or null; got {type(v).__name__} in record {i}",
                problems=[f"{name}: record {i} is {type(v).__name__}"],
            )
    return column


def require_columns(frame: pd.DataFrame, schema: DatasetSchema) -> None:
    missing = [name for name in schema.feature_names if name not in frame.columns]
    if missing:
        raise SchemaError(
            f"frame must have every feature column of schema {schema.name}; missing {missing}",
            problems=[f"{name}: column missing" for name in missing],
        )


@dataclass(frozen=True)
class _Slot:
    """Where one feature's statistics sit in the flat statistics vector."""

    start: int
    size: int


def _layout(
    schema: DatasetSchema, n_bins: int
) -> tuple[dict[str, _Slot], int, npt.NDArray[np.bool_]]:
    # Head: n_rows, n_labelled, n_positive. Then, per feature in schema order:
    #   numeric:     count, sum((t - c) / s), sum(((t - c) / s)^2), histogram[n_bins] (bounded only)
    #   categorical: count per known category, unknown count, missing count
    slots: dict[str, _Slot] = {}
    is_count: list[bool] = [True, True, True]
    pos = 3
    for spec in schema.features:
        if spec.kind is FeatureKind.NUMERIC:
            n_hist = n_bins if histogram_range(spec) is not None else 0
            flags = [True, False, False] + [True] * n_hist
        else:
            assert spec.categories is not None  # guaranteed by FeatureSpec validation
            flags = [True] * (len(spec.categories) + 2)
        slots[spec.name] = _Slot(pos, len(flags))
        is_count.extend(flags)
        pos += len(flags)
    return slots, pos, np.asarray(is_count, dtype=bool)


def _check_n_bins(n_bins: int) -> None:
    if not 2 <= n_bins <= 100_000:
        raise ConfigError(f"n_bins must be in [2, 100000]; got {n_bins}")


class FeatureStats:
    """Additive per-feature statistics of a party's rows, stored as one flat float64 vector.

    Numeric features keep the non-null count, the sum and the sum of squares of the
    transformed value minus a fixed centre, divided by a fixed scale (the middle and half-width
    of the transformed schema range; 0 and 1 if unbounded), and, when the schema bounds them,
    a histogram of ``n_bins`` equal bins over the transformed ``[min, max]`` (values outside
    are clipped to the bounds). Categorical
    features keep a count per known category plus unknown and missing counts. The head holds
    the row count and, when the frame has the target, the labelled and positive counts.

    Use :meth:`from_frame` to compute, :meth:`merge` to add, and :meth:`to_vector` /
    :meth:`from_vector` to move them through encryption: the elementwise sum of parties'
    vectors is the vector of their merged statistics.
    """

    def __init__(self, schema: DatasetSchema, vector: npt.ArrayLike, *, n_bins: int = 64) -> None:
        _check_n_bins(n_bins)
        slots, length, is_count = _layout(schema, n_bins)
        vec = np.array(vector, dtype=np.float64)
        if vec.ndim != 1 or vec.shape[0] != length:
            raise SchemaError(
                f"vector must have {length} values for schema {schema.name} with n_bins={n_bins}; "
                f"got shape {vec.shape}"
            )
        if not np.isfinite(vec).all():
            raise SchemaError("vector must be finite; got NaN/inf statistics")
        if vec.size and vec[is_count].min(initial=0.0) < _COUNT_TOLERANCE:
            raise SchemaError(f"vector counts must be non-negative; got {vec[is_count].min():.6g}")
        # Counts are integers by definition. Decrypted CKKS sums carry ~1e-8 noise, and a
        # "never seen" category counted as 1e-9 instead of 0 would give a constant column a
        # non-zero mean, which Adam then amplifies into lr-sized steps: round it away.
        vec[is_count] = np.rint(vec[is_count])
        vec.flags.writeable = False
        self.schema = schema
        self.n_bins = n_bins
        self._vector = vec
        self._slots = slots

    @staticmethod
    def vector_length(schema: DatasetSchema, *, n_bins: int = 64) -> int:
        """Length of the statistics vector for ``schema`` (needed to decrypt it)."""
        _check_n_bins(n_bins)
        return _layout(schema, n_bins)[1]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, schema: DatasetSchema, *, n_bins: int = 64) -> Self:
        """Compute the statistics of ``frame``'s rows.

        Raises
        ------
        SchemaError
            If a feature column is missing, a numeric column is not numeric, or the target
            column (when present) is not 0/1.
        """
        _check_n_bins(n_bins)
        require_columns(frame, schema)
        slots, length, _ = _layout(schema, n_bins)
        vec = np.zeros(length, dtype=np.float64)
        vec[0] = len(frame)
        target = schema.target_column
        if target is not None and target in frame.columns:
            labels = series_floats(frame[target], target)
            labelled = labels[~np.isnan(labels)]
            if not np.isin(labelled, (0.0, 1.0)).all():
                bad = np.unique(labelled[~np.isin(labelled, (0.0, 1.0))])[:5].tolist()
                raise SchemaError(
                    f"target {target} must be 0/1; got values {bad}",
                    problems=[f"{target}: values {bad} are not 0/1"],
                )
            vec[1] = labelled.shape[0]
            vec[2] = labelled.sum()
        for spec in schema.features:
            slot = slots[spec.name]
            if spec.kind is FeatureKind.NUMERIC:
                t = forward_transform(spec, series_floats(frame[spec.name], spec.name))
                present = t[~np.isnan(t)]
                centred = (present - _center(spec)) / _scale(spec)
                vec[slot.start] = present.shape[0]
                vec[slot.start + 1] = centred.sum()
                vec[slot.start + 2] = np.dot(centred, centred)
                hist_range = histogram_range(spec)
                if hist_range is not None:
                    idx = histogram_index(present, *hist_range, n_bins)
                    vec[slot.start + 3 : slot.start + slot.size] = np.bincount(
                        idx, minlength=n_bins
                    )
            else:
                assert spec.categories is not None
                codes = series_codes(frame[spec.name], spec.categories)
                k = len(spec.categories)
                # Shift so that missing (-2) -> k + 1 and unknown (-1) -> k.
                shifted = np.where(codes == _CODE_MISSING, k + 1, np.where(codes < 0, k, codes))
                vec[slot.start : slot.start + slot.size] = np.bincount(shifted, minlength=k + 2)
        return cls(schema, vec, n_bins=n_bins)

    @classmethod
    def from_vector(cls, vector: npt.ArrayLike, schema: DatasetSchema, *, n_bins: int = 64) -> Self:
        """Rebuild statistics from a (possibly summed and decrypted) vector.

        Raises
        ------
        SchemaError
            If the length does not fit ``schema`` and ``n_bins``, a value is not finite or a
            count is negative.
        """
        return cls(schema, vector, n_bins=n_bins)

    def to_vector(self) -> FloatArray:
        """The statistics as a flat float64 vector (a copy)."""
        return self._vector.copy()

    def merge(self, other: FeatureStats) -> FeatureStats:
        """Statistics of the union of both parties' rows.

        Raises
        ------
        SchemaError
            If the two were computed for different schemas or histogram resolutions.
        """
        if self.schema.fingerprint() != other.schema.fingerprint():
            raise SchemaError(
                f"stats must share a schema to merge; got {self.schema.name} and "
                f"{other.schema.name} with different fingerprints"
            )
        if self.n_bins != other.n_bins:
            raise SchemaError(f"n_bins must match to merge; got {self.n_bins} and {other.n_bins}")
        return FeatureStats(self.schema, self._vector + other._vector, n_bins=self.n_bins)

    @property
    def n_rows(self) -> float:
        """Number of rows summarised."""
        return float(self._vector[0])

    @property
    def n_labelled(self) -> float:
        """Number of rows with a target value (0 for parties without the label)."""
        return float(self._vector[1])

    @property
    def n_positive(self) -> float:
        """Number of rows with target 1 (bad)."""
        return float(self._vector[2])

    @property
    def positive_rate(self) -> float | None:
        """Share of labelled rows that are bad, or None when nothing is labelled."""
        return self.n_positive / self.n_labelled if self.n_labelled >= 0.5 else None

    def _numeric_slot(self, name: str) -> tuple[FeatureSpec, _Slot]:
        spec = self.schema.feature(name)
        if spec.kind is not FeatureKind.NUMERIC:
            raise SchemaError(f"feature {name} must be numeric for this statistic; got categorical")
        return spec, self._slots[name]

    def count(self, name: str) -> float:
        """Non-null values of numeric feature ``name``."""
        _, slot = self._numeric_slot(name)
        return float(max(self._vector[slot.start], 0.0))

    def mean(self, name: str) -> float | None:
        """Mean of the transformed values of numeric ``name``; None when it has no values."""
        spec, slot = self._numeric_slot(name)
        n = self._vector[slot.start]
        if n < 0.5:
            return None
        return float(_center(spec) + _scale(spec) * self._vector[slot.start + 1] / n)

    def variance(self, name: str) -> float | None:
        """Population variance of the transformed values of ``name``; None when it has none."""
        spec, slot = self._numeric_slot(name)
        n = self._vector[slot.start]
        if n < 0.5:
            return None
        m = self._vector[slot.start + 1] / n
        return float(_scale(spec) ** 2 * max(self._vector[slot.start + 2] / n - m * m, 0.0))

    def histogram(self, name: str) -> FloatArray | None:
        """Histogram counts of ``name`` over its transformed range; None if it is unbounded."""
        spec, slot = self._numeric_slot(name)
        if histogram_range(spec) is None:
            return None
        return np.maximum(self._vector[slot.start + 3 : slot.start + slot.size], 0.0)

    def category_counts(self, name: str) -> dict[str, float]:
        """Counts per known category of ``name``, then ``__unknown__`` and ``__missing__``."""
        spec = self.schema.feature(name)
        if spec.kind is not FeatureKind.CATEGORICAL or spec.categories is None:
            raise SchemaError(
                f"feature {name} must be categorical for category counts; got numeric"
            )
        slot = self._slots[name]
        values = np.maximum(self._vector[slot.start : slot.start + slot.size], 0.0)
        keys = [*spec.categories, UNKNOWN_CATEGORY, "__missing__"]
        return {k: float(v) for k, v in zip(keys, values, strict=True)}


@dataclass(frozen=True)
class _NumericPlan:
    spec: FeatureSpec
    mean: float
    scale: float
    # Quantile binning (None when the feature is standardised instead).
    hist_range: tuple[float, float] | None
    hist_bins: int
    cuts: tuple[int, ...] | None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.spec.name, "mean": self.mean, "scale": self.scale}
        if self.cuts is not None:
            assert self.hist_range is not None
            out["hist_range"] = [self.hist_range[0], self.hist_range[1]]
            out["hist_bins"] = self.hist_bins
            out["cuts"] = list(self.cuts)
        return out

    @property
    def width(self) -> int:
        return 1 if self.cuts is None else len(self.cuts) + 1


@dataclass(frozen=True)
class _CategoricalPlan:
    spec: FeatureSpec
    categories: tuple[str, ...]
    modal: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.spec.name, "modal": self.modal}

    @property
    def width(self) -> int:
        return len(self.categories) + 1


_Plan = _NumericPlan | _CategoricalPlan


def quantile_cuts(hist: FloatArray, n_quantiles: int) -> tuple[int, ...]:
    """Histogram-bin boundaries closest above each quantile, deduplicated.

    A cut ``c`` puts histogram bins ``< c`` in the lower quantile bin. Cutting only on bin
    boundaries keeps the binning exact for the discrete values credit data is full of.
    """
    total = float(hist.sum())
    if total <= 0.0:
        return ()
    cumulative = np.cumsum(hist)
    n_bins = hist.shape[0]
    cuts: list[int] = []
    for j in range(1, n_quantiles):
        # Tolerance: decrypted counts are only approximately integral.
        target = total * j / n_quantiles - 1e-6 * total
        cut = int(np.searchsorted(cumulative, target, side="left")) + 1
        has_mass_above = total - cumulative[cut - 1] > 0.5
        if 0 < cut < n_bins and (not cuts or cut > cuts[-1]) and has_mass_above:
            cuts.append(cut)
    return tuple(cuts)


class Preprocessor:
    """Turns raw schema features into a float32 model matrix; fitted from :class:`FeatureStats`.

    Steps per numeric feature: clip to the schema bounds, ``log1p`` when the schema says so,
    impute missing values with the (transformed) mean, then standardise to zero mean and unit
    variance, or, for features listed for binning, one-hot encode the quantile bin. Categorical
    features are one-hot encoded over the schema's categories plus one ``__unknown__`` column
    for values outside the list and missing values.

    Parameters
    ----------
    schema
        The dataset schema.
    binning
        ``"quantile"`` to replace numeric features by quantile-bin indicators.
    n_quantiles
        Target number of quantile bins (fewer when values repeat).
    bin_features
        Numeric features to bin when ``binning="quantile"``; default all numeric features.
        Each must have schema ``min`` and ``max``: the bins come from fixed-range histograms.
    histogram_bins
        Histogram resolution used by :meth:`fit`.

    Raises
    ------
    ConfigError
        If an option is out of range or a binned feature is categorical or unbounded.
    """

    def __init__(
        self,
        schema: DatasetSchema,
        *,
        binning: Literal["none", "quantile"] = "none",
        n_quantiles: int = 10,
        bin_features: Sequence[str] | None = None,
        histogram_bins: int = 64,
    ) -> None:
        if binning not in ("none", "quantile"):
            raise ConfigError(f"binning must be 'none' or 'quantile'; got {binning!r}")
        if not 2 <= n_quantiles <= 1000:
            raise ConfigError(f"n_quantiles must be in [2, 1000]; got {n_quantiles}")
        _check_n_bins(histogram_bins)
        self.schema = schema
        self.binning: Literal["none", "quantile"] = binning
        self.n_quantiles = n_quantiles
        self.histogram_bins = histogram_bins
        numeric = [f.name for f in schema.features if f.kind is FeatureKind.NUMERIC]
        if binning == "none":
            self.bin_features: tuple[str, ...] = ()
        else:
            chosen = list(numeric if bin_features is None else bin_features)
            unknown = [n for n in chosen if n not in schema.feature_names]
            categorical = [n for n in chosen if n not in unknown and n not in numeric]
            unbounded = [
                n for n in chosen if n in numeric and histogram_range(schema.feature(n)) is None
            ]
            if unknown or categorical or unbounded:
                raise ConfigError(
                    "bin_features must be numeric schema features with both min and max set "
                    "(quantile bins come from fixed-range histograms); got "
                    f"unknown {unknown}, categorical {categorical}, unbounded {unbounded}"
                )
            self.bin_features = tuple(chosen)
        self.feature_names_out_: list[str] = []
        self._plans: list[_Plan] = []
        self._offsets: dict[str, tuple[int, int]] = {}

    # ----------------------------------------------------------------------------- fitting

    def fit(self, frame: pd.DataFrame) -> Self:
        """Fit on one frame (the centralised case of :meth:`fit_stats`)."""
        return self.fit_stats(
            FeatureStats.from_frame(frame, self.schema, n_bins=self.histogram_bins)
        )

    def fit_stats(self, stats: FeatureStats) -> Self:
        """Fit from (merged) statistics.

        Raises
        ------
        SchemaError
            If ``stats`` were computed for another schema.
        """
        if stats.schema.fingerprint() != self.schema.fingerprint():
            raise SchemaError(
                f"stats schema must match the preprocessor's schema {self.schema.name}; "
                f"got {stats.schema.name} with a different fingerprint"
            )
        plans: list[_Plan] = []
        for spec in self.schema.features:
            if spec.kind is FeatureKind.NUMERIC:
                mean = stats.mean(spec.name)
                var = stats.variance(spec.name)
                # A feature with no values imputes to the centre; a constant one keeps scale 1.
                # The floor sits well above the ~1e-12 variance that CKKS noise alone gives a
                # constant column, so such a column is not blown up into noise.
                mean_value = _center(spec) if mean is None else mean
                scale = math.sqrt(var) if var is not None and var > 1e-9 else 1.0
                if spec.name in self.bin_features:
                    hist = stats.histogram(spec.name)
                    hist_range = histogram_range(spec)
                    assert hist is not None and hist_range is not None
                    cuts: tuple[int, ...] | None = quantile_cuts(hist, self.n_quantiles)
                else:
                    hist_range, cuts = None, None
                plans.append(_NumericPlan(spec, mean_value, scale, hist_range, stats.n_bins, cuts))
            else:
                counts = stats.category_counts(spec.name)
                assert spec.categories is not None
                known = [(counts[c], -i, c) for i, c in enumerate(spec.categories)]
                # Most frequent known category; ties go to the first listed.
                modal = max(known)[2]
                plans.append(_CategoricalPlan(spec, spec.categories, modal))
        self._set_plans(plans)
        return self

    def _set_plans(self, plans: list[_Plan]) -> None:
        names: list[str] = []
        offsets: dict[str, tuple[int, int]] = {}
        for plan in plans:
            name = plan.spec.name
            offsets[name] = (len(names), plan.width)
            if isinstance(plan, _CategoricalPlan):
                names += [f"{name}={c}" for c in plan.categories] + [f"{name}={UNKNOWN_CATEGORY}"]
            elif plan.cuts is None:
                names.append(name)
            else:
                names += [f"{name}:q{k}" for k in range(plan.width)]
        self._plans = plans
        self._offsets = offsets
        self.feature_names_out_ = names

    def _check_fitted(self) -> None:
        if not self._plans:
            raise ConfigError("preprocessor must be fitted before use; call fit or fit_stats")

    @property
    def n_features_out(self) -> int:
        """Number of output columns."""
        self._check_fitted()
        return len(self.feature_names_out_)

    def columns_of(self, feature: str) -> list[int]:
        """Indexes of the output columns that come from raw feature ``feature``.

        Raises
        ------
        SchemaError
            If the schema has no such feature.
        """
        self._check_fitted()
        self.schema.feature(feature)
        start, width = self._offsets[feature]
        return list(range(start, start + width))

    # --------------------------------------------------------------------------- transform

    def _encode(
        self, numeric: Mapping[str, FloatArray], codes: Mapping[str, IntArray], n_rows: int
    ) -> npt.NDArray[np.float32]:
        out = np.zeros((n_rows, len(self.feature_names_out_)), dtype=np.float32)
        rows = np.arange(n_rows)
        for plan in self._plans:
            start, width = self._offsets[plan.spec.name]
            if isinstance(plan, _CategoricalPlan):
                c = codes[plan.spec.name]
                # Unknown and missing share the last column of the block.
                out[rows, start + np.where(c < 0, width - 1, c)] = 1.0
                continue
            t = forward_transform(plan.spec, numeric[plan.spec.name])
            t[np.isnan(t)] = plan.mean
            if plan.cuts is None:
                out[:, start] = (t - plan.mean) / plan.scale
            else:
                assert plan.hist_range is not None
                idx = histogram_index(t, *plan.hist_range, plan.hist_bins)
                q = np.searchsorted(np.asarray(plan.cuts, dtype=np.int64), idx, side="right")
                out[rows, start + q] = 1.0
        return out

    def transform(self, frame: pd.DataFrame) -> npt.NDArray[np.float32]:
        """Encode ``frame``'s feature columns (other columns are ignored).

        Returns
        -------
        numpy.ndarray
            float32 array of shape ``(len(frame), n_features_out)``.

        Raises
        ------
        SchemaError
            If a feature column is missing or a numeric column is not numeric.
        ConfigError
            If the preprocessor is not fitted.
        """
        self._check_fitted()
        require_columns(frame, self.schema)
        numeric: dict[str, FloatArray] = {}
        codes: dict[str, IntArray] = {}
        for plan in self._plans:
            name = plan.spec.name
            if isinstance(plan, _CategoricalPlan):
                codes[name] = series_codes(frame[name], plan.categories)
            else:
                numeric[name] = series_floats(frame[name], name)
        return self._encode(numeric, codes, len(frame))

    def transform_records(self, records: Sequence[Mapping[str, object]]) -> npt.NDArray[np.float32]:
        """Encode plain mappings (e.g. parsed JSON requests) without building a DataFrame.

        A missing key or ``None`` counts as a missing value.

        Raises
        ------
        SchemaError
            If a numeric value is not a number.
        ConfigError
            If the preprocessor is not fitted.
        """
        self._check_fitted()
        numeric: dict[str, FloatArray] = {}
        codes: dict[str, IntArray] = {}
        for plan in self._plans:
            name = plan.spec.name
            values = [r.get(name) for r in records]
            if isinstance(plan, _CategoricalPlan):
                codes[name] = category_codes(values, plan.categories)
                continue
            numeric[name] = record_floats(values, name)
        return self._encode(numeric, codes, len(records))

    def reference_row(self) -> dict[str, float | str]:
        """A typical applicant: numeric means (in raw units) and modal categories.

        For ``log1p`` features the value is ``expm1`` of the mean of ``log1p`` values (a
        geometric-style mean), which is what the model sees as its centre.
        """
        self._check_fitted()
        row: dict[str, float | str] = {}
        for plan in self._plans:
            if isinstance(plan, _CategoricalPlan):
                row[plan.spec.name] = plan.modal
            else:
                value = math.expm1(plan.mean) if plan.spec.transform == "log1p" else plan.mean
                row[plan.spec.name] = value
        return row

    # ------------------------------------------------------------------------ persistence

    def to_dict(self) -> dict[str, object]:
        """JSON-able state; :meth:`from_dict` rebuilds an identical preprocessor."""
        self._check_fitted()
        return {
            "format": _PREPROCESSOR_FORMAT,
            "schema": self.schema.model_dump(mode="json"),
            "binning": self.binning,
            "n_quantiles": self.n_quantiles,
            "bin_features": list(self.bin_features),
            "histogram_bins": self.histogram_bins,
            "features": [plan.to_dict() for plan in self._plans],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Preprocessor:
        """Rebuild a fitted preprocessor from :meth:`to_dict` output.

        Raises
        ------
        ConfigError
            If ``data`` is not a valid preprocessor state.
        """
        try:
            if data.get("format") != _PREPROCESSOR_FORMAT:
                raise ConfigError(
                    f"format must be {_PREPROCESSOR_FORMAT!r}; got {data.get('format')!r}"
                )
            schema = DatasetSchema.model_validate(data["schema"])
            binning = data["binning"]
            if binning not in ("none", "quantile"):
                raise ConfigError(f"binning must be 'none' or 'quantile'; got {binning!r}")
            bin_features = data["bin_features"]
            features = data["features"]
            if not isinstance(bin_features, list) or not isinstance(features, list):
                raise ConfigError("bin_features and features must be lists")
            pre = cls(
                schema,
                binning=binning,
                n_quantiles=_as_int(data["n_quantiles"]),
                bin_features=[str(b) for b in bin_features] if binning == "quantile" else None,
                histogram_bins=_as_int(data["histogram_bins"]),
            )
            if len(features) != len(schema.features):
                raise ConfigError(
                    f"features must have one entry per schema feature ({len(schema.features)}); "
                    f"got {len(features)}"
                )
            plans: list[_Plan] = []
            for spec, entry in zip(schema.features, features, strict=True):
                if not isinstance(entry, dict) or entry.get("name") != spec.name:
                    raise ConfigError(f"features entries must follow schema order; at {spec.name}")
                if spec.kind is FeatureKind.CATEGORICAL:
                    assert spec.categories is not None
                    modal = str(entry["modal"])
                    if modal not in spec.categories:
                        raise ConfigError(f"modal of {spec.name} must be a category; got {modal!r}")
                    plans.append(_CategoricalPlan(spec, spec.categories, modal))
                    continue
                cuts_raw = entry.get("cuts")
                if (cuts_raw is not None) != (spec.name in pre.bin_features):
                    raise ConfigError(f"cuts of {spec.name} must be present exactly when binned")
                mean = _as_float(entry["mean"])
                scale = _as_float(entry["scale"])
                if not (math.isfinite(mean) and math.isfinite(scale) and scale > 0):
                    raise ConfigError(f"mean/scale of {spec.name} must be finite, scale > 0")
                if cuts_raw is None:
                    plans.append(_NumericPlan(spec, mean, scale, None, pre.histogram_bins, None))
                    continue
                hist_range_raw = entry["hist_range"]
                if not isinstance(cuts_raw, list) or not isinstance(hist_range_raw, list):
                    raise ConfigError(f"cuts and hist_range of {spec.name} must be lists")
                lo, hi = (_as_float(v) for v in hist_range_raw)
                plans.append(
                    _NumericPlan(
                        spec,
                        mean,
                        scale,
                        (lo, hi),
                        _as_int(entry["hist_bins"]),
                        tuple(_as_int(c) for c in cuts_raw),
                    )
                )
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"data must be a preprocessor state from to_dict; {e}") from e
        pre._set_plans(plans)
        return pre


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"value must be an integer; got {value!r}")
    return value


def _as_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"value must be a number; got {value!r}")
    return float(value)
