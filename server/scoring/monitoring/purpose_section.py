"""The ``purpose_classifier`` section of the monitoring summary: held-out accuracy by language.

Imported through :data:`server.scoring.monitoring.report.SECTION_MODULES`. The classifier is
trained as the service trains it (generated labelled descriptions plus every correction people
stored in this database) and measured on generated descriptions it never saw, in English and in
Chinese, so the figure says how well it reads each language rather than how well it remembers.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from sqlalchemy.engine import Connection

from fedrisk.decisions.purpose import train_with_corrections
from fedrisk.decisions.purpose_texts import LANGUAGES, generate_purpose_texts
from server.scoring.monitoring.report import register_section
from server.scoring.purpose import corrections

SEED: Final = 20261204
"""Seed of the generated training and held-out descriptions (the same figure on every run)."""
TRAIN_TEXTS: Final = 1600
HELD_OUT_PER_LANGUAGE: Final = 400


def purpose_accuracy(connection: Connection, *, seed: int = SEED) -> dict[str, Any]:
    """Train on generated descriptions plus this database's corrections; accuracy on held-out
    generated descriptions, overall and per language."""
    rng = np.random.default_rng(seed)
    train = generate_purpose_texts(rng, TRAIN_TEXTS)
    held_out = {
        lang: generate_purpose_texts(rng, HELD_OUT_PER_LANGUAGE, language=lang)
        for lang in LANGUAGES
    }
    fixed_texts, fixed_labels = corrections(connection)
    classifier = train_with_corrections(
        [t.text for t in train],
        [t.label for t in train],
        corrected_texts=fixed_texts,
        corrected_labels=fixed_labels,
    )
    by_language = {
        lang: classifier.accuracy([t.text for t in texts], [t.label for t in texts])
        for lang, texts in held_out.items()
    }
    everything = [t for texts in held_out.values() for t in texts]
    return {
        "accuracy": classifier.accuracy(
            [t.text for t in everything], [t.label for t in everything]
        ),
        "accuracy_by_language": by_language,
        "held_out_texts": len(everything),
        "training_texts": len(train),
        "corrections": len(fixed_texts),
    }


register_section("purpose_classifier", purpose_accuracy)
