"""Request and response bodies of the scoring API (pydantic, ``extra="forbid"`` everywhere)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.scoring.settings import Stage

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"

Identifier = Annotated[str, Field(pattern=ID_PATTERN, description="1-128 letters, digits or ._:@-")]
FeatureName = Annotated[str, Field(min_length=1, max_length=128)]
FeatureValue = (
    Annotated[float, Field(strict=True, allow_inf_nan=False)]
    | Annotated[str, Field(strict=True, max_length=200)]
    | None
)
Features = Annotated[
    dict[FeatureName, FeatureValue],
    Field(
        max_length=1000,
        description="Raw model features by name: numbers for numeric, strings for categorical "
        "features, null for missing values of nullable features. Checked against the answering "
        "model's schema (unknown, missing, out-of-range -> 422).",
    ),
]
Money = Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=100_000)]
Text = Annotated[str, Field(max_length=200)]
Note = Annotated[str, Field(max_length=4000)]
Reviewer = Annotated[str, Field(min_length=1, max_length=200)]
Decision = Literal["approve", "manual_review", "decline"]


class Strict(BaseModel):
    """Base of every API body: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------- shared parts
class ReasonOut(Strict):
    """One model reason code: a feature that lowered the score versus the reference applicant."""

    code: str
    feature: str
    text: str
    points: float


class FindingOut(Strict):
    """A coded warning or policy reason."""

    code: str
    text: str


class RuleHitOut(Strict):
    """An anti-fraud rule that fired."""

    rule_id: str
    kind: str
    severity: str
    action: str
    message: str


class GraphOut(Strict):
    """Relationship-graph status of the application."""

    component_size: int
    is_ring: bool
    linked_kinds: list[str]
    ignored_hub_kinds: list[str]


class FraudOut(Strict):
    """Anti-fraud result: rule hits and the relationship graph."""

    hits: list[RuleHitOut]
    graph: GraphOut


class ModelRef(Strict):
    """Which model answered."""

    model_id: str
    stage: Stage
    role: Literal["champion", "challenger"]


# ----------------------------------------------------------------------------- A-card
class FraudSignals(Strict):
    """Identifiers and declared facts used only by the anti-fraud rules and graph.

    Raw values are never stored: linking identifiers are kept as keyed hashes.
    """

    device_id: Text | None = None
    ip: Annotated[str, Field(max_length=45)] | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    bank_card: Annotated[str, Field(max_length=64)] | None = None
    id_number: Annotated[str, Field(max_length=64)] | None = None
    applicant_name: Text | None = None
    phone_owner_name: Text | None = None
    phone_registered_id: Annotated[str, Field(max_length=64)] | None = None
    age: Annotated[int, Field(ge=0, le=150)] | None = None


class ApplicationRequest(Strict):
    """A-card request: one credit application."""

    application_id: Identifier
    applicant_id: Identifier
    features: Features
    signals: FraudSignals = Field(default_factory=FraudSignals)


class ApplicationResponse(Strict):
    """A-card decision."""

    decision_id: str
    application_id: str
    decision: Decision
    model_decision: Decision
    pd: float
    score: float
    credit_limit: float | None
    price_tier: str | None
    apr: float | None
    reasons: list[ReasonOut]
    overrides: list[str]
    fraud: FraudOut
    queued_for_review: bool
    model: ModelRef
    created_at: str
    missing_parts: dict[str, str] = Field(default_factory=dict)
    """A vertical model's host parts that did not count, host -> why (``down``, ``slow``,
    ``unknown``, ``refused``, ``masks-incomplete``, ``unconfigured``); scored as in training,
    as zero. Always empty for a whole model."""


# ----------------------------------------------------------------------------- B-card
class FundsFlowIn(Strict):
    """Loan money observed flowing to a use (e.g. securities, real_estate)."""

    kind: Annotated[str, Field(min_length=1, max_length=40)]
    amount: Money | None = None


class BehaviourRequest(Strict):
    """B-card request: an account under periodic review."""

    account_id: Identifier
    current_limit: Money
    features: Features
    multi_lender_count: Count = 0
    prohibited_use_flows: Annotated[list[FundsFlowIn], Field(max_length=100)] = Field(
        default_factory=list
    )
    days_past_due: Count = 0
    payment_delays: Count = 0


class BehaviourResponse(Strict):
    """B-card result: limit action, early warnings, reasons."""

    decision_id: str
    account_id: str
    action: Literal["raise", "keep", "cut", "freeze"]
    current_limit: float
    new_limit: float
    pd: float
    score: float
    warnings: list[FindingOut]
    reasons: list[FindingOut]
    score_reasons: list[ReasonOut]
    model: ModelRef
    created_at: str


# ----------------------------------------------------------------------------- C-card
class CollectionRequest(Strict):
    """C-card request: a delinquent account."""

    account_id: Identifier
    features: Features
    days_past_due: Count
    broken_promises: Count = 0
    contactable: bool = True
    prior_delinquencies: Count = 0


class CollectionResponse(Strict):
    """C-card result. ``recovery_probability`` is ``1 - pd`` of the collection model."""

    decision_id: str
    account_id: str
    recovery_probability: float
    pd: float
    score: float
    segment: Literal["short_oversight", "ability_problem", "unwilling"]
    action: Literal["reminder_message", "agent_call", "repayment_plan_offer", "legal_referral"]
    reasons: list[FindingOut]
    score_reasons: list[ReasonOut]
    model: ModelRef
    created_at: str


class DecisionOut(Strict):
    """A stored decision (no request data: only its fingerprint)."""

    decision_id: str
    created_at: str
    stage: str
    fingerprint: str
    model_id: str
    role: str
    score: float | None
    probability: float | None
    outcome: str
    reasons: list[dict[str, Any]]
    rules_hit: list[str]
    details: dict[str, Any]


# ----------------------------------------------------------------------------- models
class FeatureOut(Strict):
    """One input feature a model expects."""

    name: str
    kind: str
    min: float | None
    max: float | None
    categories: list[str] | None
    nullable: bool
    description: str


class ModelOut(Strict):
    """A loaded model and its place in the champion/challenger table."""

    model_id: str
    stage: Stage | None
    role: Literal["champion", "challenger"] | None
    challenger_share: float | None
    signer: str
    artifact_sha256: str
    scorecard: dict[str, float]
    lineage: dict[str, object]
    latest_auc: float | None
    features: list[FeatureOut]


class StageOut(Strict):
    """Champion, challenger and rollback history of one stage."""

    stage: Stage
    champion_id: str | None
    challenger_id: str | None
    challenger_share: float
    history: list[str]
    version: int


class RefusalOut(Strict):
    """An artifact the service refused to load."""

    path: str
    reason: str
    message: str


class ModelsOut(Strict):
    """``GET /v1/models``."""

    models: list[ModelOut]
    stages: list[StageOut]
    refused: list[RefusalOut]


class RegisterModelRequest(Strict):
    """Register a signed artifact directory readable by the service (verified, then copied in)."""

    source_dir: Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^[^\x00]+$")]
    stage: Stage | None = Field(default=None, description="Needed when the artifact names no stage")
    actor: Reviewer = "api"
    note: Note = ""


class RegisterModelResponse(Strict):
    """Result of a registration."""

    model: ModelOut
    stage: StageOut


class PromoteRequest(Strict):
    """Make a model its stage's champion or challenger."""

    role: Literal["champion", "challenger"]
    share: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        default=None, description="Challenger traffic share; default from the settings"
    )
    actor: Reviewer = "api"
    note: Note = ""


class RollbackRequest(Strict):
    """Restore the previous champion of a stage (or stop its challenger)."""

    actor: Reviewer = "api"
    note: Note = ""


class ModelEventOut(Strict):
    """One registration, promotion or rollback."""

    event_id: int
    created_at: str
    stage: str
    action: str
    model_id: str | None
    previous_model_id: str | None
    actor: str
    note: str


# ----------------------------------------------------------------------------- reviews
class ReviewOut(Strict):
    """One item of the manual-review queue."""

    item_id: int
    decision_id: str
    stage: str
    kind: Literal["manual_review", "fraud", "human_review_request", "purpose_label"]
    status: Literal["open", "claimed", "resolved"]
    reason: str
    created_at: str
    reviewer: str | None
    claimed_at: str | None
    resolved_at: str | None
    resolution: str | None
    note: str | None
    decision_outcome: str | None
    decision_score: float | None


class ReviewListOut(Strict):
    """A page of review items (``next_after`` continues the listing)."""

    items: list[ReviewOut]
    next_after: int | None


class ClaimRequest(Strict):
    """Claim an open item."""

    reviewer: Reviewer


class ResolveRequest(Strict):
    """Close a claimed item."""

    reviewer: Reviewer
    resolution: Literal[
        "approve", "decline", "confirm_fraud", "clear_fraud", "no_action", "relabel"
    ]
    note: Note = ""
    label: str | None = Field(
        default=None,
        max_length=32,
        description="The right loan purpose, with resolution `relabel` of a `purpose_label` item",
    )


class HumanReviewRequest(Strict):
    """An applicant's request that a person re-examine an automated decline."""

    reason: Annotated[str, Field(min_length=1, max_length=4000)]


# ----------------------------------------------------------------------------- fraud lists
class ListUpdate(Strict):
    """Add or remove values of a fraud list (e.g. ``device_blacklist``)."""

    add: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=200)]], Field(max_length=10_000)
    ] = Field(default_factory=list)
    remove: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=200)]], Field(max_length=10_000)
    ] = Field(default_factory=list)


class ListOut(Strict):
    """A fraud list's size."""

    name: str
    size: int


# ----------------------------------------------------------------------------- misc
class HealthOut(Strict):
    """``GET /healthz``."""

    status: Literal["ok", "degraded"]
    stages: dict[str, str | None]
    refused_artifacts: int
    write_backlog: int


class AuditVerifyOut(Strict):
    """Result of an audit-chain check."""

    ok: bool
    records: int
    decisions: int
    first_broken: int | None
    problem: str


class PurposeRequest(Strict):
    """An applicant's free-text description of what the loan is for."""

    text: Annotated[str, Field(min_length=1, max_length=2000)]


class PurposeOut(Strict):
    """The loan purpose stored for a decision."""

    decision_id: str
    predicted: str
    confidence: float
    label: str | None
    status: Literal["auto", "queued", "corrected", "confirmed"]
    review_item_id: int | None


class PurposeTrainingOut(Strict):
    """What the retrained purpose classifier learnt from."""

    examples: int
    corrections: int
