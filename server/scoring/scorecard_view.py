"""``fedrisk scorecard show``: a released points scorecard as the table a credit committee reads.

The artifact's signature is verified first (against the registry's ``trusted_keys/`` beside it,
or ``--trusted-keys``), so what is printed is what the releasing party signed.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedrisk.errors import FedRiskError
from fedrisk.ml.woe import SPECIAL_BIN
from fedrisk.release.artifact import (
    ARTIFACT_FILE,
    TRUSTED_KEYS_DIR,
    ModelArtifact,
    load_trusted_keys,
    read_artifact,
)

__all__ = ["render_scorecard", "scorecard_app"]

scorecard_app = typer.Typer(
    help="Points scorecards: print a released scorecard's bins, WOE, IV and points.",
    no_args_is_help=True,
)


def render_scorecard(artifact: ModelArtifact) -> Table:
    """The points table of a scorecard artifact, strongest feature first, one section each.

    Raises
    ------
    FedRiskError
        If the artifact is not a scorecard.
    """
    rows = artifact.points_table
    if rows is None:
        raise FedRiskError(
            f"artifact {artifact.model_id} must be a scorecard to show its points table; "
            f"got a {artifact.model_kind} model"
        )
    scaling = artifact.scorecard
    table = Table(
        title=f"Scorecard {artifact.model_id} ({artifact.stage or 'no stage'})",
        caption=f"{scaling.base_score:g} points at good:bad odds {scaling.base_odds:g}:1, "
        f"{scaling.pdo:g} points to double the odds; a bin's points are what an applicant in it "
        "scores for that feature",
    )
    for column, justify in (
        ("feature", "left"),
        ("bin", "left"),
        ("count", "right"),
        ("bad rate", "right"),
        ("WOE", "right"),
        ("IV", "right"),
        ("points", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    totals: dict[str, float] = defaultdict(float)
    for row in rows:
        totals[row.feature] += row.iv
    current = None
    # An empty missing bin still scores (an applicant may arrive with the value missing); the
    # table leaves it out, and --json keeps every row.
    for row in (r for r in rows if r.count > 0 or r.bin != SPECIAL_BIN):
        first = row.feature != current
        if first and current is not None:
            table.add_section()
        current = row.feature
        table.add_row(
            f"{row.feature} (IV {totals[row.feature]:.3f})" if first else "",
            row.bin,
            str(row.count),
            "" if row.bad_rate is None else f"{row.bad_rate:.1%}",
            f"{row.woe:+.3f}",
            f"{row.iv:.4f}",
            f"{row.points:.1f}",
        )
    return table


def _registry_keys(artifact: Path) -> Path:
    directory = artifact.parent if artifact.name == ARTIFACT_FILE else artifact
    return directory.parent / TRUSTED_KEYS_DIR


@scorecard_app.command("show")
def show(
    artifact: Annotated[
        Path, typer.Argument(exists=True, help="Artifact directory REGISTRY/<model_id>")
    ],
    trusted_keys: Annotated[
        Path | None,
        typer.Option(
            exists=True, file_okay=False, help="Trusted keys (default: REGISTRY/trusted_keys)"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON")] = False,
) -> None:
    """Verify a scorecard artifact's signature and print its points table."""
    # Off a terminal rich assumes 80 columns, which folds every bin label in two.
    console = Console(width=None if sys.stdout.isatty() else 120)
    try:
        loaded = read_artifact(
            artifact, trusted_keys=load_trusted_keys(trusted_keys or _registry_keys(artifact))
        )
        table = render_scorecard(loaded)
    except FedRiskError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from e
    if as_json:
        rows = [row.model_dump(mode="json") for row in loaded.points_table or []]
        console.print_json(json.dumps(rows))
        return
    console.print(table)
    dropped = loaded.preprocessing.get("dropped")
    if isinstance(dropped, dict) and dropped:
        console.print(
            "Not in the scorecard: " + "; ".join(f"{k} ({v})" for k, v in dropped.items())
        )
