"""Fixtures of the party-service tests: each module gets its own two live host services."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.feature_hosts import HostServices, running_host_services


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostServices]:
    """Two hosts' feature services on 127.0.0.1 (mutual TLS), stopped by PID after the module."""
    with running_host_services(tmp_path_factory.mktemp("hosts")) as running:
        yield running
