"""Dashboard test helpers: a seeded decision history in a real database, and the oracle that
recomputes the dashboard's figures from the raw rows in plain Python."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import Engine, select

from server.scoring import store
from server.scoring.audit import audited_transaction
from server.scoring.db.tables import decisions, review_items
from tests.support.scoring import decision_write, write_decisions

OUTCOMES = {
    "application": ("approve", "manual_review", "decline"),
    "behaviour": ("raise", "keep", "cut"),
    "collection": ("reminder_message", "agent_call"),
}
REVIEWER = "reviewer-1"


def seed_history(engine: Engine, rng: np.random.Generator, *, n: int = 120, days: int = 4) -> None:
    """Write ``n`` decisions over ``days`` UTC days (all stages and outcomes, fraud flags and
    manual reviews queued) through the real group-commit writer, then have a reviewer request,
    claim and resolve some reviews through the store's audited operations."""
    start = datetime(2026, 11, 20, 9, tzinfo=UTC)
    items = []
    for i in range(n):
        stage = str(rng.choice(list(OUTCOMES)))
        outcome = str(rng.choice(OUTCOMES[stage]))
        review = None
        if stage == "application" and outcome == "manual_review":
            review = {"kind": "manual_review", "status": "open", "reason": "score in review band"}
        elif stage == "application" and rng.random() < 0.15:
            review = {"kind": "fraud", "status": "open", "reason": "fraud signals: FR-X"}
        item = decision_write(i, outcome=outcome, review=review)
        stamp = (start + timedelta(days=int(rng.integers(days)), seconds=i)).isoformat(
            timespec="microseconds"
        )
        item.row.update(stage=stage, created_at=stamp, model_id=f"{stage[0]}card-v1")
        if review is not None:
            item.review = {**item.review, "stage": stage, "created_at": stamp}  # type: ignore[dict-item]
        items.append(item)
    errors = write_decisions(engine, items)
    assert errors == [None] * n, errors
    declines = [d.row["decision_id"] for d in items if d.row["outcome"] == "decline"]
    for decision_id in declines[: len(declines) // 2]:
        audited_transaction(
            engine,
            lambda c, ch, d=decision_id: store.request_human_review(
                c, ch, decision_id=d, reason="please look again"
            ),
        )
    with engine.connect() as connection:
        open_items = store.list_reviews(connection, status="open", limit=500)
    for k, item in enumerate(open_items):
        if k % 3 == 2:
            continue  # stays open
        audited_transaction(
            engine,
            lambda c, ch, i=item.item_id: store.claim_review(c, ch, item_id=i, reviewer=REVIEWER),
        )
        if k % 3 == 1:
            continue  # stays claimed
        resolution = {
            "human_review_request": ("approve", "decline"),
            "fraud": ("clear_fraud", "confirm_fraud"),
            "manual_review": ("approve", "decline"),
        }[item.kind][int(rng.integers(2))]
        audited_transaction(
            engine,
            lambda c, ch, i=item.item_id, r=resolution: store.resolve_review(
                c, ch, item_id=i, reviewer=REVIEWER, resolution=r, note="checked"
            ),
        )


@dataclass(frozen=True)
class Truth:
    """The dashboard's figures recomputed from every raw row, without SQL aggregation."""

    mix: Counter[tuple[str, str, str]]
    decisions: int
    applications: int
    approved: int
    queue: int
    resolved_with_verdict: int
    overridden: int

    @property
    def approval_rate(self) -> float:
        return self.approved / self.applications

    @property
    def override_rate(self) -> float:
        return self.overridden / self.resolved_with_verdict


def truth(engine: Engine) -> Truth:
    """Read every decision and review row and count in Python (the oracle)."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(decisions.c.created_at, decisions.c.stage, decisions.c.outcome)
        ).all()
        reviews = connection.execute(
            select(review_items.c.kind, review_items.c.status, review_items.c.resolution)
        ).all()
    mix = Counter((r.created_at[:10], r.stage, r.outcome) for r in rows)
    applications = [r for r in rows if r.stage == "application"]
    resolved = [
        r for r in reviews if r.status == "resolved" and r.kind in ("human_review_request", "fraud")
    ]
    overridden = [
        r
        for r in resolved
        if (r.kind, r.resolution) in {("human_review_request", "approve"), ("fraud", "clear_fraud")}
    ]
    return Truth(
        mix=mix,
        decisions=len(rows),
        applications=len(applications),
        approved=sum(r.outcome == "approve" for r in applications),
        queue=sum(r.status in ("open", "claimed") for r in reviews),
        resolved_with_verdict=len(resolved),
        overridden=len(overridden),
    )


def percent(value: float) -> str:
    """How the dashboard prints a rate."""
    return f"{100 * value:.1f}%"
