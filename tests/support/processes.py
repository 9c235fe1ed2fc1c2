"""Test helpers for real processes: free ports, bounded waits, and stop-by-PID of whole trees.

Use the ``process_registry`` fixture (import it into a ``conftest.py``) and ``track`` every pid a
test starts: teardown stops each one, its process group and all descendants, even when the test
failed. Waits are bounded; nothing here kills by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (picked by the OS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports (all sockets held open until every port is chosen)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def is_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc; empty on systems without it)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def signal_tree(root: int, targets: list[int], sig: int) -> None:
    """Send ``sig`` once to ``root``'s process group and once to each target outside it.

    A process must not get SIGTERM twice: flwr's handler restores the default one on the first,
    so a second would kill it before its graceful shutdown (e.g. a SuperNode's deactivation).
    """
    group_sent = False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(root, sig)
        group_sent = True
    for target in targets:
        with contextlib.suppress(OSError):
            if group_sent and os.getpgid(target) == root:
                continue
            os.kill(target, sig)


def stop_pid(pid: int, *, timeout: float = 10.0) -> list[int]:
    """Stop ``pid``, its process group and descendants: SIGTERM, then SIGKILL after ``timeout``.

    Returns the pids still alive at the end (normally none). Never raises for a dead pid.
    """
    targets = [pid, *descendants(pid)]
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        signal_tree(pid, targets, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            for target in targets:  # reap our own children so they do not linger as zombies
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(target, os.WNOHANG)
            if not any(is_alive(t) for t in targets):
                return []
            time.sleep(0.1)
    return [t for t in targets if is_alive(t)]


def start_process(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session (its own process group), output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


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
