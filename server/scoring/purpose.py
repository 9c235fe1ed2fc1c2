"""Loan purposes in the scoring database: classify a decision's description, queue the unsure
ones for a person, take their correction from the review queue, and hand corrections to the next
training.

A confident prediction is stored as the label (``status`` ``auto``). An unsure one is stored
``queued`` and a ``purpose_label`` item joins the existing review queue, its reason carrying the
text and the model's guess; a risk officer resolves it through ``/v1/reviews/{id}/resolve`` with
``relabel`` and the right ``label`` (``corrected``) or ``no_action`` to keep the guess
(``confirmed``). :func:`corrections` returns the corrected texts for
:func:`fedrisk.decisions.purpose.train_with_corrections`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.engine import Connection

from fedrisk.decisions.purpose import (
    MAX_TEXT_CHARS,
    PURPOSES,
    PurposeClassifier,
    train_with_corrections,
)
from fedrisk.errors import ConfigError
from server.scoring import store
from server.scoring.audit import AuditChain, utc_now
from server.scoring.db.tables import purpose_labels, review_items
from server.scoring.errors import ConflictError, InvalidInputError, NotFoundError
from server.scoring.settings import Settings
from server.scoring.store import ReviewItem

REVIEW_KIND = "purpose_label"
RELABEL = "relabel"
KEEP = "no_action"
REASON_TEXT_CHARS = 300


@dataclass(frozen=True)
class PurposeRecord:
    """A decision's stored purpose: the model's guess and, once known, the label."""

    decision_id: str
    predicted: str
    confidence: float
    label: str | None
    status: str
    review_item_id: int | None


def classify_and_record(
    connection: Connection,
    chain: AuditChain,
    classifier: PurposeClassifier,
    *,
    decision_id: str,
    text: str,
) -> PurposeRecord:
    """Classify ``text`` of decision ``decision_id`` and store it; queue it for review when the
    model is unsure.

    Raises
    ------
    NotFoundError
        Unknown decision.
    ConflictError
        The decision's purpose was already recorded.
    """
    store.get_decision(connection, decision_id)
    exists = connection.execute(
        select(purpose_labels.c.label_id).where(purpose_labels.c.decision_id == decision_id)
    ).first()
    if exists is not None:
        raise ConflictError(f"the purpose of decision {decision_id} was already recorded")
    (guess,) = classifier.predict([text])
    stamp = utc_now()
    item_id: int | None = None
    if guess.needs_review:
        shown = text if len(text) <= REASON_TEXT_CHARS else text[:REASON_TEXT_CHARS] + "…"
        item_id = int(
            connection.execute(
                insert(review_items)
                .values(
                    decision_id=decision_id,
                    stage="application",
                    kind=REVIEW_KIND,
                    status="open",
                    reason=f"purpose unsure ({guess.label}, p={guess.confidence:.2f}): {shown}",
                    created_at=stamp,
                )
                .returning(review_items.c.item_id)
            ).scalar_one()
        )
    record = PurposeRecord(
        decision_id=decision_id,
        predicted=guess.label,
        confidence=guess.confidence,
        label=None if guess.needs_review else guess.label,
        status="queued" if guess.needs_review else "auto",
        review_item_id=item_id,
    )
    connection.execute(
        insert(purpose_labels).values(
            decision_id=decision_id,
            text=text,
            predicted=record.predicted,
            confidence=record.confidence,
            label=record.label,
            status=record.status,
            review_item_id=item_id,
            created_at=stamp,
        )
    )
    chain.append(
        "purpose_classified",
        {
            "decision_id": decision_id,
            "predicted": record.predicted,
            "confidence": round(record.confidence, 6),
            "review_item_id": item_id,
        },
        created_at=stamp,
    )
    return record


def _invalid(message: str) -> InvalidInputError:
    return InvalidInputError([{"type": "value_error", "loc": ["body", "label"], "msg": message}])


def resolve_review_item(
    connection: Connection,
    chain: AuditChain,
    *,
    item_id: int,
    reviewer: str,
    resolution: str,
    note: str,
    label: str | None,
) -> ReviewItem:
    """Resolve any review item; a ``purpose_label`` item also records the reviewer's label.

    Raises
    ------
    InvalidInputError
        ``relabel`` or a label on another kind of item, or a purpose item resolved otherwise
        than ``relabel`` with a known purpose or ``no_action`` without one.
    NotFoundError, ConflictError
        As :func:`server.scoring.store.resolve_review`.
    """
    item = store.get_review(connection, item_id, lock=True)
    if item.kind != REVIEW_KIND:
        if resolution == RELABEL or label is not None:
            raise _invalid(f"label and {RELABEL} must be used on {REVIEW_KIND} items only; "
                           f"item {item_id} is {item.kind}")  # fmt: skip
        return store.resolve_review(
            connection, chain, item_id=item_id, reviewer=reviewer, resolution=resolution, note=note
        )
    if resolution == RELABEL and label not in PURPOSES:
        raise _invalid(f"label must be one of {list(PURPOSES)}; got {label!r}")
    if resolution not in (RELABEL, KEEP) or (resolution == KEEP and label is not None):
        raise _invalid(f"a {REVIEW_KIND} item must be resolved {RELABEL} with a label or {KEEP} "
                       f"without one; got {resolution} with label {label!r}")  # fmt: skip
    resolved = store.resolve_review(
        connection, chain, item_id=item_id, reviewer=reviewer, resolution=resolution, note=note
    )
    row = connection.execute(
        select(purpose_labels.c.predicted).where(purpose_labels.c.review_item_id == item_id)
    ).first()
    if row is None:
        raise NotFoundError(f"review item {item_id} has no stored purpose text")
    final = label if resolution == RELABEL else str(row.predicted)
    connection.execute(
        update(purpose_labels)
        .where(purpose_labels.c.review_item_id == item_id)
        .values(
            label=final,
            status="corrected" if final != row.predicted else "confirmed",
            reviewed_by=reviewer,
            reviewed_at=resolved.resolved_at,
        )
    )
    chain.append(
        "purpose_reviewed",
        {"item_id": item_id, "decision_id": item.decision_id, "label": final, "reviewer": reviewer},
    )
    return resolved


def get_purpose(connection: Connection, decision_id: str) -> PurposeRecord:
    """The stored purpose of a decision. Raises NotFoundError."""
    row = connection.execute(
        select(purpose_labels).where(purpose_labels.c.decision_id == decision_id)
    ).first()
    if row is None:
        raise NotFoundError(f"no purpose recorded for decision {decision_id}")
    return PurposeRecord(
        decision_id=row.decision_id,
        predicted=row.predicted,
        confidence=float(row.confidence),
        label=row.label,
        status=row.status,
        review_item_id=row.review_item_id,
    )


def corrections(connection: Connection) -> tuple[list[str], list[str]]:
    """Texts whose label a person changed, and those labels (oldest first): the next training's
    corrections."""
    rows = connection.execute(
        select(purpose_labels.c.text, purpose_labels.c.label)
        .where(purpose_labels.c.status == "corrected")
        .order_by(purpose_labels.c.label_id)
    ).all()
    return [str(r.text) for r in rows], [str(r.label) for r in rows]


def read_examples(path: Path) -> tuple[list[str], list[str]]:
    """Texts and labels of a CSV with columns ``text`` and ``label``.

    Raises
    ------
    ConfigError
        An unreadable file, missing columns, or rows with an empty text or an unknown purpose
        (every such row listed by line number, up to ten).
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not {"text", "label"} <= set(reader.fieldnames or ()):
                raise ConfigError(
                    f"purpose examples {path} must have columns text and label; "
                    f"got {reader.fieldnames}"
                )
            rows = [(reader.line_num, r["text"], r["label"]) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"purpose examples {path} must be a readable UTF-8 CSV; got {e}") from e
    problems = [
        f"line {line}: label must be one of {list(PURPOSES)} and text 1..{MAX_TEXT_CHARS} "
        f"characters; got label {label!r}"
        for line, text, label in rows
        if label not in PURPOSES or not (text or "").strip() or len(text) > MAX_TEXT_CHARS
    ]
    if problems or not rows:
        listed = "; ".join(problems[:10]) or "no rows"
        raise ConfigError(f"purpose examples {path}: {len(problems)} bad row(s): {listed}")
    return [text for _, text, _ in rows], [label for _, _, label in rows]


@dataclass(frozen=True)
class PurposeTraining:
    """A freshly trained classifier and what it learnt from."""

    classifier: PurposeClassifier
    examples: int
    corrections: int


def train_purpose_classifier(engine: Engine, settings: Settings) -> PurposeTraining:
    """Train on the configured examples plus every correction stored so far (blocking)."""
    if settings.purpose_examples_path is None:
        raise ConfigError("purpose_examples_path must be set to train the purpose classifier")
    texts, labels = read_examples(settings.purpose_examples_path)
    with engine.connect() as connection:
        fixed_texts, fixed_labels = corrections(connection)
    classifier = train_with_corrections(
        texts,
        labels,
        corrected_texts=fixed_texts,
        corrected_labels=fixed_labels,
        classifier=PurposeClassifier(min_confidence=settings.purpose_min_confidence),
    )
    return PurposeTraining(classifier, len(texts), len(fixed_texts))
