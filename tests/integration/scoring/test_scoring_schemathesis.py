"""Property-based API fuzzing with schemathesis against a real server: no input may yield a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from server.scoring.apikeys import Role
from tests.support.scoring import ScoringServer, bearer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_EXAMPLES = 15
"""Examples per operation and generation mode (bounded: the file stays well under a minute)."""


def fuzz(
    strategy: Any, base_url: str, checks: list[Any], headers: dict[str, str]
) -> Callable[[], None]:
    """A bounded hypothesis run sending generated cases to ``base_url`` with ``headers`` and
    checking answers."""

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, timeout=15, headers=headers)
        case.validate_response(response, checks=checks)

    return run  # type: ignore[no-any-return]


def test_no_generated_request_gets_a_server_error(shared_server: ScoringServer) -> None:
    # arrange: the admin key, which may call every route (access itself is tested elsewhere)
    headers = bearer(shared_server.keys[Role.ADMIN])
    schema = schemathesis.openapi.from_url(
        f"{shared_server.base_url}/openapi.json", headers=headers
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    failures: list[str] = []
    exercised = 0

    # act
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                strategy = operation.as_strategy(generation_mode=mode)
            except Exception as e:  # an operation schemathesis cannot generate for in this mode
                failures.append(f"{operation.label} [{mode.value}]: cannot generate: {e}")
                continue
            checks: list[Any] = [not_a_server_error]
            if mode is GenerationMode.POSITIVE:
                checks.append(response_schema_conformance)
            try:
                fuzz(strategy, shared_server.base_url, checks, headers)()
                exercised += 1
            except Unsatisfiable:
                # nothing to negate (no parameters, or free-form path strings): nothing to send
                continue
            except Exception as e:
                failures.append(f"{operation.label} [{mode.value}]: {str(e)[:800]}")

    # assert
    assert exercised >= len(operations), failures
    assert not failures, "\n".join(failures)
    assert "Internal Server Error" not in shared_server.log()
