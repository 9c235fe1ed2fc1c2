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
import secrets
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
import numpy as np
import pandas as pd
from pydantic import ValidationError

from fedrisk.decisions.reasons import ReasonCode
from fedrisk.federation.identifiers import (
    IdentifierError,
    IdentifierKey,
    IdentifierKind,
    normalise_identifier,
)
from fedrisk.federation.online_scoring import (
    KEEP_ALIVE_SECONDS,
    MAX_BATCH,
    PARTIAL_SCORES_PATH,
    ScoreAnswer,
    ScoreBatch,
    ScoreBatchAnswer,
    ScoreRequest,
)
from fedrisk.ml.inference import sigmoid
from fedrisk.release.vertical import VerticalPart
from server.scoring.settings import Settings
from server.scoring.vertical_models import VerticalModel

MissingWhy = Literal["down", "slow", "unknown", "refused", "masks-incomplete", "unconfigured"]
"""Why a host's part is missing: not reachable, later than the deadline, does not know the
customer, answered something unusable, masked while another host's mask share is missing, or
no URL configured for it."""


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
    """Calls the hosts' feature services concurrently over mutual TLS, with a deadline.

    Notes
    -----
    The questions of the decisions in flight in one event-loop turn go to each host as one
    batch (``POST /v1/partial-scores``, each question with its own request id and mask, as if
    asked alone): under 16 concurrent decisions that divides the per-request cost on both
    sides, which was most of a vertical decision's CPU; an idle service sends batches of one.
    One aiohttp session (opened on first use, inside the caller's event loop) keeps its TLS
    connections alive across decisions, so a decision costs two requests on open connections,
    not two handshakes. aiohttp rather than httpx: under 16 concurrent decisions httpx's pool
    cost the lender about 5 ms of CPU per decision (its pool scans every connection for every
    request, and without ``sniffio`` httpcore retries a failed import on each call), aiohttp
    about 0.4 ms (``benchmarks/vertical_hosts.py``).
    """

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
        self._tls = tls
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._queued: dict[
            str, list[tuple[ScoreRequest, asyncio.Future[ScoreAnswer | MissingWhy]]]
        ] = {}
        self._sending: set[asyncio.Task[None]] = set()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    ssl=self._tls,
                    limit=self._max_connections,
                    # below the hosts' keep-alive (clients.feature_service.KEEP_ALIVE_SECONDS):
                    # the lender drops an idle connection before the host does
                    keepalive_timeout=KEEP_ALIVE_SECONDS,
                ),
                timeout=aiohttp.ClientTimeout(total=self.deadline),
                headers={"content-type": "application/json"},
            )
        return self._session

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, url: str, body: bytes) -> tuple[int, bytes]:
        async with self._client().post(url, data=body) as response:
            return response.status, await response.read()

    def _ask(self, host: str, question: ScoreRequest) -> asyncio.Future[ScoreAnswer | MissingWhy]:
        """Queue a question for ``host``; the questions queued in one event-loop turn go in
        one batch (:meth:`_flush`)."""
        future: asyncio.Future[ScoreAnswer | MissingWhy] = (
            asyncio.get_running_loop().create_future()
        )
        queue = self._queued.setdefault(host, [])
        queue.append((question, future))
        if len(queue) == 1:
            asyncio.get_running_loop().call_soon(self._flush, host)
        return future

    def _flush(self, host: str) -> None:
        batch = self._queued.pop(host, [])
        for start in range(0, len(batch), MAX_BATCH):
            task = asyncio.create_task(self._send(host, batch[start : start + MAX_BATCH]))
            self._sending.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._sending.discard)

    async def _send(
        self, host: str, batch: list[tuple[ScoreRequest, asyncio.Future[ScoreAnswer | MissingWhy]]]
    ) -> None:
        def settle(outcome: Callable[[ScoreRequest], ScoreAnswer | MissingWhy]) -> None:
            for question, future in batch:
                if not future.done():
                    future.set_result(outcome(question))

        url = f"{self.urls[host]}{PARTIAL_SCORES_PATH}"
        body = ScoreBatch(requests=[q for q, _ in batch]).model_dump_json().encode()
        try:
            try:
                status, content = await self._post(url, body)
            except aiohttp.ServerDisconnectedError:
                # A kept-alive connection the host closed just before it was reused: the
                # request never reached the host, so one fresh try is safe.
                status, content = await self._post(url, body)
        except TimeoutError:
            return settle(lambda _: "slow")
        except (aiohttp.ClientError, OSError):
            return settle(lambda _: "down")
        if status != 200:
            return settle(lambda _: "refused")
        try:
            answers = ScoreBatchAnswer.model_validate_json(content).answers
        except ValidationError:
            return settle(lambda _: "refused")
        by_id = {a.request_id: a for a in answers}

        def outcome(question: ScoreRequest) -> ScoreAnswer | MissingWhy:
            answer = by_id.get(question.request_id)
            if not isinstance(answer, ScoreAnswer) or answer.model_id != question.model_id:
                return "refused"
            return answer

        settle(outcome)

    async def parts(
        self,
        *,
        customer_hash: str,
        request_id: str,
        model_id: str,
        hosts: Sequence[str] | None = None,
    ) -> HostParts:
        """Every host's part for one customer (keyed hash), missing ones as zero.

        ``hosts`` are the model's hosts (default: every configured one); one without a URL is
        missing as ``unconfigured``.
        """
        wanted = sorted(self.urls if hosts is None else hosts)
        question = ScoreRequest(request_id=request_id, customer=customer_hash, model_id=model_id)
        asked = [h for h in wanted if h in self.urls]
        futures = [self._ask(h, question) for h in asked]
        # The decision waits at most the deadline: a host whose answer is not in by then is
        # slow (its batch may still settle later, unread).
        done, _ = await asyncio.wait(futures, timeout=self.deadline) if futures else (set(), set())
        results: list[ScoreAnswer | MissingWhy] = [
            f.result() if f in done else "slow" for f in futures
        ]
        answers = {h: a for h, a in zip(asked, results, strict=True) if isinstance(a, ScoreAnswer)}
        missing: dict[str, MissingWhy] = {
            h: a for h, a in zip(asked, results, strict=True) if isinstance(a, str)
        }
        missing.update({h: "unconfigured" for h in wanted if h not in self.urls})
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
            return HostParts(total=0.0, missing={h: "refused" for h in wanted})
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


@dataclass(frozen=True)
class VerticalAnswer:
    """A vertical model's answer for one applicant: PD, points, reasons and missing parts."""

    pd: float
    score: float
    reasons: list[ReasonCode]
    """The guest's own reasons (most points first), then each host's coded reason (the lender
    learns only the sum of the host parts, so a host reason carries no points: 0)."""
    missing: dict[str, MissingWhy]


class VerticalScorer:
    """The scoring service's side of vertical decisions: who the hosts are, how to reach them
    (mutual TLS, a deadline), and how applicants are named to them (the federation's keyed
    hash of the normalised applicant id).

    The connection pool is opened on first use, inside the serving event loop, and reused by
    every decision (keep-alive: no TLS handshake per call).
    """

    def __init__(
        self,
        urls: Mapping[str, str],
        *,
        tls: ssl.SSLContext,
        key: IdentifierKey,
        id_kind: IdentifierKind,
        country_code: str,
        deadline: float,
    ) -> None:
        self.urls = dict(urls)
        self.tls = tls
        self.key = key
        self.id_kind: IdentifierKind = id_kind
        self.country_code = country_code
        self.deadline = deadline
        self._client: HostClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> VerticalScorer | None:
        """The scorer the settings describe, or None when no host is configured.

        Raises
        ------
        IdentifierError
            The identifier key file is missing, readable by others, or not a key.
        ssl.SSLError, OSError
            The certificate, key or CA cannot be read.
        """
        if not settings.vertical_hosts:
            return None
        # the settings validator made these required together with vertical_hosts
        assert settings.vertical_ca_certificate is not None
        assert settings.vertical_client_certificate is not None
        assert settings.vertical_identifier_key_path is not None
        tls = ssl.create_default_context(cafile=str(settings.vertical_ca_certificate))
        tls.load_cert_chain(
            str(settings.vertical_client_certificate),
            None if settings.vertical_client_key is None else str(settings.vertical_client_key),
        )
        return cls(
            settings.vertical_hosts,
            tls=tls,
            key=IdentifierKey.load(settings.vertical_identifier_key_path),
            id_kind=settings.vertical_id_kind,
            country_code=settings.vertical_country_code,
            deadline=settings.vertical_deadline_seconds,
        )

    def _hosts(self) -> HostClient:
        if self._client is None:
            self._client = HostClient(self.urls, tls=self.tls, deadline=self.deadline)
        return self._client

    async def aclose(self) -> None:
        """Close the connection pool (at shutdown)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def score(
        self,
        model: VerticalModel,
        features: Mapping[str, object],
        *,
        applicant_id: str,
        max_reasons: int,
    ) -> VerticalAnswer:
        """The guest part on the applicant's features plus the hosts' live parts (:func:`combine`).

        An applicant id that does not normalise under the federation's rules cannot be known
        to any host: every host part is then missing as ``unknown`` and no host is asked.
        """
        try:
            canonical = normalise_identifier(
                applicant_id, self.id_kind, default_country_code=self.country_code
            )
        except IdentifierError:
            parts = HostParts(total=0.0, missing=dict.fromkeys(model.hosts, "unknown"))
        else:
            parts = await self._hosts().parts(
                customer_hash=self.key.keyed_hash(canonical, kind=self.id_kind),
                request_id=secrets.token_hex(16),
                model_id=model.model_id,
                hosts=model.hosts,
            )
        return combine(model, features, parts, max_reasons=max_reasons)


def combine(
    model: VerticalModel, features: Mapping[str, object], parts: HostParts, *, max_reasons: int
) -> VerticalAnswer:
    """The guest part on the applicant's features plus what the hosts contributed.

    At most ``max_reasons`` reasons: each host that named one keeps its place, the guest's own
    fill the rest.
    """
    own, reasons = model.own(features)
    logit = own + parts.total
    host_reasons = [
        ReasonCode(code=code, feature=code, text=text, points=0.0) for code, text in parts.reasons
    ]
    return VerticalAnswer(
        pd=float(sigmoid(np.array([logit]))[0]),
        score=float(model.scaling.score_from_logit(np.array([logit]))[0]),
        reasons=[*reasons[: max(0, max_reasons - len(host_reasons))], *host_reasons][:max_reasons],
        missing=parts.missing,
    )
