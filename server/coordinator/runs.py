"""Submitting a federated run to a SuperLink with ``flwr run`` and following its real status.

``flwr run`` exits 0 even when the run fails, so the outcome is read from ``flwr ls --run-id``
and from the ServerApp's own progress log; a failed run raises ``RunFailedError`` saying why, in
the words of the code that failed (see :func:`failure_reason`).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrisk.federation.processes import console_script, flower_environment
from server.coordinator.progress import read_events

FLOWER_APP_DIR = Path(__file__).resolve().parent / "flower_app"


class RunFailedError(RuntimeError):
    """The federated run ended in a state other than ``finished:completed``."""


@dataclass(frozen=True)
class RunState:
    """The SuperLink's view of a run, as ``flwr ls --run-id`` reports it."""

    status: str
    """``pending``, ``starting``, ``running`` or ``finished:<completed|failed|stopped>``;
    ``unknown`` when the SuperLink could not be asked."""
    details: str = ""
    """Flower's status details: for a failed run, the exception that ended the ServerApp (or
    the simulation runtime), e.g. ``ServerApp failed with exception: ...``."""


@dataclass(frozen=True)
class RunOutcome:
    """How a run ended, as the coordinator sees it."""

    run_id: str
    status: str
    seconds: float
    events: list[dict[str, Any]]


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def run_config_arg(values: Mapping[str, object]) -> str:
    """``--run-config`` text: space-separated ``key=value`` pairs in TOML syntax."""
    return " ".join(f"{key}={_toml_value(value)}" for key, value in values.items())


def submit_run(
    *,
    connection: str,
    flwr_home: Path,
    run_config: Mapping[str, object],
    federation_config: Mapping[str, object] | None = None,
    app_dir: Path = FLOWER_APP_DIR,
) -> str:
    """Submit the fedrisk Flower App; return the run id."""
    cmd = [console_script("flwr"), "run", str(app_dir), connection, "--format", "json"]
    cmd += ["--run-config", run_config_arg(run_config)]
    if federation_config:
        cmd += ["--federation-config", run_config_arg(federation_config)]
    proc = subprocess.run(
        cmd,
        env=flower_environment(flwr_home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        answer = json.loads(proc.stdout[proc.stdout.index("{") :])
    except (ValueError, json.JSONDecodeError) as e:
        raise RunFailedError(
            f"flwr run did not start the run (exit {proc.returncode}): "
            f"{(proc.stdout + proc.stderr).strip()[-2000:]}"
        ) from e
    if not answer.get("success") or "run-id" not in answer:
        raise RunFailedError(f"flwr run refused the run: {answer}")
    return str(answer["run-id"])


def run_state(*, connection: str, flwr_home: Path, run_id: str) -> RunState:
    """The SuperLink's status of a run and, once it failed, Flower's details of why."""
    proc = subprocess.run(
        [console_script("flwr"), "ls", connection, "--run-id", run_id, "--format", "json"],
        env=flower_environment(flwr_home),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        run = json.loads(proc.stdout[proc.stdout.index("{") :])["runs"][0]
        return RunState(status=str(run["status"]), details=str(run.get("status-details") or ""))
    except (ValueError, KeyError, IndexError, TypeError, json.JSONDecodeError):
        return RunState(status="unknown")


def run_status(*, connection: str, flwr_home: Path, run_id: str) -> str:
    """The SuperLink's status string for a run, e.g. ``running`` or ``finished:failed``."""
    return run_state(connection=connection, flwr_home=flwr_home, run_id=run_id).status


PARTY_PROBLEM_EVENTS = frozenset({"refused", "party-error"})


def failure_reason(events: list[dict[str, Any]], details: str) -> str:
    """Why a run failed, in the words of the code that failed.

    Parameters
    ----------
    events
        The run's progress events. A ``failed`` event carries the exception the ServerApp caught;
        ``refused`` and ``party-error`` events carry the parties' own messages (a ClientApp that
        refused its data or raised).
    details
        Flower's status details of the run (:attr:`RunState.details`). They name the exception
        of a ServerApp that failed before it could log one, e.g. on a bad run config.

    Notes
    -----
    A party's message is added to the server's verdict unless the verdict already quotes it: the
    server may only say that too few parties answered, the party's message says what went wrong
    there. Each distinct party message appears once.
    """
    failures = [str(e.get("reason")) for e in events if e.get("event") == "failed"]
    reason = failures[-1] if failures else details.strip()
    party_problems = dict.fromkeys(
        f"{e.get('event')}: {e.get('reason')}"
        for e in events
        if e.get("event") in PARTY_PROBLEM_EVENTS and str(e.get("reason")) not in reason
    )
    reason = "; ".join(part for part in (reason, *party_problems) if part)
    return reason or "neither the ServerApp nor Flower recorded a reason"


TERMINAL_EVENTS = frozenset({"finished", "failed"})


def wait_for_run(
    *,
    connection: str,
    flwr_home: Path,
    run_id: str,
    progress_path: Path,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    timeout: float = 3600.0,
    poll: float = 0.5,
    status_every: float = 15.0,
    skip_events: int = 0,
) -> RunOutcome:
    """Follow a run until it finishes; raise ``RunFailedError`` unless it completed.

    Progress events are passed to ``on_event`` as they appear, for a live display. The first
    ``skip_events`` lines of the progress file belong to earlier attempts (a resumed run) and
    are ignored.

    Notes
    -----
    The progress file is read every ``poll`` seconds; the SuperLink is asked for the run's status
    (``flwr ls``) once the ServerApp logged its last event and, to notice a run that ended
    without logging one (a ServerApp that failed to start, was killed or stopped), 1, 2, 4, ...
    seconds apart, at most ``status_every``.
    Each ``flwr ls`` is a fresh process that imports Flower, about a CPU-second: asked every
    second, it took one of a 2-core machine's cores away from the federation it was watching.
    """
    started = time.monotonic()
    seen = skip_events
    state = RunState(status="unknown")
    asked, gap = started, 1.0
    while True:
        events = read_events(progress_path)
        for event in events[seen:]:
            if on_event is not None:
                on_event(event)
        seen = max(seen, len(events))
        ended = any(e.get("event") in TERMINAL_EVENTS for e in events[skip_events:])
        now = time.monotonic()
        if ended or now - asked >= gap:
            asked, gap = now, min(2.0 * gap, status_every)
            state = run_state(connection=connection, flwr_home=flwr_home, run_id=run_id)
            if state.status.startswith("finished"):
                break
        if now - started > timeout:
            raise RunFailedError(
                f"run {run_id} did not finish within {timeout:.0f}s ({state.status})"
            )
        time.sleep(poll)
    events = read_events(progress_path)
    for event in events[seen:]:
        if on_event is not None:
            on_event(event)
    events = events[skip_events:]
    outcome = RunOutcome(
        run_id=run_id, status=state.status, seconds=time.monotonic() - started, events=events
    )
    if state.status != "finished:completed" or any(e.get("event") == "failed" for e in events):
        reason = failure_reason(events, state.details)
        raise RunFailedError(f"run {run_id} ended as {state.status}: {reason}")
    return outcome
