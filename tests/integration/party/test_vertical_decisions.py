"""The lender's vertical decision: the guest's part plus two live hosts' feature services on
127.0.0.1, called concurrently with a deadline; a host stopped mid-way turns into missing parts,
never an error."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from fedrisk.release.vertical import VerticalPart
from server.scoring.vertical_hosts import HostClient, VerticalDecisionScore, vertical_score
from tests.support.feature_hosts import (
    CUSTOMERS,
    HOSTS,
    HostServices,
    guest_part,
)
from tests.support.processes import stop_pid

pytestmark = pytest.mark.integration


async def _decide(
    services: HostServices, client: HostClient, guest: VerticalPart, income: float, who: str
) -> VerticalDecisionScore:
    return await vertical_score(
        guest,
        {"income": income},
        customer=who,
        id_kind="opaque",
        key=services.key,
        hosts=client,
        request_id=uuid.uuid4().hex,
    )


def test_decisions_add_the_hosts_parts_and_a_stopped_host_becomes_missing(
    services: HostServices,
) -> None:
    guest, frame = guest_part()
    incomes = frame["income"].tolist()

    async def scenario() -> tuple[list[VerticalDecisionScore], list[VerticalDecisionScore]]:
        client = HostClient(services.urls, tls=services.tls(), deadline=2.0)
        try:
            before = await asyncio.gather(
                *(_decide(services, client, guest, incomes[i], c) for i, c in enumerate(CUSTOMERS))
            )
            stop_pid(services.pids["shop"])
            after = await asyncio.gather(
                *(_decide(services, client, guest, incomes[i], c) for i, c in enumerate(CUSTOMERS))
            )
        finally:
            await client.aclose()
        return before, after

    before, after = asyncio.run(scenario())

    own = guest.partial_scores(frame)
    for i, (customer, decision) in enumerate(zip(CUSTOMERS, before, strict=True)):
        plain = sum(services.plain_part(h, customer) for h in HOSTS)
        assert decision.logit == pytest.approx(own[i] + plain, abs=1e-5)
        knows = {h for h in HOSTS if customer in set(services.frames[h]["customer_id"])}
        assert decision.hosts.missing == {h: "unknown" for h in HOSTS if h not in knows}
    # The shop is down: every decision still comes back, with both host parts missing (the
    # telecom's answer is masked and useless without the shop's mask share) and the guest's part.
    assert len(after) == len(CUSTOMERS)
    for i, decision in enumerate(after):
        assert decision.hosts.missing == {"shop": "down", "telecom": "masks-incomplete"}
        assert decision.logit == pytest.approx(own[i], abs=1e-9)
