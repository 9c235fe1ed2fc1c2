"""The lender's side of vertical scoring: ask every host's feature service at once, with a
deadline, and add what came back to the guest's own part.

A host that is down, slow or does not know the customer is a *missing* part, scored as in
training: zero contribution. The decision lists the missing parts; it is never an error for
the applicant.

Masking: with two or more hosts the services mask their parts with pairwise zero-sum masks
(``clients.feature_service``), so the lender reads only their sum. The masks cancel only when
every host answered (a host that does not know the customer still answers, with its mask
share); if one masked host is down or late, the others' answers are useless masked numbers, and
every host part is then missing.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import httpx
import numpy as np
import pandas as pd
from pydantic import ValidationError

from fedrisk.federation.identifiers import IdentifierKey, IdentifierKind
from fedrisk.federation.online_scoring import PARTIAL_SCORE_PATH, ScoreAnswer
from fedrisk.release.vertical import VerticalPart

MissingWhy = Literal["down", "slow", "unknown", "refused", "masks-incomplete"]


@dataclass(frozen=True)
class HostParts:
    """What the hosts contributed to one decision."""

    total: float
    """The sum of the host parts that count (0 where parts are missing)."""
    missing: dict[str, MissingWhy] = field(default_factory=dict)
    reasons: list[tuple[str, str]] = field(default_factory=list)
    """(code, text) of each host that knew the customer and named a risk-raising group."""


@dataclass(frozen=True)
class VerticalDecisionScore:
    """The vertical model's logit and PD for one applicant, and which parts were missing."""

    logit: float
    pd: float
    hosts: HostParts


class HostClient:
    """Calls the hosts' feature services concurrently over mutual TLS, with a deadline."""

    def __init__(
        self,
        urls: Mapping[str, str],
        *,
        tls: ssl.SSLContext,
        deadline: float = 0.25,
        max_connections: int = 64,
    ) -> None:
        if deadline <= 0:
            raise ValueError(f"deadline must be positive seconds; got {deadline}")
        self.urls = dict(urls)
        self.deadline = deadline
        self._client = httpx.AsyncClient(
            verify=tls,
            timeout=httpx.Timeout(deadline),
            limits=httpx.Limits(max_connections=max_connections),
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def _ask(self, host: str, body: dict[str, str]) -> tuple[str, ScoreAnswer | MissingWhy]:
        try:
            response = await self._client.post(f"{self.urls[host]}{PARTIAL_SCORE_PATH}", json=body)
        except httpx.TimeoutException:
            return host, "slow"
        except httpx.HTTPError:
            return host, "down"
        if response.status_code != 200:
            return host, "refused"
        try:
            answer = ScoreAnswer.model_validate_json(response.content)
        except ValidationError:
            return host, "refused"
        if answer.request_id != body["request_id"] or answer.model_id != body["model_id"]:
            return host, "refused"
        return host, answer

    async def parts(self, *, customer_hash: str, request_id: str, model_id: str) -> HostParts:
        """Every host's part for one customer (keyed hash), missing ones as zero."""
        body = {"request_id": request_id, "customer": customer_hash, "model_id": model_id}
        tasks = [self._ask(h, body) for h in sorted(self.urls)]
        try:
            results = await asyncio.wait_for(asyncio.gather(*tasks), timeout=self.deadline * 2)
        except TimeoutError:
            return HostParts(total=0.0, missing={h: "slow" for h in self.urls})
        answers = {h: a for h, a in results if isinstance(a, ScoreAnswer)}
        missing: dict[str, MissingWhy] = {h: a for h, a in results if isinstance(a, str)}
        if missing and any(a.masked for a in answers.values()):
            # The answers that came are masked, and their masks cancel only with the missing
            # hosts' shares: none of them can be used.
            for host in answers:
                missing[host] = "masks-incomplete"
            return HostParts(total=0.0, missing=dict(sorted(missing.items())))
        total = 0.0
        reasons = []
        for host, answer in sorted(answers.items()):
            total += answer.score
            if answer.status == "unknown":
                missing[host] = "unknown"
            elif answer.reason is not None:
                reasons.append((answer.reason.code, answer.reason.text))
        if not math.isfinite(total):
            return HostParts(total=0.0, missing={h: "refused" for h in self.urls})
        return HostParts(total=total, missing=dict(sorted(missing.items())), reasons=reasons)


async def vertical_score(
    guest: VerticalPart,
    features: Mapping[str, object],
    *,
    customer: str,
    id_kind: IdentifierKind,
    key: IdentifierKey,
    hosts: HostClient,
    request_id: str,
) -> VerticalDecisionScore:
    """The guest's part on its own features plus the hosts' parts: logit and PD.

    ``customer`` is the applicant's canonical identifier; only its keyed hash leaves the lender.
    """
    if guest.role != "guest":
        raise ValueError(f"guest part must be the guest's; got the {guest.role}'s")
    frame = pd.DataFrame([dict(features)])
    own = float(guest.partial_scores(frame)[0])
    parts = await hosts.parts(
        customer_hash=key.keyed_hash(customer, kind=id_kind),
        request_id=request_id,
        model_id=guest.model_id,
    )
    logit = own + parts.total
    return VerticalDecisionScore(logit=logit, pd=float(1.0 / (1.0 + np.exp(-logit))), hosts=parts)
