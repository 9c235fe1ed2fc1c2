"""Scoring storage on SQLite and PostgreSQL: group commit, audit chain, review queue, models."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from server.scoring import store
from server.scoring.audit import AuditChain, utc_now, verify_chain
from server.scoring.cli import cli
from server.scoring.database import create_schema, make_engine, write_connection
from server.scoring.errors import ConflictError, NotFoundError
from server.scoring.writer import DecisionWrite, GroupCommitWriter


@pytest.fixture
def engine(db_url: str) -> Any:
    eng = make_engine(db_url)
    create_schema(eng)
    yield eng
    eng.dispose()


def decision(
    i: int, *, outcome: str = "approve", review: dict[str, Any] | None = None
) -> DecisionWrite:
    decision_id = uuid.uuid4().hex
    stamp = utc_now()
    row = {
        "decision_id": decision_id,
        "created_at": stamp,
        "stage": "application",
        "subject_hash": f"{i:064x}",
        "fingerprint": uuid.uuid4().hex * 2,
        "model_id": "acard-v1",
        "role": "champion",
        "score": 600.0 + i / 7,
        "probability": 1 / (3 + i),
        "outcome": outcome,
        "reasons": [{"code": "RC-ABC123", "feature": "age", "points": 1.25 + i}],
        "rules_hit": ["FR-X"] if i % 3 == 0 else [],
        "details": {"credit_limit": 1000.0, "price_tier": "C"},
    }
    links = [
        {
            "application_key": uuid.uuid4().hex * 2,
            "decision_id": decision_id,
            "identifiers": {"device_id": f"{i % 5:064x}"},
            "created_at": stamp,
        }
    ]
    if review is not None:
        review = {"decision_id": decision_id, "stage": "application", "created_at": stamp, **review}
    return DecisionWrite(row=row, links=links, review=review)


def write_all(engine: Engine, items: list[DecisionWrite]) -> list[BaseException | None]:
    async def run() -> list[BaseException | None]:
        writer = GroupCommitWriter(engine)
        try:
            results = await asyncio.gather(
                *(writer.submit_decision(d) for d in items), return_exceptions=True
            )
        finally:
            writer.close()
        return [r if isinstance(r, BaseException) else None for r in results]

    return asyncio.run(run())


def job(engine: Engine, fn: Any) -> Any:
    with write_connection(engine) as connection, connection.begin():
        chain = AuditChain.open(connection)
        result = fn(connection, chain)
        chain.flush()
    return result


def test_group_commit_persists_every_decision_with_its_audit_record(engine: Engine) -> None:
    # arrange
    items = [decision(i) for i in range(150)]

    # act
    errors = write_all(engine, items)

    # assert
    assert errors == [None] * 150
    with engine.connect() as connection:
        assert store.count_decisions(connection) == 150
        report = verify_chain(connection)
        stored = store.get_decision(connection, items[7].row["decision_id"])
    assert report.ok, report.problem
    assert report.decisions == 150 and report.records == 150
    assert stored["reasons"] == items[7].row["reasons"]
    assert stored["score"] == items[7].row["score"]


def test_a_failing_decision_leaves_nothing_half_written_and_spares_its_batch(
    engine: Engine,
) -> None:
    # arrange: the review row of decision 5 violates NOT NULL, mid-transaction
    items = [decision(i) for i in range(10)]
    items[5] = decision(5, review={"kind": "manual_review", "status": None, "reason": "x"})

    # act
    errors = write_all(engine, items)

    # assert
    assert errors[5] is not None
    assert [e for i, e in enumerate(errors) if i != 5] == [None] * 9
    with engine.connect() as connection:
        assert store.count_decisions(connection) == 9
        missing = items[5].row["decision_id"]
        with pytest.raises(NotFoundError):
            store.get_decision(connection, missing)
        assert connection.execute(text("SELECT count(*) FROM review_items")).scalar() == 0
        links = connection.execute(text("SELECT count(*) FROM fraud_links")).scalar()
        report = verify_chain(connection)
    assert links == 9
    assert report.ok and report.records == 9


@pytest.mark.parametrize(
    ("tamper", "first_broken"),
    [
        ("UPDATE audit_log SET payload = replace(payload, 'approve', 'decline') WHERE seq = 4", 4),
        ("DELETE FROM audit_log WHERE seq = 6", 6),
        ("REORDER 3 4", 3),
        ("DELETE FROM audit_log WHERE seq = 12", 12),
        ("UPDATE decisions SET outcome = 'decline' WHERE audit_seq = 9", 9),
        ("DELETE FROM decisions WHERE audit_seq = 2", 2),
    ],
    ids=["edit", "delete", "reorder", "delete-tail", "edit-decision-row", "delete-decision-row"],
)
def test_verify_names_the_first_broken_record(
    engine: Engine, db_url: str, tamper: str, first_broken: int
) -> None:
    # arrange
    assert write_all(engine, [decision(i) for i in range(12)]) == [None] * 12
    with engine.begin() as connection:
        if tamper.startswith("REORDER"):
            a, b = (int(x) for x in tamper.split()[1:])
            connection.execute(text("UPDATE audit_log SET seq = -1 WHERE seq = :a"), {"a": a})
            connection.execute(
                text("UPDATE audit_log SET seq = :a WHERE seq = :b"), {"a": a, "b": b}
            )
            connection.execute(text("UPDATE audit_log SET seq = :b WHERE seq = -1"), {"b": b})
        else:
            connection.execute(text(tamper))

    # act
    with engine.connect() as connection:
        report = verify_chain(connection)
    result = CliRunner().invoke(cli, ["audit", "verify", "--db", db_url])

    # assert
    assert not report.ok
    assert report.first_broken == first_broken, report.problem
    assert result.exit_code == 1
    assert f"BROKEN at record {first_broken}" in result.output


def test_untouched_chain_verifies_through_the_cli(engine: Engine, db_url: str) -> None:
    # arrange
    write_all(engine, [decision(i) for i in range(5)])

    # act
    result = CliRunner().invoke(cli, ["audit", "verify", "--db", db_url])

    # assert
    assert result.exit_code == 0, result.output
    assert "audit chain OK: 5 records, 5 decisions" in result.output


def test_review_queue_claim_and_resolve_with_conflicts(engine: Engine) -> None:
    # arrange
    declined = decision(1, outcome="decline")
    approved = decision(2, outcome="approve")
    review = decision(
        3,
        outcome="manual_review",
        review={"kind": "manual_review", "status": "open", "reason": "band"},
    )
    write_all(engine, [declined, approved, review])
    declined_id = declined.row["decision_id"]

    # act
    requested = job(
        engine,
        lambda c, ch: store.request_human_review(c, ch, decision_id=declined_id, reason="please"),
    )
    with pytest.raises(ConflictError, match="decline only"):
        job(
            engine,
            lambda c, ch: store.request_human_review(
                c, ch, decision_id=approved.row["decision_id"], reason="x"
            ),
        )
    with pytest.raises(ConflictError, match="already requested"):
        job(
            engine,
            lambda c, ch: store.request_human_review(
                c, ch, decision_id=declined_id, reason="again"
            ),
        )
    with pytest.raises(NotFoundError):
        job(engine, lambda c, ch: store.request_human_review(c, ch, decision_id="nope", reason="x"))
    claimed = job(
        engine, lambda c, ch: store.claim_review(c, ch, item_id=requested.item_id, reviewer="ann")
    )
    again = job(
        engine, lambda c, ch: store.claim_review(c, ch, item_id=requested.item_id, reviewer="ann")
    )
    with pytest.raises(ConflictError):
        job(
            engine,
            lambda c, ch: store.claim_review(c, ch, item_id=requested.item_id, reviewer="bob"),
        )
    with pytest.raises(ConflictError):
        job(
            engine,
            lambda c, ch: store.resolve_review(
                c, ch, item_id=requested.item_id, reviewer="bob", resolution="approve", note=""
            ),
        )
    resolved = job(
        engine,
        lambda c, ch: store.resolve_review(
            c, ch, item_id=requested.item_id, reviewer="ann", resolution="approve", note="ok"
        ),
    )

    # assert
    assert requested.kind == "human_review_request" and requested.status == "open"
    assert (
        claimed.status == "claimed"
        and claimed.reviewer == "ann"
        and again.claimed_at == claimed.claimed_at
    )
    assert (
        resolved.status == "resolved" and resolved.resolution == "approve" and resolved.note == "ok"
    )
    with engine.connect() as connection:
        items = store.list_reviews(connection)
        open_items = store.list_reviews(connection, status="open")
        kinds = [r[0] for r in connection.execute(text("SELECT kind FROM audit_log ORDER BY seq"))]
        assert verify_chain(connection).ok
    assert [i.kind for i in items] == ["manual_review", "human_review_request"]
    assert [i.kind for i in open_items] == ["manual_review"]
    assert kinds[-3:] == ["review_requested", "review_claimed", "review_resolved"]


def test_promotion_and_rollback_are_recorded(engine: Engine) -> None:
    # arrange
    shares = {"application": 0.1, "behaviour": 0.1, "collection": 0.1}

    def register(model_id: str) -> store.Assignment:
        return job(
            engine,
            lambda c, ch: store.register_model(
                c,
                ch,
                model_id=model_id,
                stage="application",
                artifact_sha256=model_id * 8,
                actor="t",
            ),
        )

    # act
    first = register("m1")
    register("m2")
    register("m3")
    challenger = job(
        engine,
        lambda c, ch: store.promote_model(
            c, ch, model_id="m3", role="challenger", share=0.25, default_shares=shares, actor="t"
        ),
    )
    promoted = job(
        engine,
        lambda c, ch: store.promote_model(
            c, ch, model_id="m2", role="champion", share=None, default_shares=shares, actor="t"
        ),
    )
    rolled = job(
        engine,
        lambda c, ch: store.rollback_stage(c, ch, stage="application", actor="t", note="bad AUC"),
    )
    with pytest.raises(ConflictError):
        job(engine, lambda c, ch: store.rollback_stage(c, ch, stage="application", actor="t"))
    with pytest.raises(ConflictError):
        job(
            engine,
            lambda c, ch: store.register_model(
                c, ch, model_id="m1", stage="behaviour", artifact_sha256="x", actor="t"
            ),
        )

    # assert
    assert first.champion_id == "m1"
    assert challenger.challenger_id == "m3" and challenger.challenger_share == 0.25
    assert (
        promoted.champion_id == "m2"
        and promoted.history == ("m1",)
        and promoted.challenger_id == "m3"
    )
    assert rolled.champion_id == "m1" and rolled.history == ()
    with engine.connect() as connection:
        events = store.list_model_events(connection)
        assignments = store.load_assignments(connection)
        assert verify_chain(connection).ok
    assert assignments["application"].champion_id == "m1"
    assert [e.action for e in events][:3] == ["rolled_back", "promoted", "promoted"]
    assert events[0].note == "bad AUC" and events[0].previous_model_id == "m2"


def test_a_second_process_can_append_while_the_service_writes(engine: Engine, db_url: str) -> None:
    # arrange: a second engine stands for the CLI in another process
    other = make_engine(db_url)

    async def run() -> None:
        writer = GroupCommitWriter(engine)
        try:
            for round_ in range(5):
                batch = [writer.submit_decision(decision(round_ * 10 + i)) for i in range(10)]
                await asyncio.to_thread(
                    job,
                    other,
                    lambda c, ch, r=round_: store.register_model(
                        c,
                        ch,
                        model_id=f"m{r}",
                        stage="collection",
                        artifact_sha256="a" * 64,
                        actor="cli",
                    ),
                )
                await asyncio.gather(*batch)
        finally:
            writer.close()

    # act
    asyncio.run(run())

    # assert
    with engine.connect() as connection:
        report = verify_chain(connection)
    other.dispose()
    assert report.ok, report.problem
    assert report.decisions == 50
