"""The names of the datasets fedrisk can load, known without loading anything.

Kept apart from :mod:`fedrisk.data.datasets` (which needs numpy and pandas) so the ``fedrisk``
CLI can refuse an unknown dataset name before any heavy import.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DATASET_NAMES",
    "DERIVED_DATASET_NAMES",
    "LOADABLE_DATASET_NAMES",
    "VERTICAL_DATASET_NAMES",
]

DATASET_NAMES: Final[tuple[str, ...]] = (
    "synthetic",
    "taiwan",
    "fate-homo",
    "fate-hetero",
    "give-credit",
    "german",
    "lending-club",
    "credit-data",
)
"""The generated dataset and the datasets shipped as files."""

DERIVED_DATASET_NAMES: Final[tuple[str, ...]] = ("taiwan-collection",)
"""Datasets computed from a real file on load; :func:`~fedrisk.data.datasets.load_dataset`
accepts them too.

Kept apart from :data:`DATASET_NAMES` (the datasets shipped as files) so code iterating over
the shipped files is unchanged.
"""

LOADABLE_DATASET_NAMES: Final[tuple[str, ...]] = (*DATASET_NAMES, *DERIVED_DATASET_NAMES)
"""Every name :func:`~fedrisk.data.datasets.load_dataset` accepts."""

VERTICAL_DATASET_NAMES: Final[tuple[str, ...]] = (
    "fate-hetero",
    "synthetic-vertical",
    "taiwan-3way",
)
"""Every name :func:`~fedrisk.data.vertical.load_vertical` accepts (``--layout vertical``)."""
