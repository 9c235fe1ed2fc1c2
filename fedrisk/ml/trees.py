"""Histogram gradient-boosted trees that grow identically from pooled (summed) histograms.

Everything a tree learns is a function of additive statistics, so parties can grow the same
trees from the sum of their histograms:

- **Bins** (:class:`TreeBinning`) come from :class:`~fedrisk.ml.features.FeatureStats`: numeric
  features are cut at the quantiles of their fine fixed-range histogram (at most ``max_bins``
  bins, cut on histogram boundaries), categorical features keep one bin per schema category
  plus one for unknown values. Every feature has one more bin for missing values.
- **Histograms**: per open node × feature × bin, the sums of gradients and hessians of the
  logistic loss. Each row's gradient and hessian are rounded to a fixed-point grid
  (:data:`GRADIENT_SCALE`) first, so the pooled histograms are sums of integers: a decrypted
  CKKS sum rounds back to exactly the integers a central computation adds up, and the central
  and the federated run derive bit-identical splits.
- **Splits**: XGBoost's gain ``½[G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ)] − γ`` with a minimum
  child hessian, a learned default direction for missing values, and LightGBM-style categorical
  splits (categories sorted by ``G/(H+λ)``, the best prefix goes left). Ties go to the first
  candidate in (feature, threshold, missing-right-before-left) order.
- **Growth** is level by level (:class:`BoostingState`): one exchange of histograms per level;
  only the smaller child of each split is histogrammed, its sibling is the parent minus it.
  Children at the depth limit are leaves and take their sums from the parent's histogram, so
  a tree of depth d costs d exchanges, not d + 1.
  Leaf values ``−η G/(H+λ)`` come from the pooled sums; a finished tree's validation loss and
  score histograms ride along with the next tree's first histograms and drive early stopping.

:func:`fit_central` runs the same state machine over in-memory shards, which is the oracle the
federated run is tested against.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fedrisk.data.schema import DatasetSchema, FeatureKind
from fedrisk.errors import ConfigError, ModelError, SchemaError
from fedrisk.ml.features import (
    FeatureStats,
    category_codes,
    forward_transform,
    histogram_index,
    histogram_range,
    quantile_cuts,
    record_floats,
    require_columns,
    series_codes,
    series_floats,
)
from fedrisk.ml.inference import sigmoid
from fedrisk.ml.metrics import auc_from_histograms, ks_from_histograms, score_histograms

__all__ = [
    "GRADIENT_SCALE",
    "TREE_SETTINGS",
    "TREE_STATS_BINS",
    "BoostingState",
    "Forest",
    "Shard",
    "Tree",
    "TreeBinning",
    "TreeModel",
    "TreeParams",
    "fit_central",
    "tree_columns",
    "tree_params_of",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
CodeArray = npt.NDArray[np.int32]

GRADIENT_SCALE: Final = 2.0**16
"""Fixed-point grid of per-row gradients, hessians and losses (about 1.5e-5): coarse enough that
pooled sums stay exact integers in CKKS, fine enough not to change the learned trees."""

TREE_STATS_BINS: Final = 2048
"""Fixed-range histogram bins of the feature statistics a tree run sums: the quantile bin edges
are cut on these, so they bound how finely a numeric feature can be split."""

EVAL_HIST_BINS: Final = 2000
"""Score-histogram bins of the validation evaluation (as the federated evaluation uses)."""

_BINNING_FORMAT = "fedrisk.tree-binning/1"
_FOREST_FORMAT = "fedrisk.forest/1"


class TreeParams(BaseModel):
    """Hyper-parameters of the boosted trees; every party and the central fit use the same."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_trees: int = Field(default=300, ge=1, le=2000)
    max_depth: int = Field(default=5, ge=1, le=10)
    learning_rate: float = Field(default=0.1, gt=0.0, le=1.0)
    reg_lambda: float = Field(default=1.0, ge=0.0)
    gamma: float = Field(default=0.0, ge=0.0)
    min_child_weight: float = Field(default=1.0, ge=0.0)
    max_bins: int = Field(default=255, ge=2, le=1000)
    subsample: float = Field(default=1.0, gt=0.0, le=1.0)
    colsample: float = Field(default=1.0, gt=0.0, le=1.0)
    """Share of the features each tree may split on, drawn per tree from a stream seeded by the
    run's seed and the tree's index alone, so every party draws the same columns."""
    validation_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    early_stopping_rounds: int = Field(default=20, ge=0)
    """Stop when the pooled validation loss has not improved for this many trees (0: never)."""
    seed: int = Field(default=0, ge=0)


TREE_SETTINGS: Final[dict[str, str]] = {
    "seed": "seed",
    "trees": "n_trees",
    "tree_depth": "max_depth",
    "tree_learning_rate": "learning_rate",
    "tree_lambda": "reg_lambda",
    "tree_bins": "max_bins",
    "tree_colsample": "colsample",
}
"""Run settings (run config and simulation spec field names) -> :class:`TreeParams` fields."""


def tree_params_of(settings: BaseModel) -> TreeParams:
    """The :class:`TreeParams` of a run's settings (a run config or a simulation spec, which
    name them as :data:`TREE_SETTINGS` does); the same at every party and centrally."""
    values = settings.model_dump()
    return TreeParams(**{param: values[name] for name, param in TREE_SETTINGS.items()})


# --------------------------------------------------------------------------------- binning


@dataclass(frozen=True)
class FeatureBins:
    """How one feature's raw values become bin codes ``0 .. n_bins - 1`` (``n_bins``: missing)."""

    name: str
    kind: Literal["numeric", "categorical"]
    n_bins: int
    hist_range: tuple[float, float] | None = None
    hist_bins: int = 0
    cuts: tuple[int, ...] = ()
    """Numeric: fine-histogram indexes where a new bin starts."""
    categories: tuple[str, ...] = ()
    """Categorical: the schema's categories; code ``len(categories)`` is any unknown value."""

    def edges(self) -> list[float]:
        """Numeric: the transformed-value lower edge of bins 1 .. n_bins - 1 (for display)."""
        if self.hist_range is None:
            return []
        lo, hi = self.hist_range
        return [lo + (hi - lo) * c / self.hist_bins for c in self.cuts]


class TreeBinning:
    """The shared bins of every feature, fitted from pooled :class:`FeatureStats`.

    Parameters
    ----------
    schema
        The dataset schema; every numeric feature must be bounded (its bins come from the
        fixed-range histogram of the statistics).
    features
        One :class:`FeatureBins` per schema feature, in schema order.
    """

    def __init__(self, schema: DatasetSchema, features: Sequence[FeatureBins]) -> None:
        if [f.name for f in features] != list(schema.feature_names):
            raise ConfigError("features must follow the schema's feature order")
        self.schema = schema
        self.features = tuple(features)
        self.n_bins = np.array([f.n_bins for f in features], dtype=np.int64)
        # Each feature's block in a histogram: its value bins, then its missing bin.
        widths = self.n_bins + 1
        self.offsets = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
        self.total_bins = int(widths.sum())
        self._numeric_candidates: _NumericCandidates | None = None

    @property
    def numeric_candidates(self) -> _NumericCandidates:
        """Every numeric split candidate (built once per binning)."""
        if self._numeric_candidates is None:
            self._numeric_candidates = _NumericCandidates.of(self)
        return self._numeric_candidates

    @classmethod
    def from_stats(cls, stats: FeatureStats, *, max_bins: int = 255) -> Self:
        """Quantile bins of numeric features, category bins of categorical ones.

        Raises
        ------
        ConfigError
            If a numeric feature has no histogram (the schema gives it no min or max).
        """
        out: list[FeatureBins] = []
        for spec in stats.schema.features:
            if spec.kind is FeatureKind.CATEGORICAL:
                assert spec.categories is not None
                cats = tuple(spec.categories)
                out.append(FeatureBins(spec.name, "categorical", len(cats) + 1, categories=cats))
                continue
            hist = stats.histogram(spec.name)
            hist_range = histogram_range(spec)
            if hist is None or hist_range is None:
                raise ConfigError(
                    f"feature {spec.name} must have schema min and max for tree bins; got "
                    f"min={spec.min}, max={spec.max}"
                )
            cuts = quantile_cuts(hist, max_bins)
            out.append(
                FeatureBins(
                    spec.name,
                    "numeric",
                    len(cuts) + 1,
                    hist_range=hist_range,
                    hist_bins=stats.n_bins,
                    cuts=cuts,
                )
            )
        return cls(stats.schema, out)

    def _numeric_codes(self, fb: FeatureBins, raw: FloatArray) -> CodeArray:
        spec = self.schema.feature(fb.name)
        t = forward_transform(spec, raw)
        missing = np.isnan(t)
        assert fb.hist_range is not None
        idx = histogram_index(np.where(missing, fb.hist_range[0], t), *fb.hist_range, fb.hist_bins)
        codes = np.searchsorted(np.asarray(fb.cuts, dtype=np.int64), idx, side="right")
        codes[missing] = fb.n_bins
        return codes.astype(np.int32)

    @staticmethod
    def _category_bins(fb: FeatureBins, codes: IntArray) -> CodeArray:
        k = len(fb.categories)
        # Known categories 0..k-1, unknown (-1) -> k, missing (-2) -> the missing bin k + 1.
        return np.where(codes == -2, k + 1, np.where(codes == -1, k, codes)).astype(np.int32)

    def transform(self, frame: pd.DataFrame) -> CodeArray:
        """Bin codes of ``frame``'s rows, shape ``(n, n_features)``; missing = the feature's
        ``n_bins``."""
        require_columns(frame, self.schema)
        out = np.empty((len(frame), len(self.features)), dtype=np.int32)
        for j, fb in enumerate(self.features):
            if fb.kind == "numeric":
                out[:, j] = self._numeric_codes(fb, series_floats(frame[fb.name], fb.name))
            else:
                out[:, j] = self._category_bins(fb, series_codes(frame[fb.name], fb.categories))
        return out

    def transform_records(self, records: Sequence[Mapping[str, object]]) -> CodeArray:
        """Bin codes of plain mappings (a missing key or None is a missing value).

        Raises
        ------
        SchemaError
            If a numeric value is not a number.
        """
        out = np.empty((len(records), len(self.features)), dtype=np.int32)
        for j, fb in enumerate(self.features):
            values = [r.get(fb.name) for r in records]
            if fb.kind == "categorical":
                out[:, j] = self._category_bins(fb, category_codes(values, fb.categories))
                continue
            column = record_floats(values, fb.name)
            out[:, j] = self._numeric_codes(fb, column)
        return out

    def bin_label(self, feature: int, code: int) -> str:
        """A readable name of bin ``code`` of feature ``feature`` (for tree dumps)."""
        fb = self.features[feature]
        if code == fb.n_bins:
            return "missing"
        if fb.kind == "categorical":
            return fb.categories[code] if code < len(fb.categories) else "__unknown__"
        edges = fb.edges()
        lo = "-inf" if code == 0 else f"{edges[code - 1]:.6g}"
        hi = "inf" if code == len(edges) else f"{edges[code]:.6g}"
        return f"[{lo}, {hi})"

    def to_dict(self) -> dict[str, object]:
        """JSON-able state; :meth:`from_dict` rebuilds the same binning."""
        return {
            "format": _BINNING_FORMAT,
            "schema": self.schema.model_dump(mode="json"),
            "features": [
                {
                    "name": f.name,
                    "kind": f.kind,
                    "n_bins": f.n_bins,
                    "hist_range": list(f.hist_range) if f.hist_range else None,
                    "hist_bins": f.hist_bins,
                    "cuts": list(f.cuts),
                    "categories": list(f.categories),
                }
                for f in self.features
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TreeBinning:
        """Rebuild from :meth:`to_dict` output.

        Raises
        ------
        ConfigError
            If ``data`` is not a binning state.
        """
        if data.get("format") != _BINNING_FORMAT:
            raise ConfigError(f"format must be {_BINNING_FORMAT!r}; got {data.get('format')!r}")
        try:
            schema = DatasetSchema.model_validate(data["schema"])
            features = [
                FeatureBins(
                    name=str(f["name"]),
                    kind="numeric" if f["kind"] == "numeric" else "categorical",
                    n_bins=int(f["n_bins"]),
                    hist_range=(
                        (float(f["hist_range"][0]), float(f["hist_range"][1]))
                        if f["hist_range"]
                        else None
                    ),
                    hist_bins=int(f["hist_bins"]),
                    cuts=tuple(int(c) for c in f["cuts"]),
                    categories=tuple(str(c) for c in f["categories"]),
                )
                for f in data["features"]
            ]
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ConfigError(f"data must be a tree binning from to_dict; {e}") from e
        return cls(schema, features)


# ----------------------------------------------------------------------------------- trees


@dataclass
class Tree:
    """One regression tree over bin codes, stored as parallel node lists (node 0 is the root).

    A split node sends a row left when its code is ``<= threshold`` (numeric) or in
    ``left_categories`` (categorical); a missing value goes left when ``default_left``. ``cover``
    is the node's pooled hessian sum (what path-dependent TreeSHAP weighs branches by).
    """

    feature: list[int] = field(default_factory=list)
    threshold: list[int] = field(default_factory=list)
    left_categories: list[list[int]] = field(default_factory=list)
    default_left: list[bool] = field(default_factory=list)
    left: list[int] = field(default_factory=list)
    right: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    cover: list[float] = field(default_factory=list)
    gain: list[float] = field(default_factory=list)
    depth: list[int] = field(default_factory=list)

    def add_node(self, *, depth: int, cover: float) -> int:
        """Append a leaf (value 0 until set); return its id."""
        self.feature.append(-1)
        self.threshold.append(-1)
        self.left_categories.append([])
        self.default_left.append(False)
        self.left.append(-1)
        self.right.append(-1)
        self.value.append(0.0)
        self.cover.append(cover)
        self.gain.append(0.0)
        self.depth.append(depth)
        return len(self.feature) - 1

    @property
    def n_nodes(self) -> int:
        """Number of nodes, split nodes and leaves."""
        return len(self.feature)

    def to_dict(self) -> dict[str, list[Any]]:
        """The node lists, JSON-able."""
        return {
            "feature": self.feature,
            "threshold": self.threshold,
            "left_categories": self.left_categories,
            "default_left": self.default_left,
            "left": self.left,
            "right": self.right,
            "value": self.value,
            "cover": self.cover,
            "gain": self.gain,
            "depth": self.depth,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tree:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            feature=[int(v) for v in data["feature"]],
            threshold=[int(v) for v in data["threshold"]],
            left_categories=[[int(c) for c in cs] for cs in data["left_categories"]],
            default_left=[bool(v) for v in data["default_left"]],
            left=[int(v) for v in data["left"]],
            right=[int(v) for v in data["right"]],
            value=[float(v) for v in data["value"]],
            cover=[float(v) for v in data["cover"]],
            gain=[float(v) for v in data["gain"]],
            depth=[int(v) for v in data["depth"]],
        )


def _route_left(tree: Tree, node: int, codes: CodeArray, n_bins: IntArray) -> npt.NDArray[np.bool_]:
    """Which of ``codes``' rows go left at split ``node``."""
    f = tree.feature[node]
    col = codes[:, f]
    missing = col == n_bins[f]
    if tree.left_categories[node]:
        goes = np.isin(col, np.asarray(tree.left_categories[node], dtype=np.int32))
    else:
        goes = col <= tree.threshold[node]
    return np.where(missing, tree.default_left[node], goes)


def _assign(tree: Tree, codes: CodeArray, n_bins: IntArray) -> IntArray:
    """The node each row currently sits in (a leaf, or an open node of a growing tree)."""
    where = np.zeros(codes.shape[0], dtype=np.int64)
    frontier = [0]
    while frontier:
        nxt: list[int] = []
        for node in frontier:
            if tree.feature[node] < 0:
                continue
            rows = np.flatnonzero(where == node)
            left = _route_left(tree, node, codes[rows], n_bins)
            where[rows[left]] = tree.left[node]
            where[rows[~left]] = tree.right[node]
            nxt += [tree.left[node], tree.right[node]]
        frontier = nxt
    return where


class Forest:
    """Finished trees plus the base margin: a vectorised scorer over bin codes.

    Every node of every tree gets a lookup table "does bin code c go left", so scoring a batch
    is ``max_depth`` gathers over (rows × trees), whatever the split kinds.
    """

    def __init__(self, binning: TreeBinning, trees: Sequence[Tree], *, base_margin: float) -> None:
        if not math.isfinite(base_margin):
            raise ModelError(f"base_margin must be finite; got {base_margin}")
        self.binning = binning
        self.trees = list(trees)
        self.base_margin = float(base_margin)
        n_trees = len(self.trees)
        width = max((t.n_nodes for t in self.trees), default=1)
        n_codes = int(binning.n_bins.max()) + 1
        self._feature = np.zeros((n_trees, width), dtype=np.int64)
        self._left = np.zeros((n_trees, width), dtype=np.int64)
        self._right = np.zeros((n_trees, width), dtype=np.int64)
        self._value = np.zeros((n_trees, width), dtype=np.float64)
        self._goes_left = np.zeros((n_trees, width, n_codes), dtype=bool)
        self._depth = max((max(t.depth) for t in self.trees), default=0)
        for i, tree in enumerate(self.trees):
            for node in range(tree.n_nodes):
                self._value[i, node] = tree.value[node]
                f = tree.feature[node]
                if f < 0:
                    # Leaves point at themselves, so every row can take max_depth steps.
                    self._left[i, node] = self._right[i, node] = node
                    continue
                self._feature[i, node] = f
                self._left[i, node] = tree.left[node]
                self._right[i, node] = tree.right[node]
                nb = int(binning.n_bins[f])
                table = np.zeros(n_codes, dtype=bool)
                if tree.left_categories[node]:
                    table[tree.left_categories[node]] = True
                else:
                    table[: tree.threshold[node] + 1] = True
                table[nb] = tree.default_left[node]
                self._goes_left[i, node] = table

    def margins(self, codes: CodeArray, *, n_trees: int | None = None) -> FloatArray:
        """Log-odds per row: base margin plus the first ``n_trees`` trees' leaf values."""
        k = len(self.trees) if n_trees is None else n_trees
        n = codes.shape[0]
        out = np.full(n, self.base_margin, dtype=np.float64)
        if k == 0 or n == 0:
            return out
        trees = np.arange(k)[None, :]
        node = np.zeros((n, k), dtype=np.int64)
        rows = np.arange(n)[:, None]
        for _ in range(self._depth):
            feat = self._feature[trees, node]
            code = codes[rows, feat]
            left = self._goes_left[trees, node, code]
            node = np.where(left, self._left[trees, node], self._right[trees, node])
        out += self._value[trees, node].sum(axis=1)
        return out

    def to_dict(self) -> dict[str, object]:
        """JSON-able model: binning, base margin and trees."""
        return {
            "format": _FOREST_FORMAT,
            "binning": self.binning.to_dict(),
            "base_margin": self.base_margin,
            "trees": [t.to_dict() for t in self.trees],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Forest:
        """Rebuild from :meth:`to_dict` output.

        Raises
        ------
        ModelError
            If ``data`` is not a forest.
        """
        if data.get("format") != _FOREST_FORMAT:
            raise ModelError(f"format must be {_FOREST_FORMAT!r}; got {data.get('format')!r}")
        try:
            return cls(
                TreeBinning.from_dict(data["binning"]),
                [Tree.from_dict(t) for t in data["trees"]],
                base_margin=float(data["base_margin"]),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ModelError(f"data must be a forest from to_dict; {e}") from e


# ------------------------------------------------------------------------------ splitting


@dataclass(frozen=True)
class Split:
    """The best split of one node."""

    feature: int
    gain: float
    default_left: bool
    threshold: int = -1
    left_categories: tuple[int, ...] = ()


def _gain(
    gl: FloatArray, hl: FloatArray, g: FloatArray | float, h: FloatArray | float, params: TreeParams
) -> FloatArray:
    lam = params.reg_lambda
    gr, hr = g - gl, h - hl
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = 0.5 * (gl * gl / (hl + lam) + gr * gr / (hr + lam) - g * g / (h + lam))
    ok = (hl >= params.min_child_weight) & (hr >= params.min_child_weight) & (hl > 0) & (hr > 0)
    return np.where(ok, raw - params.gamma, -np.inf)


def _best_for_feature(gh: FloatArray, fb: FeatureBins, j: int, params: TreeParams) -> Split | None:
    """Best split on feature ``j`` given its block of the node's histogram ``(2, n_bins+1)``."""
    g_bins, h_bins = gh[0, :-1], gh[1, :-1]
    g_miss, h_miss = gh[0, -1], gh[1, -1]
    g_tot, h_tot = float(g_bins.sum() + g_miss), float(h_bins.sum() + h_miss)
    if fb.kind == "categorical":
        present = np.flatnonzero(h_bins > 0)
        if present.size < 1:
            return None
        ratio = g_bins[present] / (h_bins[present] + params.reg_lambda)
        order = present[np.lexsort((present, ratio))]
        gl = np.cumsum(g_bins[order])[:-1] if order.size > 1 else np.zeros(0)
        hl = np.cumsum(h_bins[order])[:-1] if order.size > 1 else np.zeros(0)
        # With one category present only the missing bin can be split off.
        if order.size == 1:
            gl, hl = np.array([float(g_bins[order[0]])]), np.array([float(h_bins[order[0]])])
            prefixes = 1
        else:
            prefixes = order.size - 1
    else:
        gl = np.cumsum(g_bins)[:-1]
        hl = np.cumsum(h_bins)[:-1]
        prefixes = gl.size
        order = np.arange(g_bins.size)
    if prefixes == 0:
        return None
    # Candidates: every prefix with missing sent right, then every prefix with missing left.
    gains = np.concatenate(
        [_gain(gl, hl, g_tot, h_tot, params), _gain(gl + g_miss, hl + h_miss, g_tot, h_tot, params)]
    )
    best = int(np.argmax(gains))
    if not np.isfinite(gains[best]) or gains[best] <= 0.0:
        return None
    default_left = best >= prefixes
    cut = best % prefixes
    if fb.kind == "categorical":
        left = tuple(sorted(int(c) for c in order[: cut + 1]))
        return Split(j, float(gains[best]), default_left, left_categories=left)
    return Split(j, float(gains[best]), default_left, threshold=cut)


@dataclass(frozen=True)
class _NumericCandidates:
    """Every numeric split candidate of a binning, in the order :func:`best_split` ranks them:
    by feature, then missing right before missing left, then by threshold.

    Positions index a node's histogram cumulated along its bins with a zero column in front,
    so ``cum[:, end] - cum[:, start]`` is the sum of the bins ``start .. end - 1``.
    """

    feature: IntArray
    threshold: IntArray
    missing_left: npt.NDArray[np.bool_]
    start: IntArray
    """The feature's first bin."""
    end: IntArray
    """One past the candidate's last left bin."""
    missing: IntArray
    """The feature's missing bin."""

    @classmethod
    def of(cls, binning: TreeBinning) -> _NumericCandidates:
        parts: list[tuple[int, int, bool, int]] = []
        for j, fb in enumerate(binning.features):
            if fb.kind != "numeric":
                continue
            first = int(binning.offsets[j])
            for left in (False, True):
                parts += [(j, cut, left, first) for cut in range(fb.n_bins - 1)]
        feature = np.array([p[0] for p in parts], dtype=np.int64)
        threshold = np.array([p[1] for p in parts], dtype=np.int64)
        starts = np.array([p[3] for p in parts], dtype=np.int64)
        return cls(
            feature=feature,
            threshold=threshold,
            missing_left=np.array([p[2] for p in parts], dtype=bool),
            start=starts,
            end=starts + threshold + 1,
            missing=binning.offsets[feature] + binning.n_bins[feature],
        )


def _best_numeric(
    hist: FloatArray, binning: TreeBinning, params: TreeParams, allowed: set[int] | None
) -> Split | None:
    """The best numeric split of a node, all features at once.

    Notes
    -----
    Equal, bit for bit, to scanning each feature's cumulative sums (:func:`_best_for_feature`):
    the histograms hold multiples of 2^-16 whose sums are exact in float64, so a difference of
    two cumulative sums is the very number a per-feature cumulative sum gives, and ``argmax``
    keeps the first of equal gains in the same order.
    """
    c = binning.numeric_candidates
    if c.feature.size == 0:
        return None
    cum = np.concatenate([np.zeros((2, 1)), np.cumsum(hist, axis=1)], axis=1)
    base = cum[:, c.start]
    gl, hl = cum[0, c.end] - base[0], cum[1, c.end] - base[1]
    g_tot, h_tot = cum[0, c.missing + 1] - base[0], cum[1, c.missing + 1] - base[1]
    gl = np.where(c.missing_left, gl + hist[0, c.missing], gl)
    hl = np.where(c.missing_left, hl + hist[1, c.missing], hl)
    gains = _gain(gl, hl, g_tot, h_tot, params)
    if allowed is not None:
        gains = np.where(np.isin(c.feature, sorted(allowed)), gains, -np.inf)
    best = int(np.argmax(gains))
    if not np.isfinite(gains[best]) or gains[best] <= 0.0:
        return None
    return Split(
        int(c.feature[best]),
        float(gains[best]),
        bool(c.missing_left[best]),
        threshold=int(c.threshold[best]),
    )


def best_split(
    hist: FloatArray,
    binning: TreeBinning,
    params: TreeParams,
    *,
    columns: Sequence[int] | None = None,
) -> Split | None:
    """The best split of a node from its pooled histogram ``(2, total_bins)``, or None.

    Only the features in ``columns`` (all when None) are candidates. Ties keep the first
    candidate found: lowest feature, then lowest threshold (categorical: shortest prefix),
    missing right before missing left.
    """
    allowed = None if columns is None else set(columns)
    found = [_best_numeric(hist, binning, params, allowed)]
    for j, fb in enumerate(binning.features):
        if fb.kind != "categorical" or (allowed is not None and j not in allowed):
            continue
        start = int(binning.offsets[j])
        found.append(_best_for_feature(hist[:, start : start + fb.n_bins + 1], fb, j, params))
    best: Split | None = None
    for split in sorted((f for f in found if f is not None), key=lambda f: f.feature):
        if best is None or split.gain > best.gain:
            best = split
    return best


# ------------------------------------------------------------------------------- boosting


def _seed_of(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass
class Shard:
    """One holder's rows, binned: its training rows, its validation rows and its name.

    The name seeds the holder's own random streams (validation split, row subsampling), so a
    central fit over the same shards draws exactly what the parties draw.
    """

    name: str
    codes: CodeArray
    y: IntArray
    valid_codes: CodeArray
    valid_y: IntArray
    _cache: dict[str, tuple[int, FloatArray]] = field(default_factory=dict, repr=False)

    def margins(self, which: Literal["train", "valid"], state: BoostingState) -> FloatArray:
        """Margins of the training or validation rows under ``state``'s finished trees, adding
        only the trees not seen since the last call (a boosting run only appends trees)."""
        codes = self.codes if which == "train" else self.valid_codes
        trees = state.trees
        start: FloatArray = np.full(codes.shape[0], state.base_margin, dtype=np.float64)
        seen, margin = self._cache.get(which, (0, start))
        if seen > len(trees):
            seen, margin = 0, start
        if seen < len(trees):
            tail = Forest(state.binning, trees[seen:], base_margin=0.0)
            margin = margin + tail.margins(codes)
            self._cache[which] = (len(trees), margin)
        return np.asarray(margin, dtype=np.float64)

    @classmethod
    def split(
        cls,
        name: str,
        codes: CodeArray,
        y: npt.ArrayLike,
        *,
        params: TreeParams,
    ) -> Shard:
        """Hold out ``params.validation_fraction`` of the rows, drawn from the shard's stream."""
        labels = np.asarray(y, dtype=np.int64)
        rng = np.random.default_rng(_seed_of(params.seed, "validation", name))
        valid = rng.random(labels.shape[0]) < params.validation_fraction
        return cls(name, codes[~valid], labels[~valid], codes[valid], labels[valid])


def tree_columns(params: TreeParams, tree_index: int, n_features: int) -> list[int] | None:
    """The features tree ``tree_index`` may split on (None: all).

    Notes
    -----
    The stream is seeded by the run's seed and the tree's index, never by a party's name: the
    parties must all grow the tree on the same columns to derive the same split.
    """
    if params.colsample >= 1.0:
        return None
    k = max(1, round(params.colsample * n_features))
    rng = np.random.default_rng(_seed_of(params.seed, "colsample", tree_index))
    return sorted(int(j) for j in rng.choice(n_features, size=k, replace=False))


def _quantize(x: FloatArray) -> FloatArray:
    return np.rint(x * GRADIENT_SCALE)


class BoostingState:
    """Where the boosting stands; advanced only by pooled sums, so every holder agrees.

    The cycle: :meth:`local_vector` gives a holder's contribution for the current step (the
    histograms of the nodes being built, and the last finished tree's evaluation); the sum of
    all holders' vectors goes to :meth:`apply`, which grows the tree one level, finishes it,
    starts the next, or stops. :meth:`to_dict` / :meth:`from_dict` carry it between messages.
    """

    def __init__(self, binning: TreeBinning, params: TreeParams, *, base_margin: float) -> None:
        self.binning = binning
        self.params = params
        self.base_margin = float(base_margin)
        self.trees: list[Tree] = []
        self.current: Tree | None = None
        self.build: list[int] = []
        """Nodes whose histograms the holders send this step."""
        self.derive: list[tuple[int, int, int]] = []
        """(node, parent, sibling): histograms got as parent minus the built sibling."""
        self.open_hists: dict[int, FloatArray] = {}
        """Pooled histograms of the current level's open nodes, kept for the subtraction."""
        self.eval_pending = False
        self.losses: list[float] = []
        self.valid_aucs: list[float] = []
        self.valid_kss: list[float] = []
        self.best_trees = 0
        self.done = False
        self.step = 0
        self._start_tree()

    # ----------------------------------------------------------------- the step contract

    @property
    def vector_length(self) -> int:
        """Length of this step's contribution vector."""
        n = len(self.build) * 2 * self.binning.total_bins
        return n + (2 + 2 * EVAL_HIST_BINS if self.eval_pending else 0)

    def local_vector(self, shard: Shard) -> FloatArray:
        """A holder's contribution: fixed-point histograms of the nodes to build (of the rows
        in this tree's subsample), then, when due, its validation loss sum, row count and
        score histograms of the finished trees."""
        parts: list[FloatArray] = []
        if self.build:
            assert self.current is not None
            p = sigmoid(shard.margins("train", self))
            grad = _quantize(p - shard.y)
            hess = _quantize(p * (1.0 - p))
            rng = np.random.default_rng(
                _seed_of(self.params.seed, "subsample", len(self.trees), shard.name)
            )
            keep: npt.NDArray[np.bool_] = np.asarray(
                rng.random(shard.y.shape[0]) < self.params.subsample
            )
            where = _assign(self.current, shard.codes, self.binning.n_bins)
            parts.append(self._histograms(shard.codes, where, keep, grad, hess))
        if self.eval_pending:
            z = shard.margins("valid", self)
            # log(1 + e^z) - y z, the logistic loss, computed without overflow.
            loss = np.logaddexp(0.0, z) - shard.valid_y * z
            parts.append(np.array([_quantize(loss).sum(), float(shard.valid_y.shape[0])]))
            parts.append(
                score_histograms(shard.valid_y, sigmoid(z), n_bins=EVAL_HIST_BINS).ravel()
                if shard.valid_y.size
                else np.zeros(2 * EVAL_HIST_BINS)
            )
        return np.concatenate(parts) if parts else np.zeros(0)

    def _histograms(
        self,
        codes: CodeArray,
        where: IntArray,
        keep: npt.NDArray[np.bool_],
        grad: FloatArray,
        hess: FloatArray,
    ) -> FloatArray:
        total = self.binning.total_bins
        slot = np.full(where.shape[0], -1, dtype=np.int64)
        for i, node in enumerate(self.build):
            slot[(where == node) & keep] = i
        rows = np.flatnonzero(slot >= 0)
        n_slots = len(self.build)
        flat = (slot[rows, None] * total + self.binning.offsets[None, :] + codes[rows]).ravel()
        size = n_slots * total
        g = np.bincount(flat, weights=np.repeat(grad[rows], codes.shape[1]), minlength=size)
        h = np.bincount(flat, weights=np.repeat(hess[rows], codes.shape[1]), minlength=size)
        both = np.stack([g.reshape(n_slots, total), h.reshape(n_slots, total)], axis=1)
        return np.asarray(both.ravel(), dtype=np.float64)

    def apply(self, pooled: npt.ArrayLike) -> None:
        """Advance one step with the sum of every holder's :meth:`local_vector`.

        Raises
        ------
        ModelError
            If the vector has the wrong length, or the run is already done.
        """
        if self.done:
            raise ModelError("boosting is done; no further step can be applied")
        vec = np.rint(np.asarray(pooled, dtype=np.float64))  # exact integers, CKKS noise gone
        if vec.shape != (self.vector_length,):
            raise ModelError(
                f"pooled vector must have {self.vector_length} values at step {self.step}; "
                f"got shape {vec.shape}"
            )
        n_hist = len(self.build) * 2 * self.binning.total_bins
        hist_part, eval_part = vec[:n_hist], vec[n_hist:]
        self.step += 1
        eval_due = self.eval_pending
        self.eval_pending = False
        if self.build:
            self._grow(hist_part.reshape(len(self.build), 2, self.binning.total_bins))
        if eval_due:
            self._evaluate(eval_part)
            if self.done:
                return
        if self.current is None:
            if len(self.trees) < self.params.n_trees:
                self._start_tree()
            elif not self.eval_pending:
                # The budget is spent and the last tree evaluated (an evaluation-only step).
                self._finish()

    # ----------------------------------------------------------------------- internals

    def _start_tree(self) -> None:
        tree = Tree()
        tree.add_node(depth=0, cover=0.0)
        self.current = tree
        self.build = [0]
        self.derive = []
        self.open_hists = {}

    def _grow(self, built: FloatArray) -> None:
        tree = self.current
        assert tree is not None
        hists = {node: built[i] for i, node in enumerate(self.build)}
        for node, parent, sibling in self.derive:
            hists[node] = self.open_hists[parent] - hists[sibling]
        scale = GRADIENT_SCALE
        columns = tree_columns(self.params, len(self.trees), len(self.binning.features))
        build: list[int] = []
        derive: list[tuple[int, int, int]] = []
        # Any one feature's block sums to the node's totals (every row has one bin per
        # feature); the first feature's is exact in fixed point.
        first = slice(0, int(self.binning.n_bins[0]) + 1)
        for node in sorted(hists):
            hist = hists[node] / scale
            g_fixed, h_fixed = (
                float(hists[node][0, first].sum()),
                float(hists[node][1, first].sum()),
            )
            self._set_leaf(tree, node, g_fixed, h_fixed)
            if tree.depth[node] >= self.params.max_depth:
                continue
            split = best_split(hist, self.binning, self.params, columns=columns)
            if split is None:
                continue
            tree.feature[node] = split.feature
            tree.threshold[node] = split.threshold
            tree.left_categories[node] = list(split.left_categories)
            tree.default_left[node] = split.default_left
            tree.gain[node] = split.gain
            left = tree.add_node(depth=tree.depth[node] + 1, cover=0.0)
            right = tree.add_node(depth=tree.depth[node] + 1, cover=0.0)
            tree.left[node], tree.right[node] = left, right
            g_left, h_left = _child_sums(hists[node], split, self.binning)
            if tree.depth[left] >= self.params.max_depth:
                # Children at the depth limit are leaves, and a leaf needs only its totals:
                # the split side's bins of this histogram hold them, so no exchange is spent
                # on histograms of theirs (the deepest level holds the most nodes).
                self._set_leaf(tree, left, g_left, h_left)
                self._set_leaf(tree, right, g_fixed - g_left, h_fixed - h_left)
                continue
            # Build the lighter child (fewer rows to histogram), derive the heavier one.
            small, big = (left, right) if 2 * h_left <= h_fixed else (right, left)
            build.append(small)
            derive.append((big, node, small))
        self.open_hists = hists
        self.build = sorted(build)
        self.derive = derive
        if not build:
            self.trees.append(tree)
            self.current = None
            self.eval_pending = True

    def _set_leaf(self, tree: Tree, node: int, g_fixed: float, h_fixed: float) -> None:
        """Cover and leaf value of ``node`` from its fixed-point gradient and hessian sums
        (exact integers, so dividing by the power-of-two scale is exact too)."""
        g, h = g_fixed / GRADIENT_SCALE, h_fixed / GRADIENT_SCALE
        lam = self.params.reg_lambda
        tree.cover[node] = h
        tree.value[node] = -self.params.learning_rate * g / (h + lam) if h + lam > 0 else 0.0

    def _evaluate(self, part: FloatArray) -> None:
        loss_sum, count = float(part[0]), float(part[1])
        loss = loss_sum / GRADIENT_SCALE / count if count > 0 else float("nan")
        self.losses.append(loss)
        hist = np.clip(part[2:], 0.0, None).reshape(2, EVAL_HIST_BINS)
        try:
            self.valid_aucs.append(auc_from_histograms(hist))
            self.valid_kss.append(ks_from_histograms(hist))
        except SchemaError:  # a validation set without both classes
            self.valid_aucs.append(0.5)
            self.valid_kss.append(0.0)
        k = len(self.trees)
        if count <= 0:
            self.best_trees = k
            return
        best_loss = self.losses[self.best_trees - 1] if self.best_trees else math.inf
        if loss < best_loss:
            self.best_trees = k
        patience = self.params.early_stopping_rounds
        if patience and k - self.best_trees >= patience:
            self._finish()

    def _finish(self) -> None:
        keep = self.best_trees if self.losses and self.best_trees else len(self.trees)
        self.trees = self.trees[:keep]
        self.current = None
        self.build = []
        self.derive = []
        self.open_hists = {}
        self.eval_pending = False
        self.done = True

    # --------------------------------------------------------------------- persistence

    def forest(self) -> Forest:
        """The finished trees as a scorer (the best prefix once done)."""
        return Forest(self.binning, self.trees, base_margin=self.base_margin)

    def to_dict(self, *, open_hists: bool = True) -> dict[str, Any]:
        """Everything needed to continue, JSON-able (the open histograms as lists, unless
        ``open_hists`` is false: a holder that keeps them as arrays beside it)."""
        out = {
            "binning": self.binning.to_dict(),
            "params": self.params.model_dump(),
            "base_margin": self.base_margin,
            "trees": [t.to_dict() for t in self.trees],
            "current": self.current.to_dict() if self.current else None,
            "build": self.build,
            "derive": [list(d) for d in self.derive],
            "eval_pending": self.eval_pending,
            "losses": self.losses,
            "valid_aucs": self.valid_aucs,
            "valid_kss": self.valid_kss,
            "best_trees": self.best_trees,
            "done": self.done,
            "step": self.step,
        }
        if open_hists:
            out["open_hists"] = {str(k): v.tolist() for k, v in self.open_hists.items()}
        return out

    def to_json(self, *, open_hists: bool = True) -> str:
        """:meth:`to_dict` as compact JSON."""
        return json.dumps(self.to_dict(open_hists=open_hists), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BoostingState:
        """Rebuild from :meth:`to_dict` output (without open histograms if it had none)."""
        state = cls.__new__(cls)
        state.binning = TreeBinning.from_dict(data["binning"])
        state.params = TreeParams.model_validate(data["params"])
        state.base_margin = float(data["base_margin"])
        state.trees = [Tree.from_dict(t) for t in data["trees"]]
        state.current = Tree.from_dict(data["current"]) if data["current"] else None
        state.build = [int(v) for v in data["build"]]
        state.derive = [(int(a), int(b), int(c)) for a, b, c in data["derive"]]
        state.open_hists = {
            int(k): np.asarray(v, dtype=np.float64) for k, v in data.get("open_hists", {}).items()
        }
        state.eval_pending = bool(data["eval_pending"])
        state.losses = [float(v) for v in data["losses"]]
        state.valid_aucs = [float(v) for v in data["valid_aucs"]]
        state.valid_kss = [float(v) for v in data["valid_kss"]]
        state.best_trees = int(data["best_trees"])
        state.done = bool(data["done"])
        state.step = int(data["step"])
        return state


def _child_sums(hist: FloatArray, split: Split, binning: TreeBinning) -> tuple[float, float]:
    """Pooled fixed-point gradient and hessian sums of the split's left child."""
    start = int(binning.offsets[split.feature])
    nb = int(binning.n_bins[split.feature])
    block = hist[:, start : start + nb + 1]
    if split.left_categories:
        side = block[:, list(split.left_categories)]
    else:
        side = block[:, : split.threshold + 1]
    g, h = float(side[0].sum()), float(side[1].sum())
    if split.default_left:
        g, h = g + float(block[0, nb]), h + float(block[1, nb])
    return g, h


def base_margin_of(stats: FeatureStats) -> float:
    """The log-odds of the pooled bad rate: every tree starts from it.

    Raises
    ------
    ModelError
        If the pooled rows are all good or all bad.
    """
    rate = stats.positive_rate
    if rate is None or not 0.0 < rate < 1.0:
        raise ModelError(f"the pooled bad rate must be strictly between 0 and 1; got {rate}")
    return math.log(rate / (1.0 - rate))


def fit_central(
    shards: Sequence[Shard],
    binning: TreeBinning,
    params: TreeParams,
    *,
    base_margin: float,
) -> BoostingState:
    """Boost over in-memory shards: the oracle for the federated run (same steps, plain sums)."""
    state = BoostingState(binning, params, base_margin=base_margin)
    while not state.done:
        total = np.zeros(state.vector_length)
        for shard in shards:
            total += state.local_vector(shard)
        state.apply(total)
    return state


class TreeModel:
    """A released forest as scorers use it: raw rows -> bin codes -> log-odds.

    Mirrors the parts of :class:`~fedrisk.ml.pipeline.RiskPipeline` that scoring uses
    (``transform``, ``transform_records``, ``scorer_.logits``, ``predict_proba``), so the
    scoring service and the simulations handle both kinds alike. The transformed matrix holds
    bin codes as float32 (exact: codes are small integers).
    """

    def __init__(self, forest: Forest) -> None:
        self.forest = forest
        self.scorer_ = self

    @property
    def schema(self) -> DatasetSchema:
        """The schema the trees were trained on."""
        return self.forest.binning.schema

    def transform(self, frame: pd.DataFrame) -> npt.NDArray[np.float32]:
        """Bin codes of ``frame``'s rows."""
        return self.forest.binning.transform(frame).astype(np.float32)

    def transform_records(self, records: Sequence[Mapping[str, object]]) -> npt.NDArray[np.float32]:
        """Bin codes of plain mappings."""
        return self.forest.binning.transform_records(records).astype(np.float32)

    def logits(self, x: npt.ArrayLike) -> FloatArray:
        """Log-odds of default from bin codes (1-D: one row)."""
        codes = np.asarray(x)
        if codes.ndim == 1:
            codes = codes.reshape(1, -1)
        n_features = len(self.forest.binning.features)
        if codes.ndim != 2 or codes.shape[1] != n_features:
            raise ModelError(f"x must have shape (n, {n_features}); got {codes.shape}")
        return self.forest.margins(codes.astype(np.int32))

    def predict_proba(self, frame: pd.DataFrame) -> FloatArray:
        """Probability of default per row."""
        return sigmoid(self.logits(self.transform(frame)))
