"""Held-out accuracy of the loan-purpose classifier on generated English and Chinese descriptions.

Run from the repository root::

    .venv/bin/python benchmarks/purpose_accuracy.py                # 2,000 training texts
    .venv/bin/python benchmarks/purpose_accuracy.py --train 5000 --json purpose.json

Training texts come from one seed (both languages mixed), held-out texts from another seed, one
set per language, so no held-out text is drawn with the training generator's random stream. It
prints, per language: accuracy, the share of texts the classifier sends to review (confidence
below its threshold), and the accuracy on the texts it keeps.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from fedrisk.decisions.purpose import PurposeClassifier
from fedrisk.decisions.purpose_texts import LANGUAGES, generate_purpose_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000, help="training texts")
    parser.add_argument("--test", type=int, default=1000, help="held-out texts per language")
    parser.add_argument("--seed", type=int, default=0, help="training seed (held-out: seed+1)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    training = generate_purpose_texts(np.random.default_rng(args.seed), args.train)
    started = time.perf_counter()
    model = PurposeClassifier().fit([t.text for t in training], [t.label for t in training])
    fit_s = time.perf_counter() - started
    results: dict[str, dict[str, float]] = {}
    for language in LANGUAGES:
        held_out = generate_purpose_texts(
            np.random.default_rng(args.seed + 1), args.test, language=language
        )
        predictions = model.predict([t.text for t in held_out])
        right = np.array([p.label == t.label for p, t in zip(predictions, held_out, strict=True)])
        unsure = np.array([p.needs_review for p in predictions])
        results[language] = {
            "accuracy": float(right.mean()),
            "review_share": float(unsure.mean()),
            "accuracy_kept": float(right[~unsure].mean()),
        }
    print(f"trained on {args.train} texts in {fit_s:.2f} s; {args.test} held-out per language")
    print(f"{'language':<9}{'accuracy':>10}{'to review':>11}{'acc. kept':>11}")
    for language, r in results.items():
        print(
            f"{language:<9}{r['accuracy']:>10.3f}{r['review_share']:>11.3f}"
            f"{r['accuracy_kept']:>11.3f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"purpose_classifier": results}, indent=2))


if __name__ == "__main__":
    main()
