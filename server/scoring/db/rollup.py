"""The ``feature_bin_counts`` rollup: how its rows are counted, added to and rebuilt.

Each writer batch adds its own counts in the transaction that inserts its bins, one upsert per
distinct key, so the rollup always equals ``decision_feature_bins`` grouped by decision month,
stage, role, feature and bin. Keys are upserted in sorted order: two transactions adding to the
same keys then lock them in the same order and cannot deadlock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

from sqlalchemy import delete, func, insert, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from server.scoring.db.tables import decision_feature_bins, decisions, feature_bin_counts

KEY: Final = ("month", "stage", "role", "feature", "bin")
UPSERT_QMARK: Final = (
    f"INSERT INTO feature_bin_counts ({', '.join(KEY)}, n) VALUES (?, ?, ?, ?, ?, ?) "
    f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET n = feature_bin_counts.n + excluded.n"
)
"""The upsert for a plain DB-API ``qmark`` driver (SQLite's), one parameter tuple per key."""

CountKey = tuple[str, str, str, str, int]


def batch_counts(
    decided: Iterable[tuple[Mapping[str, Any], Mapping[str, int]]],
) -> list[tuple[Any, ...]]:
    """``(month, stage, role, feature, bin, n)`` of a batch of (decision row, feature bins), one
    per distinct key, in key order."""
    counts: Counter[CountKey] = Counter()
    for row, bins in decided:
        month = str(row["created_at"])[:7]
        for feature, b in bins.items():
            counts[(month, str(row["stage"]), str(row["role"]), feature, int(b))] += 1
    return [(*key, n) for key, n in sorted(counts.items())]


def add_counts(connection: Connection, counts: list[tuple[Any, ...]]) -> None:
    """Add ``counts`` (from :func:`batch_counts`) to the rollup in the caller's transaction."""
    if not counts:
        return
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(UPSERT_QMARK, counts)
        return
    statement = postgresql.insert(feature_bin_counts)
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=list(KEY), set_={"n": feature_bin_counts.c.n + statement.excluded.n}
        ),
        [dict(zip((*KEY, "n"), c, strict=True)) for c in counts],
    )


def rebuild_counts(connection: Connection) -> None:
    """Recount the whole rollup from the stored bins (after a bulk load, or rows deleted
    outside the writer)."""
    month = func.substr(decisions.c.created_at, 1, 7)
    bins = decision_feature_bins
    grouped = (
        select(month, decisions.c.stage, decisions.c.role, bins.c.feature, bins.c.bin, func.count())
        .join_from(bins, decisions, decisions.c.decision_id == bins.c.decision_id)
        .group_by(month, decisions.c.stage, decisions.c.role, bins.c.feature, bins.c.bin)
    )
    connection.execute(delete(feature_bin_counts))
    connection.execute(insert(feature_bin_counts).from_select([*KEY, "n"], grouped))
