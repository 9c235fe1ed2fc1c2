"""Why a failed run failed: the reason ``wait_for_run`` raises, from the run's own progress log."""

from __future__ import annotations

from pathlib import Path

from server.coordinator.progress import ProgressLog, read_events
from server.coordinator.runs import failure_reason

PARTY_MESSAGE = "PARTY-REFUSED: party_2: column income must be >= 0; got -5 in 3 rows"
FLOWER_DETAILS = "ServerApp failed with exception: invalid run config: model must be 'lr' or 'mlp'"


def _log(tmp_path: Path, *events: tuple[str, dict[str, object]]) -> list[dict[str, object]]:
    progress = ProgressLog(tmp_path / "progress.jsonl")
    for name, fields in events:
        progress.emit(name, **fields)
    return read_events(tmp_path / "progress.jsonl")


def test_the_serverapps_own_failure_comes_first_and_a_quoted_party_is_not_repeated(
    tmp_path: Path,
) -> None:
    verdict = (
        f"FederationError: only 2 parties answered; min-parties is 3. Failures: {PARTY_MESSAGE}"
    )
    events = _log(
        tmp_path,
        ("refused", {"phase": "stats", "reason": PARTY_MESSAGE}),
        ("failed", {"reason": verdict}),
    )

    assert failure_reason(events, FLOWER_DETAILS) == verdict


def test_flowers_details_explain_a_serverapp_that_logged_nothing(tmp_path: Path) -> None:
    assert failure_reason(_log(tmp_path), f"  {FLOWER_DETAILS}\n") == FLOWER_DETAILS


def test_party_errors_the_verdict_does_not_quote_are_added_once(tmp_path: Path) -> None:
    crash = "ClientApp raised: KeyError('enc_global')"
    events = _log(
        tmp_path,
        ("party-error", {"phase": "train", "reason": crash}),
        ("party-error", {"phase": "evaluate", "reason": crash}),
        ("failed", {"reason": "FederationError: train: only 2 parties answered"}),
    )

    assert failure_reason(events, "") == (
        f"FederationError: train: only 2 parties answered; party-error: {crash}"
    )


def test_a_run_with_no_reason_anywhere_says_so(tmp_path: Path) -> None:
    assert failure_reason(_log(tmp_path, ("round", {"round": 1})), "") == (
        "neither the ServerApp nor Flower recorded a reason"
    )
