"""Suite-wide test ordering and, under pytest-xdist, how modules are shared between workers.

``make test`` runs the suite on two xdist workers. Two rules keep that as cheap as one process:

- A test module is one unit of work: its module-scoped fixtures (a running federation, a trained
  model, a PostgreSQL database) are built once, on one worker, as without xdist. Tests marked
  ``xdist_group`` stay together across modules.
- Modules that start real processes go first, longest kinds first, so the two workers finish
  together instead of one waiting on a late federation while the other is idle.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

# xdist workers start with COLUMNS=80 in their environment, which a rich Console built at import
# time keeps as a fixed width: tests that print wide tables then see them cut. A worker gets the
# same environment as a plain pytest process.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)

# Kinds of module, longest first (a deployment module starts TLS federations for minutes).
_ORDER = (
    "tests/integration/deployment/",
    "tests/integration/simulation/",
    "tests/integration/scoring/",
    "tests/integration/",
)


def _rank(item: pytest.Item) -> int:
    path = item.nodeid
    for rank, prefix in enumerate(_ORDER):
        if path.startswith(prefix):
            return rank
    return len(_ORDER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A stable sort keeps each module's own order, which its module-scoped fixtures rely on.
    items.sort(key=_rank)


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # plain pytest without the xdist plugin: nothing to schedule
    pass
else:

    class ModuleScheduling(LoadScopeScheduling):
        """One work unit per module (or per ``xdist_group``), handed out in collection order."""

        def _split_scope(self, nodeid: str) -> str:
            # Under --dist loadgroup xdist appends "@<group>" to the ids of grouped tests.
            if nodeid.rfind("@") > nodeid.rfind("]"):
                return nodeid.rsplit("@", 1)[-1]
            return nodeid.split("::", 1)[0]

    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> ModuleScheduling:
        # Collection order already puts the long modules first; xdist's own reorder (by test
        # count) would put a 60-case unit module ahead of a 3-test federation module.
        config.option.loadscopereorder = False
        return ModuleScheduling(config, log)
