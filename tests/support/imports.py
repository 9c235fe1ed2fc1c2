"""Which modules a fresh interpreter imports: ``python -X importtime`` in a subprocess.

``-X importtime`` logs every module the moment it is imported, so a module imported and later
dropped from ``sys.modules`` is still seen.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

HEAVY_MODULES = ("torch", "tenseal", "flwr")
"""What a command must not import before it knows its arguments are sound."""

_IMPORT_LINE = "import time:"


@dataclass(frozen=True)
class ImportTrace:
    """A finished interpreter: exit code, what it printed, and every module it imported."""

    returncode: int
    output: str
    """stdout and stderr, without the import-time lines."""
    modules: frozenset[str]

    def imported(self, *roots: str) -> list[str]:
        """The modules among ``roots`` (or their submodules) that were imported, sorted."""
        return sorted(
            root
            for root in roots
            if any(m == root or m.startswith(f"{root}.") for m in self.modules)
        )


def trace_imports(*args: str, timeout: float = 180.0) -> ImportTrace:
    """Run ``python -X importtime ARGS`` with a wide terminal; trace what it imports."""
    # A wide terminal keeps rich from wrapping an error message across lines.
    env = {**os.environ, "COLUMNS": "300", "FLWR_TELEMETRY_ENABLED": "0"}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    modules: set[str] = set()
    other: list[str] = []
    for line in proc.stderr.splitlines():
        if line.startswith(_IMPORT_LINE):
            name = line.rsplit("|", 1)[-1].strip()
            if name != "imported package":  # the header line
                modules.add(name)
        else:
            other.append(line)
    return ImportTrace(
        returncode=proc.returncode,
        output=proc.stdout + "\n".join(other),
        modules=frozenset(modules),
    )
