"""Fixtures shared by the coordinator's strategy tests over the in-memory grid."""

from __future__ import annotations

import pytest
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from secure_agg.keys import CkksContext, generate_context
from secure_agg.params import HEParams


@pytest.fixture
def serverapp_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Who is sending: Flower's ServerApp runtime sets this in the process before ``main``."""
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", SUPERLINK_NODE_ID)


@pytest.fixture(scope="module")
def secret() -> CkksContext:
    """The federation's secret CKKS context (one per test module)."""
    return generate_context(HEParams())
