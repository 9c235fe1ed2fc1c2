"""Scoring storage on SQLite and PostgreSQL: group commit, audit chain, review queue, models."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from server.scoring import store
from server.scoring.audit import audited_transaction, verify_chain
from server.scoring.cli import cli
from server.scoring.db.engine import make_engine
from server.scoring.db.migrate import upgrade_database
from server.scoring.errors import ConflictError, NotFoundError
from server.scoring.writer import GroupCommitWriter
from tests.support.scoring import decision_write, write_decisions


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    upgrade_database(eng)
    yield eng
    eng.dispose()


def test_group_commit_persists_every_decision_with_its_audit_record(engine: Engine) -> None:
    # arrange
    items = [decision_write(i) for i in range(150)]

    # act
    errors = write_decisions(engine, items)

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
    items = [decision_write(i) for i in range(10)]
    items[5] = decision_write(5, review={"kind": "manual_review", "status": None, "reason": "x"})

    # act
    errors = write_decisions(engine, items)

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
    assert write_decisions(engine, [decision_write(i) for i in range(12)]) == [None] * 12
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
    # arrange: written without the service's checkpoint signer, so only the chain can be checked
    write_decisions(engine, [decision_write(i) for i in range(5)])

    # act
    result = CliRunner().invoke(cli, ["audit", "verify", "--db", db_url, "--chain-only"])

    # assert
    assert result.exit_code == 0, result.output
    assert "audit chain OK: 5 records, 5 decisions" in result.output


def test_review_queue_claim_and_resolve_with_conflicts(engine: Engine) -> None:
    # arrange
    declined = decision_write(1, outcome="decline")
    approved = decision_write(2, outcome="approve")
    review = decision_write(
        3,
        outcome="manual_review",
        review={"kind": "manual_review", "status": "open", "reason": "band"},
    )
    write_decisions(engine, [declined, approved, review])
    declined_id = declined.row["decision_id"]

    # act
    requested = audited_transaction(
        engine,
        lambda c, ch: store.request_human_review(c, ch, decision_id=declined_id, reason="please"),
    )
    with pytest.raises(ConflictError, match="decline only"):
        audited_transaction(
            engine,
            lambda c, ch: store.request_human_review(
                c, ch, decision_id=approved.row["decision_id"], reason="x"
            ),
        )
    with pytest.raises(ConflictError, match="already requested"):
        audited_transaction(
            engine,
            lambda c, ch: store.request_human_review(
                c, ch, decision_id=declined_id, reason="again"
            ),
        )
    with pytest.raises(NotFoundError):
        audited_transaction(
            engine, lambda c, ch: store.request_human_review(c, ch, decision_id="nope", reason="x")
        )
    claimed = audited_transaction(
        engine, lambda c, ch: store.claim_review(c, ch, item_id=requested.item_id, reviewer="ann")
    )
    again = audited_transaction(
        engine, lambda c, ch: store.claim_review(c, ch, item_id=requested.item_id, reviewer="ann")
    )
    with pytest.raises(ConflictError):
        audited_transaction(
            engine,
            lambda c, ch: store.claim_review(c, ch, item_id=requested.item_id, reviewer="bob"),
        )
    with pytest.raises(ConflictError):
        audited_transaction(
            engine,
            lambda c, ch: store.resolve_review(
                c, ch, item_id=requested.item_id, reviewer="bob", resolution="approve", note=""
            ),
        )
    resolved = audited_transaction(
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
        return audited_transaction(
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
    challenger = audited_transaction(
        engine,
        lambda c, ch: store.promote_model(
            c, ch, model_id="m3", role="challenger", share=0.25, default_shares=shares, actor="t"
        ),
    )
    promoted = audited_transaction(
        engine,
        lambda c, ch: store.promote_model(
            c, ch, model_id="m2", role="champion", share=None, default_shares=shares, actor="t"
        ),
    )
    rolled = audited_transaction(
        engine,
        lambda c, ch: store.rollback_stage(c, ch, stage="application", actor="t", note="bad AUC"),
    )
    with pytest.raises(ConflictError):
        audited_transaction(
            engine, lambda c, ch: store.rollback_stage(c, ch, stage="application", actor="t")
        )
    with pytest.raises(ConflictError):
        audited_transaction(
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
                batch = [writer.submit_decision(decision_write(round_ * 10 + i)) for i in range(10)]
                await asyncio.to_thread(
                    audited_transaction,
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
