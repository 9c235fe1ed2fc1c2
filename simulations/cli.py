"""The ``fedrisk`` command line: one entry point for parties, coordinators, lenders and experiments.

A thin dispatcher. :data:`COMMANDS` names, for every command, the role it serves, its one-line
help and where it lives (``"module:attribute"``), so ``fedrisk --help`` lists them all while
importing only typer, click and rich; a role's module is imported when one of its commands runs.
``fedrisk serve`` thus never loads the party's TenSEAL or the experiments' torch, and every
command checks its options before its module imports anything heavy.

The commands live with the role that owns them: the party's in :mod:`clients.cli`, the
coordinator's in :mod:`server.coordinator.cli`, the lender's in :mod:`server.scoring.cli`, the
experiments' in :mod:`simulations.commands` and :mod:`simulations.report_commands`.

Notes
-----
The entry point stays in ``simulations``, the top layer of the import graph (the only package
allowed to depend on every role), although it imports none of them by statement: it names them in
:data:`COMMANDS`, and ``tests/unit/simulations/test_cli.py`` checks that table against the real
commands.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Final

import click
import typer
from typer.core import TyperCommand, TyperGroup

__all__ = ["COMMANDS", "ROLES", "CommandEntry", "app", "load_command", "main"]

ROLES: Final[dict[str, str]] = {
    "party": "Party: a member of the federation, training on its own data (clients/)",
    "coordinator": "Coordinator: the aggregation server, its SuperLink and its runs "
    "(server/coordinator/)",
    "lender": "Lender: the scoring service deciding on applications (server/scoring/)",
    "experiments": "Experiments: simulations, studies and reports on one machine (simulations/)",
}
"""The help panel of each role; the panels appear in this order."""


@dataclass(frozen=True)
class CommandEntry:
    """Where a command lives and what ``fedrisk --help`` says of it, before it is imported."""

    target: str
    """``"module:attribute"``: a typer app (a command group) or a typer command function."""
    help: str
    """The command's one-line help, as its own docstring or typer app says it."""
    role: str
    """A key of :data:`ROLES`."""


COMMANDS: Final[dict[str, CommandEntry]] = {
    "keys": CommandEntry("clients.cli:keys_app", "CKKS key ceremony between the parties.", "party"),
    "party": CommandEntry(
        "clients.cli:party_app",
        "This party's own keys, its federation bundle and its Flower SuperNode.",
        "party",
    ),
    "provision": CommandEntry(
        "server.coordinator.cli:provision",
        "Create the federation CA, the SuperLink certificate and the manifest from party requests.",
        "coordinator",
    ),
    "server": CommandEntry(
        "server.coordinator.cli:server_app",
        "Run the coordinator's Flower SuperLink (TLS + SuperNode authentication).",
        "coordinator",
    ),
    "run": CommandEntry(
        "server.coordinator.cli:run",
        "Submit the encrypted federated run and follow it live; non-zero exit if it fails.",
        "coordinator",
    ),
    "serve": CommandEntry(
        "server.scoring.cli:serve_app",
        "Run the scoring service (FastAPI on uvicorn; every route but /healthz needs an API key).",
        "lender",
    ),
    "audit": CommandEntry("server.scoring.cli:audit_app", "Audit-log tools.", "lender"),
    "models": CommandEntry(
        "server.scoring.cli:models_app",
        "Model registry: list, register, promote, roll back.",
        "lender",
    ),
    "outcomes": CommandEntry(
        "server.scoring.monitoring.cli:outcomes_app",
        "Loan outcomes: import monthly performance (CSV/Parquet), generate a demo portfolio.",
        "lender",
    ),
    "monitor": CommandEntry(
        "server.scoring.monitoring.cli:monitor",
        "Portfolio monitoring (drift, performance, vintages, direction, alerts) as HTML + JSON.",
        "lender",
    ),
    "scorecard": CommandEntry(
        "server.scoring.scorecard_view:scorecard_app",
        "Points scorecards: print a released scorecard's bins, WOE, IV and points.",
        "lender",
    ),
    "simulate": CommandEntry(
        "simulations.commands:simulate",
        "Run an encrypted federation in Flower's simulation engine and compare it with baselines.",
        "experiments",
    ),
    "train-central": CommandEntry(
        "simulations.commands:train_central",
        "Train a centralized baseline on pooled data and print AUC, KS and Gini.",
        "experiments",
    ),
    "demo": CommandEntry(
        "simulations.commands:demo", "The end-to-end demo run by ``make demo``.", "experiments"
    ),
    "scenario": CommandEntry(
        "simulations.report_commands:scenario",
        "Train a lifecycle scenario encrypted and release its signed, stage-tagged artifact.",
        "experiments",
    ),
    "study": CommandEntry(
        "simulations.report_commands:study",
        "Run a simulation study (resumable: cells already in --out are skipped).",
        "experiments",
    ),
    "report": CommandEntry(
        "simulations.report_commands:report",
        "Write the HTML report (PNG plots, results.json) of a simulation study.",
        "experiments",
    ),
}
"""Every ``fedrisk`` command, grouped by role in :data:`ROLES` order."""


def load_command(name: str) -> click.Command:
    """Import the module of command ``name`` and return the command, ready to run.

    Raises
    ------
    KeyError
        If ``name`` is not in :data:`COMMANDS`.
    """
    module_name, _, attribute = COMMANDS[name].target.partition(":")
    found = getattr(importlib.import_module(module_name), attribute)
    if isinstance(found, typer.Typer):
        # get_group, not get_command: a group mounted under fedrisk takes no completion options
        return typer.main.get_group(found)
    single = typer.Typer(add_completion=False)
    single.command(name)(found)
    return typer.main.get_command(single)


class RoleGroup(TyperGroup):
    """The top-level group: lists commands from :data:`COMMANDS`, imports one only to run it.

    Listing (``fedrisk --help``, typo suggestions, completion of names) sees, for each entry, a
    placeholder command carrying its name, one-line help and role panel. Click resolves the
    command it is about to parse and run through :meth:`resolve_command`, which swaps in the
    real one.
    """

    def __init__(self, **attrs: Any) -> None:
        attrs["commands"] = {
            name: TyperCommand(name=name, help=entry.help, rich_help_panel=ROLES[entry.role])
            for name, entry in sorted(
                COMMANDS.items(), key=lambda item: list(ROLES).index(item[1].role)
            )
        }
        super().__init__(**attrs)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Command names in role order (not alphabetical): the help reads role by role."""
        return list(self.commands)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """The real command named by ``args[0]``, imported now."""
        name, placeholder, rest = super().resolve_command(ctx, args)
        if name is None or placeholder is None:
            return name, placeholder, rest
        return name, load_command(name), rest


app = typer.Typer(
    name="fedrisk",
    cls=RoleGroup,
    help="Federated, CKKS-encrypted credit-risk modelling and lifecycle scoring. "
    "Commands are grouped by who runs them: a party, the coordinator, a lender, or an "
    "experimenter on one machine.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """Commands come from :data:`COMMANDS`; nothing to do before one runs."""


# Flower children get these from fedrisk.federation.processes.flower_environment; set here too
# for any Flower code a command imports in this process.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
