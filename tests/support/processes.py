"""Test helpers for real processes: start in a new session, bounded waits, stop-by-PID at teardown.

Use the ``process_registry`` fixture (import it into a ``conftest.py``) and ``track`` every pid a
test starts: teardown stops each one, its process group and all descendants, even when the test
failed. Waits are bounded; nothing here kills by name. Free ports, liveness and tree stopping come
from ``fedrisk.federation.processes``, the same code the launchers use.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from fedrisk.errors import ProcessStopError
from fedrisk.federation.processes import (
    pick_free_port,
    start_logged_process,
    stop_process_tree,
)

TEARDOWN_GRACE = 10.0
"""Seconds a tracked process tree gets between SIGTERM and SIGKILL at teardown."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (``fedrisk.federation.processes.pick_free_port``)."""
    return pick_free_port(host)


def stop_pid(pid: int, *, timeout: float = TEARDOWN_GRACE) -> list[int]:
    """Stop ``pid``'s whole tree (``fedrisk.federation.processes.stop_process_tree``) without
    raising.

    Returns the pids still alive after SIGKILL (normally none), for teardown code that must go on
    stopping the other processes and report all survivors at the end.
    """
    try:
        stop_process_tree(pid, grace=timeout)
    except ProcessStopError as e:
        return e.survivors
    return []


def start_process(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session (its own process group), output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return start_logged_process(argv, log_path=log_path, env=env, cwd=cwd)


def wait_for(
    predicate: Callable[[], bool], *, timeout: float, interval: float = 0.2, what: str = "condition"
) -> None:
    """Poll ``predicate`` until true; ``TimeoutError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")
        time.sleep(interval)


def read_log(path: Path) -> str:
    """A log file's text ('' if missing)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


class ProcessRegistry:
    """Pids started by a test, stopped in reverse order at teardown."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    def track(self, pid: int) -> int:
        """Remember ``pid`` for teardown; returns it."""
        self.pids.append(pid)
        return pid

    def stop_all(self) -> list[int]:
        """Stop every tracked pid (newest first); the pids that survived."""
        survivors: list[int] = []
        while self.pids:
            survivors += stop_pid(self.pids.pop())
        return survivors


@pytest.fixture
def process_registry() -> Iterator[ProcessRegistry]:
    """A ``ProcessRegistry`` whose processes are stopped after the test, pass or fail."""
    registry = ProcessRegistry()
    try:
        yield registry
    finally:
        survivors = registry.stop_all()
        assert not survivors, f"processes survived SIGKILL: {survivors}"
