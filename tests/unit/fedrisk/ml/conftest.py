"""Fixtures shared by the ML tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Train on one torch thread, then restore the setting for other test modules.

    Small-batch training on a shared 2-core box is 5-20x faster on one thread (no OpenMP
    spin-waits).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
