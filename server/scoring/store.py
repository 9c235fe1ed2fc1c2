"""Transactional operations on the scoring database: review queue, model assignments, queries.

Every write function takes an open write transaction and the :class:`AuditChain` of that
transaction, so the state change and its audit record commit together. They run on the service's
writer thread (``GroupCommitWriter.run_job``) or directly from the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from server.scoring.audit import AuditChain, utc_now
from server.scoring.db.tables import (
    batch_jobs,
    decisions,
    fraud_links,
    fraud_list_entries,
    model_assignments,
    model_events,
    registered_models,
    review_items,
)
from server.scoring.errors import ConflictError, NotFoundError
from server.scoring.settings import STAGES, Stage, stage_named

ReviewStatus = Literal["open", "claimed", "resolved"]
ReviewKind = Literal["manual_review", "fraud", "human_review_request", "purpose_label"]
Role = Literal["champion", "challenger"]


# --------------------------------------------------------------------------- model assignments
@dataclass(frozen=True)
class Assignment:
    """Champion, challenger and champion history of one lifecycle stage."""

    stage: Stage
    champion_id: str | None = None
    challenger_id: str | None = None
    challenger_share: float = 0.0
    history: tuple[str, ...] = ()
    version: int = 0
    updated_at: str = ""


@dataclass(frozen=True)
class ModelEvent:
    """One registration, promotion or rollback."""

    event_id: int
    created_at: str
    stage: str
    action: str
    model_id: str | None
    previous_model_id: str | None
    actor: str
    note: str


def load_assignments(connection: Connection) -> dict[Stage, Assignment]:
    """Assignments of every stage (stages never assigned get an empty :class:`Assignment`)."""
    result: dict[Stage, Assignment] = {stage: Assignment(stage=stage) for stage in STAGES}
    for row in connection.execute(select(model_assignments)):
        stage = _stage(row.stage)
        result[stage] = _assignment(stage, row)
    return result


def assignments_version(connection: Connection) -> int:
    """Sum of assignment versions: changes whenever any stage's assignment changes."""
    return int(
        connection.execute(
            select(func.coalesce(func.sum(model_assignments.c.version), 0))
        ).scalar_one()
    )


def _assignment(stage: Stage, row: Any) -> Assignment:
    return Assignment(
        stage=stage,
        champion_id=row.champion_id,
        challenger_id=row.challenger_id,
        challenger_share=float(row.challenger_share),
        history=tuple(row.history or ()),
        version=int(row.version),
        updated_at=row.updated_at,
    )


def _stage(value: str) -> Stage:
    stage = stage_named(value)
    if stage is None:
        raise NotFoundError(f"stage must be one of {list(STAGES)}; got {value!r}")
    return stage


def _save_assignment(connection: Connection, new: Assignment, *, exists: bool) -> None:
    values = {
        "champion_id": new.champion_id,
        "challenger_id": new.challenger_id,
        "challenger_share": new.challenger_share,
        "history": list(new.history),
        "updated_at": new.updated_at,
        "version": new.version,
    }
    if exists:
        connection.execute(
            update(model_assignments).where(model_assignments.c.stage == new.stage).values(**values)
        )
    else:
        connection.execute(insert(model_assignments).values(stage=new.stage, **values))


def _current(connection: Connection, stage: Stage) -> tuple[Assignment, bool]:
    row = connection.execute(
        select(model_assignments).where(model_assignments.c.stage == stage).with_for_update()
    ).first()
    if row is None:
        return Assignment(stage=stage), False
    return _assignment(stage, row), True


def _advance(
    connection: Connection,
    chain: AuditChain,
    current: Assignment,
    *,
    exists: bool,
    champion_id: str | None,
    challenger_id: str | None,
    challenger_share: float,
    history: tuple[str, ...],
    action: str,
    model_id: str | None,
    previous: str | None,
    actor: str,
    note: str,
    extra: dict[str, Any] | None = None,
) -> Assignment:
    """Store the stage's next assignment version and record the model event behind it."""
    new = Assignment(
        stage=current.stage,
        champion_id=champion_id,
        challenger_id=challenger_id,
        challenger_share=challenger_share,
        history=history,
        version=current.version + 1,
        updated_at=utc_now(),
    )
    _save_assignment(connection, new, exists=exists)
    _record_event(
        connection,
        chain,
        stage=current.stage,
        action=action,
        model_id=model_id,
        previous=previous,
        actor=actor,
        note=note,
        extra=extra,
    )
    return new


def _record_event(
    connection: Connection,
    chain: AuditChain,
    *,
    stage: Stage,
    action: str,
    model_id: str | None,
    previous: str | None,
    actor: str,
    note: str,
    extra: dict[str, Any] | None = None,
) -> None:
    stamp = utc_now()
    payload = {
        "stage": stage,
        "action": action,
        "model_id": model_id,
        "previous_model_id": previous,
        "actor": actor,
        "note": note,
        **(extra or {}),
    }
    seq = chain.append(f"model_{action}", payload, created_at=stamp)
    connection.execute(
        insert(model_events).values(
            created_at=stamp,
            stage=stage,
            action=action,
            model_id=model_id,
            previous_model_id=previous,
            actor=actor,
            note=note,
            audit_seq=seq,
        )
    )


def registered_stage(connection: Connection, model_id: str) -> Stage | None:
    """Stage a model was registered for, or None."""
    value = connection.execute(
        select(registered_models.c.stage).where(registered_models.c.model_id == model_id)
    ).scalar()
    return None if value is None else _stage(value)


def registered_model_stages(connection: Connection) -> dict[str, Stage]:
    """Model id -> stage of every registered model."""
    return {
        row.model_id: _stage(row.stage) for row in connection.execute(select(registered_models))
    }


def registered_digests(connection: Connection) -> dict[str, str]:
    """Model id -> SHA-256 of the ``artifact.json`` that was registered."""
    return {
        row.model_id: row.artifact_sha256 for row in connection.execute(select(registered_models))
    }


def register_model(
    connection: Connection,
    chain: AuditChain,
    *,
    model_id: str,
    stage: Stage,
    artifact_sha256: str,
    actor: str,
    note: str = "",
) -> Assignment:
    """Record a verified artifact for ``stage``; it becomes champion when the stage has none.

    Raises
    ------
    ConflictError
        If ``model_id`` is already registered with another stage or other artifact bytes.
    """
    row = connection.execute(
        select(registered_models).where(registered_models.c.model_id == model_id)
    ).first()
    if row is not None:
        if row.stage != stage or row.artifact_sha256 != artifact_sha256:
            raise ConflictError(
                f"model_id {model_id!r} is already registered (stage {row.stage}, artifact "
                f"{row.artifact_sha256[:12]}…); register a new model_id instead"
            )
    else:
        connection.execute(
            insert(registered_models).values(
                model_id=model_id,
                stage=stage,
                artifact_sha256=artifact_sha256,
                registered_at=utc_now(),
            )
        )
        _record_event(
            connection,
            chain,
            stage=stage,
            action="registered",
            model_id=model_id,
            previous=None,
            actor=actor,
            note=note,
            extra={"artifact_sha256": artifact_sha256},
        )
    current, exists = _current(connection, stage)
    if current.champion_id is None:
        return _advance(
            connection,
            chain,
            current,
            exists=exists,
            champion_id=model_id,
            challenger_id=current.challenger_id,
            challenger_share=current.challenger_share,
            history=current.history,
            action="promoted",
            model_id=model_id,
            previous=None,
            actor=actor,
            note="first model of the stage becomes champion",
            extra={"role": "champion"},
        )
    return current


def promote_model(
    connection: Connection,
    chain: AuditChain,
    *,
    model_id: str,
    role: Role,
    share: float | None,
    default_shares: Mapping[Stage, float],
    actor: str,
    note: str = "",
) -> Assignment:
    """Make a registered model its stage's champion or challenger.

    Promoting to champion pushes the previous champion onto the history (for rollback) and
    clears the challenger slot when the new champion was the challenger.

    Raises
    ------
    NotFoundError
        If the model is not registered.
    ConflictError
        If it already holds the role.
    """
    stage = registered_stage(connection, model_id)
    if stage is None:
        raise NotFoundError(f"model_id must be a registered model; got {model_id!r}")
    current, exists = _current(connection, stage)
    if role == "champion":
        if current.champion_id == model_id:
            raise ConflictError(f"model {model_id!r} is already the {stage} champion")
        history = current.history + ((current.champion_id,) if current.champion_id else ())
        champion: str | None = model_id
        challenger = None if current.challenger_id == model_id else current.challenger_id
        challenger_share = current.challenger_share if challenger else 0.0
        previous = current.champion_id
    else:
        if current.champion_id == model_id:
            raise ConflictError(
                f"model {model_id!r} is the {stage} champion; it cannot also be challenger"
            )
        effective = default_shares.get(stage, 0.1) if share is None else share
        if current.challenger_id == model_id and current.challenger_share == effective:
            raise ConflictError(
                f"model {model_id!r} is already the {stage} challenger at share {effective}"
            )
        history = current.history
        champion = current.champion_id
        challenger = model_id
        challenger_share = effective
        previous = current.challenger_id
    return _advance(
        connection,
        chain,
        current,
        exists=exists,
        champion_id=champion,
        challenger_id=challenger,
        challenger_share=challenger_share,
        history=history,
        action="promoted",
        model_id=model_id,
        previous=previous,
        actor=actor,
        note=note,
        extra={"role": role, "challenger_share": challenger_share},
    )


def rollback_stage(
    connection: Connection, chain: AuditChain, *, stage: Stage, actor: str, note: str = ""
) -> Assignment:
    """Restore the champion that preceded the current one.

    Raises
    ------
    ConflictError
        If the stage has no earlier champion.
    """
    current, exists = _current(connection, stage)
    if not current.history:
        raise ConflictError(f"stage {stage} has no earlier champion to roll back to")
    restored = current.history[-1]
    challenger = None if current.challenger_id == restored else current.challenger_id
    return _advance(
        connection,
        chain,
        current,
        exists=exists,
        champion_id=restored,
        challenger_id=challenger,
        challenger_share=current.challenger_share if challenger else 0.0,
        history=current.history[:-1],
        action="rolled_back",
        model_id=restored,
        previous=current.champion_id,
        actor=actor,
        note=note,
    )


def clear_challenger(
    connection: Connection, chain: AuditChain, *, stage: Stage, actor: str, note: str = ""
) -> Assignment:
    """Stop the stage's challenger experiment.

    Raises
    ------
    ConflictError
        If the stage has no challenger.
    """
    current, exists = _current(connection, stage)
    if current.challenger_id is None:
        raise ConflictError(f"stage {stage} has no challenger")
    return _advance(
        connection,
        chain,
        current,
        exists=exists,
        champion_id=current.champion_id,
        challenger_id=None,
        challenger_share=0.0,
        history=current.history,
        action="challenger_cleared",
        model_id=None,
        previous=current.challenger_id,
        actor=actor,
        note=note,
    )


def list_model_events(connection: Connection, *, limit: int = 100) -> list[ModelEvent]:
    """Most recent model events first."""
    rows = connection.execute(
        select(model_events).order_by(model_events.c.event_id.desc()).limit(limit)
    )
    return [
        ModelEvent(
            event_id=int(r.event_id),
            created_at=r.created_at,
            stage=r.stage,
            action=r.action,
            model_id=r.model_id,
            previous_model_id=r.previous_model_id,
            actor=r.actor,
            note=r.note,
        )
        for r in rows
    ]


# --------------------------------------------------------------------------- review queue
@dataclass(frozen=True)
class ReviewItem:
    """One entry of the manual-review queue."""

    item_id: int
    decision_id: str
    stage: str
    kind: str
    status: str
    reason: str
    created_at: str
    reviewer: str | None = None
    claimed_at: str | None = None
    resolved_at: str | None = None
    resolution: str | None = None
    note: str | None = None
    decision: dict[str, Any] = field(default_factory=dict)


def _review_from_row(row: Any) -> ReviewItem:
    m = row._mapping
    decision: dict[str, Any] = {}
    if "outcome" in m and m["outcome"] is not None:
        decision = {
            "outcome": m["outcome"],
            "score": m["score"],
            "model_id": m["model_id"],
            "rules_hit": m["rules_hit"],
        }
    return ReviewItem(
        item_id=int(m["item_id"]),
        decision_id=m["decision_id"],
        stage=m["stage"],
        kind=m["kind"],
        status=m["status"],
        reason=m["reason"],
        created_at=m["created_at"],
        reviewer=m["reviewer"],
        claimed_at=m["claimed_at"],
        resolved_at=m["resolved_at"],
        resolution=m["resolution"],
        note=m["note"],
        decision=decision,
    )


def _review_query() -> Any:
    return select(
        review_items,
        decisions.c.outcome,
        decisions.c.score,
        decisions.c.model_id,
        decisions.c.rules_hit,
    ).join_from(
        review_items, decisions, decisions.c.decision_id == review_items.c.decision_id, isouter=True
    )


def list_reviews(
    connection: Connection,
    *,
    status: ReviewStatus | None = None,
    kind: ReviewKind | None = None,
    limit: int = 50,
    after_id: int = 0,
) -> list[ReviewItem]:
    """Review items in queue order (oldest first), optionally filtered; keyset pagination."""
    query = _review_query().where(review_items.c.item_id > after_id)
    if status is not None:
        query = query.where(review_items.c.status == status)
    if kind is not None:
        query = query.where(review_items.c.kind == kind)
    rows = connection.execute(query.order_by(review_items.c.item_id).limit(limit))
    return [_review_from_row(r) for r in rows]


def get_review(connection: Connection, item_id: int, *, lock: bool = False) -> ReviewItem:
    """One review item (with its decision's outcome); ``lock`` takes a row lock. NotFoundError."""
    if lock:
        # FOR UPDATE cannot lock the nullable side of an outer join: lock the item alone
        query = select(review_items).where(review_items.c.item_id == item_id).with_for_update()
    else:
        query = _review_query().where(review_items.c.item_id == item_id)
    row = connection.execute(query).first()
    if row is None:
        raise NotFoundError(f"review item {item_id} does not exist")
    return _review_from_row(row)


def claim_review(
    connection: Connection, chain: AuditChain, *, item_id: int, reviewer: str
) -> ReviewItem:
    """Assign an open item to ``reviewer`` (idempotent for the same reviewer).

    Raises
    ------
    NotFoundError, ConflictError
    """
    item = get_review(connection, item_id, lock=True)
    if item.status == "claimed" and item.reviewer == reviewer:
        return item
    if item.status != "open":
        holder = f" by {item.reviewer}" if item.reviewer else ""
        raise ConflictError(
            f"review item {item_id} must be open to claim; it is {item.status}{holder}"
        )
    stamp = utc_now()
    connection.execute(
        update(review_items)
        .where(review_items.c.item_id == item_id)
        .values(status="claimed", reviewer=reviewer, claimed_at=stamp)
    )
    chain.append(
        "review_claimed",
        {"item_id": item_id, "decision_id": item.decision_id, "reviewer": reviewer},
        created_at=stamp,
    )
    return get_review(connection, item_id)


def resolve_review(
    connection: Connection,
    chain: AuditChain,
    *,
    item_id: int,
    reviewer: str,
    resolution: str,
    note: str,
) -> ReviewItem:
    """Close a claimed item with the reviewer's resolution and note.

    Raises
    ------
    NotFoundError, ConflictError
        The item must be claimed by the same reviewer.
    """
    item = get_review(connection, item_id, lock=True)
    if item.status != "claimed" or item.reviewer != reviewer:
        state = item.status + (f" by {item.reviewer}" if item.reviewer else "")
        raise ConflictError(
            f"review item {item_id} must be claimed by {reviewer} to resolve; it is {state}"
        )
    stamp = utc_now()
    connection.execute(
        update(review_items)
        .where(review_items.c.item_id == item_id)
        .values(status="resolved", resolution=resolution, note=note, resolved_at=stamp)
    )
    chain.append(
        "review_resolved",
        {
            "item_id": item_id,
            "decision_id": item.decision_id,
            "reviewer": reviewer,
            "resolution": resolution,
            "note": note,
        },
        created_at=stamp,
    )
    return get_review(connection, item_id)


def request_human_review(
    connection: Connection, chain: AuditChain, *, decision_id: str, reason: str
) -> ReviewItem:
    """Queue an applicant's request for human review of an automated decline.

    Raises
    ------
    NotFoundError
        Unknown decision.
    ConflictError
        The decision was not a decline, or a request for it already exists.
    """
    row = connection.execute(
        select(decisions.c.outcome, decisions.c.stage).where(decisions.c.decision_id == decision_id)
    ).first()
    if row is None:
        raise NotFoundError(f"decision {decision_id} does not exist")
    if row.outcome != "decline":
        raise ConflictError(
            f"human review can be requested for an automated decline only; decision {decision_id} "
            f"is {row.outcome}"
        )
    existing = connection.execute(
        select(review_items.c.item_id).where(
            review_items.c.decision_id == decision_id,
            review_items.c.kind == "human_review_request",
        )
    ).first()
    if existing is not None:
        raise ConflictError(
            f"human review of decision {decision_id} was already requested "
            f"(item {existing.item_id})"
        )
    stamp = utc_now()
    item_id = connection.execute(
        insert(review_items)
        .values(
            decision_id=decision_id,
            stage=row.stage,
            kind="human_review_request",
            status="open",
            reason=reason,
            created_at=stamp,
        )
        .returning(review_items.c.item_id)
    ).scalar_one()
    chain.append(
        "review_requested",
        {"item_id": int(item_id), "decision_id": decision_id, "reason": reason},
        created_at=stamp,
    )
    return get_review(connection, int(item_id))


# --------------------------------------------------------------------------- queries
def count_decisions(connection: Connection, *, stage: Stage | None = None) -> int:
    """Number of persisted decisions."""
    query = select(func.count()).select_from(decisions)
    if stage is not None:
        query = query.where(decisions.c.stage == stage)
    return int(connection.execute(query).scalar_one())


def get_decision(connection: Connection, decision_id: str) -> dict[str, Any]:
    """One persisted decision as a dict. Raises NotFoundError."""
    row = connection.execute(
        select(decisions).where(decisions.c.decision_id == decision_id)
    ).first()
    if row is None:
        raise NotFoundError(f"decision {decision_id} does not exist")
    return dict(row._mapping)


def iter_fraud_links(connection: Connection, *, batch: int = 10_000) -> Sequence[Any]:
    """Every screened application's hashed identifiers in insertion order (graph rebuild)."""
    result = connection.execution_options(yield_per=batch).execute(
        select(
            fraud_links.c.application_key, fraud_links.c.identifiers, fraud_links.c.created_at
        ).order_by(fraud_links.c.link_id)
    )
    return list(result)


# ------------------------------------------------------------------- fraud lists, batch jobs
def fraud_lists(connection: Connection) -> dict[str, list[str]]:
    """Every value of every fraud list, by list name."""
    lists: dict[str, list[str]] = {}
    for row in connection.execute(
        select(fraud_list_entries.c.list_name, fraud_list_entries.c.value)
    ):
        lists.setdefault(row.list_name, []).append(row.value)
    return lists


def list_values(connection: Connection, name: str) -> list[str]:
    """Every value of one fraud list."""
    rows = connection.execute(
        select(fraud_list_entries.c.value).where(fraud_list_entries.c.list_name == name)
    )
    return [row[0] for row in rows]


def update_list(
    connection: Connection,
    chain: AuditChain,
    *,
    name: str,
    add: Sequence[str],
    remove: Sequence[str],
    key_hash: Callable[[str], str],
) -> list[str]:
    """Add and remove values of a fraud list; returns the list's new contents.

    The audit record holds keyed hashes of the values, not the values.
    """
    stamp = utc_now()
    existing = set(list_values(connection, name))
    to_add = sorted({v.strip() for v in add if v.strip()} - existing)
    to_remove = sorted({v.strip() for v in remove} & existing)
    if to_add:
        connection.execute(
            insert(fraud_list_entries),
            [{"list_name": name, "value": v, "added_at": stamp} for v in to_add],
        )
    if to_remove:
        connection.execute(
            delete(fraud_list_entries).where(
                fraud_list_entries.c.list_name == name, fraud_list_entries.c.value.in_(to_remove)
            )
        )
    chain.append(
        "fraud_list_updated",
        {
            "list": name,
            "added": [key_hash(v) for v in to_add],
            "removed": [key_hash(v) for v in to_remove],
        },
        created_at=stamp,
    )
    return sorted((existing | set(to_add)) - set(to_remove))


def record_batch_job(
    connection: Connection,
    chain: AuditChain,
    *,
    job_id: str,
    stage: Stage,
    model_id: str,
    input_sha256: str,
    rows: int,
    errors: int,
    status: str,
) -> None:
    """Record one batch-scoring upload (not its rows) with its audit record."""
    stamp = utc_now()
    seq = chain.append(
        "batch_scored",
        {
            "job_id": job_id,
            "stage": stage,
            "model_id": model_id,
            "input_sha256": input_sha256,
            "rows": rows,
            "errors": errors,
            "status": status,
        },
        created_at=stamp,
    )
    connection.execute(
        insert(batch_jobs).values(
            job_id=job_id,
            created_at=stamp,
            stage=stage,
            model_id=model_id,
            input_sha256=input_sha256,
            rows=rows,
            audit_seq=seq,
        )
    )
