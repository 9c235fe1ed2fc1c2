"""Fixtures shared by the secure_agg tests: one CKKS context pair per test module."""

from __future__ import annotations

import pytest

from secure_agg.keys import CkksContext, generate_context, public_context
from secure_agg.params import HEParams


@pytest.fixture(scope="module")
def secret_ctx() -> CkksContext:
    """A party's secret context."""
    return generate_context(HEParams())


@pytest.fixture(scope="module")
def server_ctx(secret_ctx: CkksContext) -> CkksContext:
    """The server's public copy of ``secret_ctx``."""
    return public_context(secret_ctx)
