"""The credit lifecycle stages a model is trained and released for, importable without pandas.

``application`` (A-card: whether to lend), ``behaviour`` (B-card: how an open account is doing)
and ``collection`` (C-card: whether a delinquent account cures). Artifacts, run configs, the
scoring service and the ``fedrisk`` CLI share this one closed set.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = ["STAGES", "Stage"]

Stage = Literal["application", "behaviour", "collection"]

STAGES: Final[tuple[Stage, ...]] = get_args(Stage)
