"""Decision paths of the scoring service: A-, B- and C-card, each persisted with its audit record.

The decision logic itself (scaling, reasons, policies, fraud rules, graph) lives in ``fedrisk``;
this module wires a request through it and hands the result to the group-commit writer.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from fedrisk.decisions.lifecycle import (
    ApplicationDecision,
    BehaviourSignals,
    CollectionSignals,
    Decision,
    FundsFlow,
    LifecyclePolicy,
    decide_application,
    decide_behaviour,
    decide_collection,
)
from fedrisk.decisions.reasons import ReasonCode
from server.scoring.antifraud import FraudScreen, IdentifierHasher, Screening
from server.scoring.audit import canonical_json
from server.scoring.errors import UnavailableError
from server.scoring.payloads import (
    ApplicationRequest,
    ApplicationResponse,
    BehaviourRequest,
    BehaviourResponse,
    CollectionRequest,
    CollectionResponse,
    FindingOut,
    FraudOut,
    GraphOut,
    ModelRef,
    ReasonOut,
    RuleHitOut,
)
from server.scoring.registry import LoadedModel, ModelRegistry, Role
from server.scoring.settings import Stage
from server.scoring.telemetry import Metrics
from server.scoring.vertical_hosts import HostParts, VerticalScorer, combine
from server.scoring.vertical_models import VerticalModel
from server.scoring.writer import (
    DecisionWrite,
    GroupCommitWriter,
    WriterBusyError,
    WriterClosedError,
)

OUTCOME = {
    Decision.APPROVE: "approve",
    Decision.REVIEW: "manual_review",
    Decision.DECLINE: "decline",
}
"""fedrisk's A-card decisions -> the API's outcome names."""


def new_decision_id() -> str:
    """32 hex chars: nanosecond time, then 64 random bits.

    Time-ordered ids append to the primary-key index instead of touching a random page of it
    on every commit (as a random UUID does), which keeps the group commit small.
    """
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


def fingerprint(body: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a request body (stored instead of the request)."""
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def _reasons_out(reasons: Sequence[ReasonCode]) -> list[ReasonOut]:
    return [
        ReasonOut(code=r.code, feature=r.feature, text=r.text, points=r.points) for r in reasons
    ]


def _reasons_stored(reasons: Sequence[ReasonCode]) -> list[dict[str, object]]:
    return [{"code": r.code, "feature": r.feature, "points": r.points} for r in reasons]


ModelAnswer = tuple[float, float, list[ReasonCode]]
"""PD, score and reason codes of one row."""


class ModelBatcher:
    """Scores the rows of every request waiting in one event-loop turn with one vectorised call.

    Preprocessing and the occlusion forward pass cost nearly the same for 1 row as for 16, so
    under concurrent load coalescing them cuts the per-request model cost several times. An idle
    service pays one extra loop iteration (microseconds): the flush is scheduled with
    ``call_soon`` by the first request and runs right after the requests already ready.
    """

    def __init__(self) -> None:
        self._pending: dict[
            int, tuple[LoadedModel, list[tuple[dict[str, Any], asyncio.Future[ModelAnswer]]]]
        ] = {}
        self._scheduled = False
        self.flushes = 0
        self.rows = 0

    async def score(self, model: LoadedModel, features: dict[str, Any]) -> ModelAnswer:
        """PD, score and reasons of one row (batched with concurrent calls)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ModelAnswer] = loop.create_future()
        entry = self._pending.get(id(model))
        if entry is None:
            self._pending[id(model)] = (model, [(features, future)])
        else:
            entry[1].append((features, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        for model, items in pending.values():
            self.flushes += 1
            self.rows += len(items)
            try:
                answers = _answer(model, [features for features, _ in items])
            except Exception:
                if len(items) == 1:
                    raise
                # isolate the failing row: score one by one
                for features, future in items:
                    if future.done():
                        continue
                    try:
                        future.set_result(_answer(model, [features])[0])
                    except Exception as e:  # handed to that request's handler
                        future.set_exception(e)
                continue
            for (_, future), answer in zip(items, answers, strict=True):
                if not future.done():
                    future.set_result(answer)


def _answer(model: LoadedModel, rows: list[dict[str, Any]]) -> list[ModelAnswer]:
    scored = model.score_records(rows)
    reasons = model.reasons(scored)
    pds, scores = scored.pd.tolist(), scored.score.tolist()
    return [(pds[i], scores[i], reasons[i]) for i in range(len(rows))]


@dataclass(frozen=True)
class _Started:
    """One decision in flight: what was routed, and the id and time it is stored under."""

    stage: Stage
    subject: str
    body: dict[str, Any]
    model: LoadedModel | VerticalModel
    role: Role
    now: datetime
    created_at: str
    decision_id: str

    @property
    def ref(self) -> ModelRef:
        return ModelRef(model_id=self.model.model_id, stage=self.stage, role=self.role)


def _rules_hit(screening: Screening) -> list[str]:
    """Ids of the fraud rules an application hit, plus ``graph_ring`` when it closes a ring."""
    return [hit.rule_id for hit in screening.hits] + (
        ["graph_ring"] if screening.ring.is_ring else []
    )


def _review_item(
    d: _Started, *, rules_hit: list[str], outcome: str, overrides: Sequence[str]
) -> dict[str, Any] | None:
    """The review-queue row of an application: fraud signals first, then a review outcome."""
    if rules_hit:
        review = {"kind": "fraud", "reason": "fraud signals: " + ", ".join(rules_hit)}
    elif outcome == "manual_review":
        review = {"kind": "manual_review", "reason": "; ".join(overrides) or "score in review band"}
    else:
        return None
    return {
        **review,
        "decision_id": d.decision_id,
        "stage": d.stage,
        "status": "open",
        "created_at": d.created_at,
    }


def _application_details(screening: Screening, result: ApplicationDecision) -> dict[str, Any]:
    """What an A-card decision stores beyond score and outcome."""
    return {
        "application_key": screening.application_key,
        "model_decision": OUTCOME[result.model_decision],
        "credit_limit": result.credit_limit,
        "price_tier": result.price_tier,
        "apr": result.apr,
        "overrides": list(result.overrides),
        "component_size": screening.ring.component_size,
    }


def reference_bins(model: LoadedModel | VerticalModel, features: dict[str, Any]) -> dict[str, int]:
    """The applicant's bin in each per-feature reference of the model's release (for CSI):
    only the bin index is stored, never the raw value."""
    if isinstance(model, VerticalModel):
        # A vertical release's guest part carries no feature reference yet: no CSI bins.
        return {}
    reference = getattr(model.artifact, "reference", None)
    if reference is None:
        return {}
    return {f.name: f.bin_of(features.get(f.name)) for f in reference.features}


def _fraud_out(screening: Screening) -> FraudOut:
    """API form of an application's fraud screening."""
    ring = screening.ring
    return FraudOut(
        hits=[
            RuleHitOut(
                rule_id=h.rule_id,
                kind=h.kind,
                severity=h.severity.value,
                action=h.action.value,
                message=h.message,
            )
            for h in screening.hits
        ],
        graph=GraphOut(
            component_size=ring.component_size,
            is_ring=ring.is_ring,
            linked_kinds=list(ring.linked_kinds),
            ignored_hub_kinds=list(ring.ignored_hub_kinds),
        ),
    )


class ScoringService:
    """The three lifecycle decision paths.

    Parameters
    ----------
    registry
        Loaded models and the champion/challenger table.
    policy
        Lifecycle policy (cut-offs, limit and price bands, B/C-card rules).
    screen
        Anti-fraud rules + graph.
    writer
        Group-commit writer; a response is built only after its decision committed.
    hasher
        Hashes subject ids before storage.
    metrics
        Prometheus metrics.
    vertical
        How to reach a vertical model's hosts (None: no host configured, and a vertical
        model's host parts are all missing as ``unconfigured``).
    """

    def __init__(
        self,
        *,
        registry: ModelRegistry,
        policy: LifecyclePolicy,
        screen: FraudScreen,
        writer: GroupCommitWriter,
        hasher: IdentifierHasher,
        metrics: Metrics,
        vertical: VerticalScorer | None = None,
    ) -> None:
        self.registry = registry
        self.policy = policy
        self.screen = screen
        self.writer = writer
        self.hasher = hasher
        self.metrics = metrics
        self.vertical = vertical
        self.batcher = ModelBatcher()

    def _route(
        self, stage: Stage, subject: str, features: dict[str, Any]
    ) -> tuple[LoadedModel | VerticalModel, Role]:
        model, role = self.registry.route_any(stage, subject)
        model.checker.check(features)
        return model, role

    async def _score(
        self, d: _Started, *, max_reasons: int
    ) -> tuple[float, float, list[ReasonCode], dict[str, str] | None]:
        """PD, score and reasons of the routed model; a vertical one also says which host
        parts were missing (never an error: they count as in training, as zero)."""
        if not isinstance(d.model, VerticalModel):
            return (*await self.batcher.score(d.model, d.body["features"]), None)
        if self.vertical is None:
            nobody = HostParts(total=0.0, missing=dict.fromkeys(d.model.hosts, "unconfigured"))
            answer = combine(d.model, d.body["features"], nobody, max_reasons=max_reasons)
        else:
            answer = await self.vertical.score(
                d.model, d.body["features"], applicant_id=d.subject, max_reasons=max_reasons
            )
        return answer.pd, answer.score, answer.reasons, dict(answer.missing)

    async def _whole(self, d: _Started) -> ModelAnswer:
        """PD, score and reasons of a whole (not vertical) model."""
        if isinstance(d.model, VerticalModel):
            raise UnavailableError(
                f"stage {d.stage} is served by vertical model {d.model.model_id}, which scores "
                "applications only"
            )
        return await self.batcher.score(d.model, d.body["features"])

    async def _persist(self, write: DecisionWrite) -> None:
        try:
            await self.writer.submit_decision(write)
        except (WriterBusyError, WriterClosedError) as e:
            raise UnavailableError(str(e)) from e
        except SQLAlchemyError as e:
            # nothing of this decision was committed; the client may retry
            raise UnavailableError("the decision could not be stored; retry later") from e

    def _start(self, stage: Stage, subject: str, body: dict[str, Any]) -> _Started:
        """Route to a model, check the features, and stamp the decision id and time."""
        model, role = self._route(stage, subject, body["features"])
        now = datetime.now(UTC)
        return _Started(
            stage=stage,
            subject=subject,
            body=body,
            model=model,
            role=role,
            now=now,
            created_at=now.isoformat(timespec="microseconds"),
            decision_id=new_decision_id(),
        )

    async def _record(
        self,
        d: _Started,
        *,
        score: float,
        pd: float,
        outcome: str,
        reasons: list[dict[str, object]],
        rules_hit: list[str],
        details: dict[str, Any],
        links: list[dict[str, Any]] | None = None,
        review: dict[str, Any] | None = None,
        feature_bins: dict[str, int] | None = None,
    ) -> None:
        """Persist the decision with its audit record, then count it."""
        row = {
            "decision_id": d.decision_id,
            "created_at": d.created_at,
            "stage": d.stage,
            "subject_hash": self.hasher.hash("subject", d.subject),
            "fingerprint": fingerprint(d.body),
            "model_id": d.model.model_id,
            "role": d.role,
            "score": score,
            "probability": pd,
            "outcome": outcome,
            "reasons": reasons,
            "rules_hit": rules_hit,
            "details": details,
        }
        await self._persist(
            DecisionWrite(
                row=row, links=links or [], review=review, feature_bins=feature_bins or {}
            )
        )
        self.metrics.child(self.metrics.decisions, d.stage, outcome, d.role).inc()

    # -------------------------------------------------------------------------------- A-card
    async def application(self, request: ApplicationRequest) -> ApplicationResponse:
        """Anti-fraud, then PD, score, decision, limit and price tier, reasons; persisted."""
        d = self._start("application", request.applicant_id, request.model_dump(mode="json"))
        screening = self.screen.screen(
            request.application_id, d.body["signals"], now=d.now, decision_id=d.decision_id
        )
        pd, score, reasons, missing = await self._score(
            d, max_reasons=self.policy.application.max_reasons
        )
        result = decide_application(
            pd,
            score,
            policy=self.policy.application,
            reasons=reasons,
            fraud_hits=screening.hits,
            ring_flag=screening.ring.is_ring,
        )
        outcome = OUTCOME[result.decision]
        rules_hit = _rules_hit(screening)
        review = _review_item(d, rules_hit=rules_hit, outcome=outcome, overrides=result.overrides)
        await self._record(
            d,
            score=score,
            pd=pd,
            outcome=outcome,
            reasons=_reasons_stored(result.reasons),
            rules_hit=rules_hit,
            details=_application_details(screening, result)
            | ({} if missing is None else {"missing_parts": missing}),
            links=screening.links,
            review=review,
            feature_bins=reference_bins(d.model, d.body["features"]),
        )
        for rule in rules_hit:
            self.metrics.child(self.metrics.fraud_hits, rule).inc()
        return ApplicationResponse(
            decision_id=d.decision_id,
            application_id=request.application_id,
            decision=outcome,
            model_decision=OUTCOME[result.model_decision],
            pd=pd,
            score=score,
            credit_limit=result.credit_limit,
            price_tier=result.price_tier,
            apr=result.apr,
            reasons=_reasons_out(result.reasons),
            overrides=list(result.overrides),
            fraud=_fraud_out(screening),
            queued_for_review=review is not None,
            model=d.ref,
            created_at=d.created_at,
            missing_parts=missing or {},
        )

    # -------------------------------------------------------------------------------- B-card
    async def behaviour(self, request: BehaviourRequest) -> BehaviourResponse:
        """Behaviour score + early warnings -> raise / keep / cut / freeze; persisted."""
        d = self._start("behaviour", request.account_id, request.model_dump(mode="json"))
        pd, score, score_reasons = await self._whole(d)
        signals = BehaviourSignals(
            multi_lender_count=request.multi_lender_count,
            prohibited_use_flows=tuple(
                FundsFlow(kind=f.kind, amount=f.amount) for f in request.prohibited_use_flows
            ),
            days_past_due=request.days_past_due,
            payment_delays=request.payment_delays,
        )
        result = decide_behaviour(
            pd,
            score,
            current_limit=request.current_limit,
            signals=signals,
            policy=self.policy.behaviour,
        )
        await self._record(
            d,
            score=score,
            pd=pd,
            outcome=result.action.value,
            reasons=_reasons_stored(score_reasons),
            rules_hit=[w.code for w in result.warnings],
            details={
                "current_limit": result.current_limit,
                "new_limit": result.new_limit,
                "policy_reasons": [r.code for r in result.reasons],
            },
        )
        return BehaviourResponse(
            decision_id=d.decision_id,
            account_id=request.account_id,
            action=result.action.value,
            current_limit=result.current_limit,
            new_limit=result.new_limit,
            pd=pd,
            score=score,
            warnings=[FindingOut(code=w.code, text=w.text) for w in result.warnings],
            reasons=[FindingOut(code=r.code, text=r.text) for r in result.reasons],
            score_reasons=_reasons_out(score_reasons),
            model=d.ref,
            created_at=d.created_at,
        )

    # -------------------------------------------------------------------------------- C-card
    async def collection(self, request: CollectionRequest) -> CollectionResponse:
        """Recovery probability -> segment and collection action; persisted."""
        d = self._start("collection", request.account_id, request.model_dump(mode="json"))
        pd, score, score_reasons = await self._whole(d)
        # the C-card model predicts "does not pay" (target 1 = bad), so recovery is its complement
        recovery = 1.0 - pd
        signals = CollectionSignals(
            days_past_due=request.days_past_due,
            broken_promises=request.broken_promises,
            contactable=request.contactable,
            prior_delinquencies=request.prior_delinquencies,
        )
        result = decide_collection(recovery, signals=signals, policy=self.policy.collection)
        await self._record(
            d,
            score=score,
            pd=pd,
            outcome=result.action.value,
            reasons=_reasons_stored(score_reasons),
            rules_hit=[],
            details={
                "segment": result.segment.value,
                "recovery_probability": recovery,
                "policy_reasons": [r.code for r in result.reasons],
            },
        )
        return CollectionResponse(
            decision_id=d.decision_id,
            account_id=request.account_id,
            recovery_probability=recovery,
            pd=pd,
            score=score,
            segment=result.segment.value,
            action=result.action.value,
            reasons=[FindingOut(code=r.code, text=r.text) for r in result.reasons],
            score_reasons=_reasons_out(score_reasons),
            model=d.ref,
            created_at=d.created_at,
        )
