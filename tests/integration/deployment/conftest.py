"""Fixtures for the deployment tests: a provisioned federation and its schema file.

The federation's party names, schema and data writer live in ``tests.support.federation``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrisk.data.schema import write_schema
from server.coordinator.provisioning import ProvisionResult
from simulations.enrollment import enroll_parties
from tests.support.federation import PARTIES, SCHEMA
from tests.support.processes import process_registry  # noqa: F401  (fixture)


@pytest.fixture
def schema_file(tmp_path: Path) -> Path:
    path = tmp_path / "schema.toml"
    write_schema(SCHEMA, path)
    return path


@pytest.fixture
def federation(tmp_path: Path, schema_file: Path) -> ProvisionResult:
    """A freshly provisioned three-party federation; ``bundles`` are the parties' own folders."""
    return enroll_parties(tmp_path / "coordinator", parties=PARTIES, schema_file=schema_file)
