"""Exact path-dependent TreeSHAP for :class:`~fedrisk.ml.trees.Forest`, vectorised over rows.

Path-dependent TreeSHAP (Lundberg et al. 2020) explains a tree by the game
``v(S) = E[f(x) | x_S]``, where an unknown feature follows both branches weighted by the
training cover. Restricted to one leaf ``ℓ`` with value ``w`` and unique path features ``U``
(``d = |U|``), the game is a product: ``v_ℓ(S) = w · Π_{j∈S} o_j · Π_{j∈U∖S} z_j``, with ``z_j``
the product of the cover ratios of ``j``'s nodes on the path and ``o_j`` = 1 when the row takes
the path's direction at every one of them. Its Shapley values are

    φ_i = w (o_i − z_i) Σ_{S ⊆ U∖{i}, S ⊆ ones(o)} |S|!(d−|S|−1)!/d! · Π_{j∈U∖S∖{i}} z_j

and depend on the row only through the bit pattern ``o`` (at most ``2^max_depth`` of them). So
every (tree, leaf, pattern) gets its contributions once, at load time, in float64; explaining a
batch is then: evaluate every path condition, form each leaf's pattern, gather, and add per
feature. The contributions plus :attr:`TreeExplainer.expected_value` sum to the forest's margin
to float64 rounding (the efficiency property holds leaf by leaf).
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import numpy.typing as npt

from fedrisk.errors import ModelError
from fedrisk.ml.trees import CodeArray, FloatArray, Forest, Tree

__all__ = ["TreeExplainer"]

# Rows explained per chunk: bounds the (rows × trees × leaves × depth) temporaries.
_CHUNK_ROWS = 256


def _leaf_paths(tree: Tree) -> list[tuple[int, list[tuple[int, bool]]]]:
    """Every leaf with its path: (split node, went left) from the root down."""
    out: list[tuple[int, list[tuple[int, bool]]]] = []
    stack: list[tuple[int, list[tuple[int, bool]]]] = [(0, [])]
    while stack:
        node, path = stack.pop()
        if tree.feature[node] < 0:
            out.append((node, path))
            continue
        stack.append((tree.right[node], [*path, (node, False)]))
        stack.append((tree.left[node], [*path, (node, True)]))
    out.sort()
    return out


def _shapley_table(value: float, zeros: FloatArray) -> FloatArray:
    """Contributions ``(2^d, d)`` of one leaf's product game for every pattern of ``o``."""
    d = zeros.shape[0]
    n = 1 << d
    masks = np.arange(n)
    bits = (masks[:, None] >> np.arange(d)[None, :]) & 1  # (n, d): is j in the mask
    size = bits.sum(axis=1)
    # Π_{j ∉ S} z_j for every subset S.
    z_out = np.prod(np.where(bits == 1, 1.0, zeros[None, :]), axis=1)
    weight = np.array(
        [
            math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d) if s < d else 0.0
            for s in size
        ]
    )
    # A[b, S] = 1 when S ⊆ ones(b).
    subset = (masks[None, :] & ~masks[:, None]) == 0
    table = np.zeros((n, d))
    for i in range(d):
        excl = bits[:, i] == 0
        g = np.where(excl, weight * z_out / zeros[i], 0.0)
        table[:, i] = value * (bits[:, i] - zeros[i]) * (subset.astype(np.float64) @ g)
    return table


class TreeExplainer:
    """Per-feature path-dependent TreeSHAP values of a :class:`Forest`'s margin.

    Raises
    ------
    ModelError
        If a split node has no cover (TreeSHAP weighs branches by it).
    """

    def __init__(self, forest: Forest) -> None:
        self.forest = forest
        n_features = len(forest.binning.features)
        self.n_features = n_features
        depth = max((max(t.depth) for t in forest.trees), default=0)
        n_leaves = max((sum(1 for f in t.feature if f < 0) for t in forest.trees), default=1)
        n_trees = len(forest.trees)
        self._depth = depth
        # Per (tree, leaf, path position): node, direction (left), slot of its feature.
        self._node = np.zeros((n_trees, n_leaves, max(depth, 1)), dtype=np.int64)
        self._left = np.ones((n_trees, n_leaves, max(depth, 1)), dtype=bool)
        self._pad = np.ones((n_trees, n_leaves, max(depth, 1)), dtype=bool)
        self._slot_bit = np.zeros((n_trees, n_leaves, max(depth, 1)), dtype=np.int64)
        self._full = np.zeros((n_trees, n_leaves), dtype=np.int64)
        # Per (tree, leaf, slot): the feature (n_features = none) and the pattern table.
        self._slot_feature = np.full((n_trees, n_leaves, max(depth, 1)), n_features, np.int64)
        self._table = np.zeros((n_trees, n_leaves, 1 << depth, max(depth, 1)))
        expected = forest.base_margin
        for t, tree in enumerate(forest.trees):
            for li, (leaf, path) in enumerate(_leaf_paths(tree)):
                unique: list[int] = []
                zeros: list[float] = []
                for p, (node, went_left) in enumerate(path):
                    feature = tree.feature[node]
                    child = tree.left[node] if went_left else tree.right[node]
                    if tree.cover[node] <= 0:
                        raise ModelError(f"tree {t} node {node} must have a positive cover")
                    ratio = tree.cover[child] / tree.cover[node]
                    if feature not in unique:
                        unique.append(feature)
                        zeros.append(1.0)
                    slot = unique.index(feature)
                    zeros[slot] *= ratio
                    self._node[t, li, p] = node
                    self._left[t, li, p] = went_left
                    self._pad[t, li, p] = False
                    self._slot_bit[t, li, p] = 1 << slot
                d = len(unique)
                z = np.asarray(zeros)
                expected += tree.value[leaf] * float(np.prod(z)) if d else tree.value[leaf]
                self._full[t, li] = (1 << d) - 1
                if d:
                    self._slot_feature[t, li, :d] = unique
                    self._table[t, li, : 1 << d, :d] = _shapley_table(tree.value[leaf], z)
        self.expected_value = float(expected)
        """The base value: the margin when no feature is known (base margin + mean leaves)."""
        # One-hot map from (tree, leaf, slot) to feature, for one matrix product per chunk.
        flat = self._slot_feature.reshape(-1)
        self._to_feature = np.zeros((flat.shape[0], n_features + 1))
        self._to_feature[np.arange(flat.shape[0]), flat] = 1.0
        self._to_feature = self._to_feature[:, :n_features]
        self._tree_ix = np.arange(n_trees)[None, :, None]
        self._leaf_ix = np.arange(n_leaves)[None, None, :]
        self._goes_left = forest._goes_left
        self._feature = forest._feature

    def shap_values(self, codes: CodeArray) -> FloatArray:
        """Contributions ``(n, n_features)`` to the margin; with :attr:`expected_value` they sum
        to :meth:`Forest.margins`."""
        codes = np.asarray(codes, dtype=np.int32)
        n = codes.shape[0]
        out = np.zeros((n, self.n_features))
        n_trees = len(self.forest.trees)
        if n == 0 or n_trees == 0 or self._depth == 0:
            return out
        t_idx = np.arange(n_trees)[:, None, None]
        feat = self._feature[t_idx, self._node]  # (T, L, D)
        for start, stop in pairwise([*range(0, n, _CHUNK_ROWS), n]):
            rows = codes[start:stop]
            code = rows[:, feat]  # (r, T, L, D)
            went = self._goes_left[t_idx[None], self._node[None], code]
            ok = (went == self._left[None]) | self._pad[None]
            fails = np.bitwise_or.reduce(np.where(ok, 0, self._slot_bit[None]), axis=-1)
            pattern = self._full[None] & ~fails  # (r, T, L)
            phi = self._table[self._tree_ix, self._leaf_ix, pattern]  # (r, T, L, D)
            out[start:stop] = phi.reshape(stop - start, -1) @ self._to_feature
        return out

    def shap_values_of(self, x: npt.NDArray[np.float32]) -> FloatArray:
        """:meth:`shap_values` of a :class:`~fedrisk.ml.trees.TreeModel`'s transformed rows."""
        return self.shap_values(np.asarray(x).astype(np.int32))
