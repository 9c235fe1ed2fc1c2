"""Child-process plumbing shared by every launcher: free ports, Flower's environment, stop by PID.

The SuperLink (``server``), the SuperNode (``clients``), the simulation engine and the tests all
start flwr console scripts and must stop them the same careful way. ``clients`` and ``server`` may
not import each other, so the one copy lives in the core, in pure stdlib: this module names
Flower's environment variables and console scripts but never imports flwr.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final, Protocol, TypeAlias

from fedrisk.errors import ConfigError, ExecutableNotFoundError, FedRiskError, ProcessStopError

DEFAULT_GRACE: Final = 15.0
"""Seconds a tree gets between SIGTERM and SIGKILL (a SuperNode deactivates itself meanwhile)."""

KILL_WAIT: Final = 5.0
"""Seconds to wait for a tree to vanish after SIGKILL before reporting survivors."""

_POLL: Final = 0.1
SUPEREXEC_POLL_ENV: Final = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
"""flower-superexec's documented poll interval (default 1 s, at least 0.01 s)."""
SUPEREXEC_POLL: Final = "0.1"
"""Seconds between a SuperExec's task polls: a run's ServerApp starts 0.45 s sooner on average."""

Process: TypeAlias = subprocess.Popen[bytes] | subprocess.Popen[str]
"""A ``Popen`` of either text mode."""


# --------------------------------------------------------------------------------------------------
# Ports, executables, environment
# --------------------------------------------------------------------------------------------------


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it).

    Parameters
    ----------
    host
        The address the port will be bound on; IPv6 literals (containing ``:``) are supported.

    Returns
    -------
    int
        The port. It is free when returned, not reserved: bind it soon.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _interpreter_bin() -> Path:
    # Not resolved: in a venv, sys.executable is a symlink inside .venv/bin, and that directory
    # (not the base interpreter's) holds the console scripts.
    return Path(sys.executable).parent


def console_script(name: str) -> str:
    """Absolute path of console script ``name``, preferring the one beside ``sys.executable``.

    The running interpreter's copy comes first so that the pinned flwr of this environment is used
    even when the venv is not activated; ``PATH`` is the fallback.

    Raises
    ------
    ExecutableNotFoundError
        ``name`` is neither beside the interpreter nor on ``PATH``.
    """
    beside = _interpreter_bin() / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ExecutableNotFoundError(
            f"console script {name} must be installed beside {sys.executable} or on PATH; "
            "got neither"
        )
    return found


def flower_environment(flwr_home: Path) -> dict[str, str]:
    """Environment for a Flower child process: ``os.environ`` plus Flower's settings.

    Parameters
    ----------
    flwr_home
        The process's ``FLWR_HOME`` (its ``config.toml`` names the SuperLink connections); made
        absolute because children run in other working directories.

    Returns
    -------
    dict
        A new mapping (``os.environ`` is untouched) with ``FLWR_HOME``,
        ``FLWR_TELEMETRY_ENABLED=0``, ``FLWR_DISABLE_UPDATE_CHECK=1``, ``PYTHONUNBUFFERED=1``,
        ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL=0.1`` unless already set, and the interpreter's bin
        directory first on ``PATH``.

    Notes
    -----
    Telemetry and the update check would contact Flower's servers from a party's machine. The
    SuperLink's SuperExec polls for the run's ServerApp task once a second by default; a tenth
    of that costs one localhost call per poll and takes most of the wait out of starting a run. The
    SuperLink and SuperNode start ``flower-superexec``, ``flwr-serverapp`` and ``flwr-clientapp``
    by bare name, so this environment's bin must win over any other flwr on ``PATH``. Unbuffered
    output keeps log files current when a child is killed.
    """
    env = dict(os.environ)
    bin_dir = str(_interpreter_bin())
    path = env.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        # An empty PATH must not become "bin:", whose empty entry would mean the working directory.
        path = bin_dir + os.pathsep + path if path else bin_dir
    env.update(
        {
            "FLWR_HOME": str(Path(flwr_home).resolve()),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
            "PATH": path,
        }
    )
    env.setdefault(SUPEREXEC_POLL_ENV, SUPEREXEC_POLL)
    return env


# --------------------------------------------------------------------------------------------------
# Process trees
# --------------------------------------------------------------------------------------------------


def _process_table() -> dict[int, tuple[int, int]]:
    """``pid -> (parent pid, process group)`` of every process (Linux /proc; empty elsewhere)."""
    table: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name (field 2) may hold spaces and ")", so split after its last ")".
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            table[int(entry.name)] = (int(fields[1]), int(fields[2]))
    return table


def _walk(starts: Iterable[int], *, groups: bool) -> list[int]:
    """``starts`` and every descendant of any of them, without duplicates.

    With ``groups``, members of a process group led by a collected process count too, even when
    reparented: once a leader's parent exits, its children move to init but stay in its group.
    Ray's workers do exactly that inside flower-superexec's group in a simulation.
    """
    table = _process_table()
    children: dict[int, list[int]] = {}
    members: dict[int, list[int]] = {}
    for pid, (ppid, pgrp) in table.items():
        children.setdefault(ppid, []).append(pid)
        if groups and pgrp != pid:
            members.setdefault(pgrp, []).append(pid)
    found = dict.fromkeys(starts)
    stack = list(found)
    while stack:
        pid = stack.pop()
        for other in (*children.get(pid, ()), *members.get(pid, ())):
            if other not in found:
                found[other] = None
                stack.append(other)
    return list(found)


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc; empty elsewhere)."""
    return _walk([pid], groups=False)[1:]


def _tree(root: int, known: Sequence[int] = ()) -> list[int]:
    """``root`` and ``known`` with their descendants and the members of groups they lead."""
    return _walk([root, *known], groups=True)


def is_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (a process another user owns counts as alive)."""
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


def child_running(pid: int, process: Process | None) -> bool:
    """Whether a child is alive: ``process.poll()`` when we hold its ``Popen``, else by ``pid``."""
    if process is not None:
        return process.poll() is None
    return is_alive(pid)


def start_logged_process(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a session of its own, stdin closed, output appended to ``log_path``
    (``env=None``: this process's environment); stop it with ``stop_process_tree``."""
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_flower_process(
    argv: Sequence[str], *, cwd: Path, flwr_home: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    """Start a Flower console script with ``flower_environment(flwr_home)`` (see
    :func:`start_logged_process`)."""
    return start_logged_process(argv, cwd=cwd, env=flower_environment(flwr_home), log_path=log_path)


def signal_tree(root: int, targets: Iterable[int], sig: int) -> None:
    """Send ``sig`` once to ``root``'s process group and once to each target outside that group.

    Notes
    -----
    No process may get SIGTERM twice: flwr's handler restores the default handler on the first,
    so a second SIGTERM would kill it before its graceful shutdown (a SuperNode deactivating
    itself at the SuperLink). Hence one ``killpg`` for the group, and single signals only for
    processes that left it (``flower-superexec`` runs in a session of its own).
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


def _reap(pid: int, process: Process | None) -> None:
    # Reap through the Popen when there is one, so its returncode stays the real exit code;
    # otherwise reap the root only if it is our child (anything else raises ChildProcessError).
    if process is not None:
        process.poll()
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _wait_gone(
    root: int, targets: Sequence[int], *, process: Process | None, timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        _reap(root, process)
        if not any(is_alive(t) for t in targets):
            # the root may have died between the reap above and this check: reap it again so a
            # Popen's returncode is always set once the tree is gone
            _reap(root, process)
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)


def stop_process_tree(
    pid: int, *, process: Process | None = None, grace: float = DEFAULT_GRACE
) -> None:
    """Stop ``pid``, its process group and every descendant: SIGTERM, then SIGKILL after ``grace``.

    Parameters
    ----------
    pid
        The root; normally started with ``start_new_session=True`` so it leads its own group.
    process
        The root's ``Popen`` when this interpreter started it; it is reaped through it.
    grace
        Seconds between SIGTERM and SIGKILL.

    Raises
    ------
    ConfigError
        ``pid`` is this process, its process group or init.
    ProcessStopError
        Processes were still alive ``KILL_WAIT`` seconds after SIGKILL (``survivors``).

    Notes
    -----
    The tree is the root, its descendants and the members of every process group one of them
    leads. It is collected before anything is signalled: once the root exits, its children are
    reparented and no longer found under it. flower-superlink starts flower-superexec in a session
    of its own, so signalling the root's group alone would leave it (and Ray's workers in its
    group) behind; processes outside the root's group are signalled one by one. Processes that
    appear during the grace period are collected again and get SIGKILL. A dead ``pid`` is not an
    error.
    """
    if pid <= 1 or pid in (os.getpid(), os.getpgrp()):
        raise ConfigError(
            f"pid must be a child process tree to stop; got {pid}, which is init, this process "
            "or its process group"
        )
    targets = _tree(pid)
    signal_tree(pid, targets, signal.SIGTERM)
    gone = _wait_gone(pid, targets, process=process, timeout=grace)
    if gone and not any(is_alive(t) for t in _tree(pid, targets)):
        return
    targets = _tree(pid, targets)
    signal_tree(pid, targets, signal.SIGKILL)
    _wait_gone(pid, targets, process=process, timeout=KILL_WAIT)
    survivors = [t for t in _tree(pid, targets) if is_alive(t)]
    if survivors:
        raise ProcessStopError(
            f"process tree of {pid} must stop after SIGKILL; got survivors {survivors}",
            survivors,
        )


def wait_in_foreground(wait: Callable[[], int], stop: Callable[[], None]) -> int | None:
    """Block on ``wait`` (a child's exit code); Ctrl-C or SIGTERM interrupts it; always ``stop``.

    For the ``start`` commands that keep a server in the foreground. Returns the child's exit
    code, or None when interrupted. ``stop`` runs either way, so nothing is left behind.
    """

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return wait()
    except KeyboardInterrupt:
        return None
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop()


class StartedServer(Protocol):
    """A server a ``start`` command launched: its ``Popen`` (when ours) and how to stop it."""

    @property
    def process(self) -> Process | None:
        """The server's ``Popen`` when this interpreter started it."""

    def stop(self) -> None:
        """Stop the server and everything it started."""


def follow_in_foreground(
    server: StartedServer, *, wait: Callable[[], int] | None = None
) -> int | None:
    """Keep ``server`` in the foreground (:func:`wait_in_foreground`); it is stopped either way.

    ``wait`` blocks until the server ends and returns an exit code (default: its process's
    ``wait``; a server made of several processes passes its own). Returns that exit code, or
    None when interrupted. A stop that fails is not raised: the command is already ending and
    has nothing better to do with it.
    """

    def _stop() -> None:
        with contextlib.suppress(FedRiskError):
            server.stop()

    if wait is None:
        process = server.process
        wait = process.wait if process is not None else lambda: 0
    return wait_in_foreground(wait, _stop)
