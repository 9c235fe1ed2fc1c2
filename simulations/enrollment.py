"""Enrol a whole federation on one machine, in the order the roles do it by hand.

Each party runs ``party init`` (its keys are born in its own folder), the coordinator runs
``provision`` with the parties' public requests only, and each party runs ``party join`` with the
public bundle it got back. Used by the local deployment, the demo, the benchmarks and the tests,
so they all rest on keys that only their owner ever held.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from clients.enrollment import init_party, join_federation, request_path
from server.coordinator.provisioning import (
    ProvisionResult,
    default_bundles_dir,
    provision_workspace,
)


def default_parties_dir(workspace: Path) -> Path:
    """``WORKSPACE-parties`` beside the workspace: stands for the parties' own machines."""
    workspace = Path(workspace).resolve()
    return workspace.parent / f"{workspace.name}-parties"


def enroll_parties(
    workspace: Path,
    *,
    parties: Sequence[str],
    parties_dir: Path | None = None,
    bundles_dir: Path | None = None,
    lead: str | None = None,
    hosts: Sequence[str] = (),
    schema_file: Path | None = None,
    validity_days: int = 365,
) -> ProvisionResult:
    """``party init`` for each party, ``provision`` with their requests, ``party join`` for each.

    Returns
    -------
    ProvisionResult
        As :func:`provision_workspace` returns it, except that ``bundles`` maps each party to its
        own folder (its keys plus the merged public bundle): what ``--bundle`` takes afterwards.
    """
    workspace = Path(workspace).resolve()
    parties_root = Path(parties_dir) if parties_dir else default_parties_dir(workspace)
    folders = {name: parties_root / name for name in parties}
    for name, folder in folders.items():
        init_party(name, folder)
    result = provision_workspace(
        workspace,
        requests=[request_path(folder) for folder in folders.values()],
        hosts=hosts,
        lead=lead,
        bundles_dir=bundles_dir or default_bundles_dir(workspace),
        schema_file=schema_file,
        validity_days=validity_days,
    )
    for name, folder in folders.items():
        join_federation(folder, result.bundles[name])
    return dataclasses.replace(result, bundles=folders)
