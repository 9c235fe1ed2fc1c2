"""fedrisk.federation.processes on real subprocesses: trees stop, SIGTERM once, free ports, Flower
env."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedrisk.errors import ConfigError, ExecutableNotFoundError, FedRiskError
from fedrisk.federation.processes import (
    console_script,
    descendants,
    flower_environment,
    is_alive,
    pick_free_port,
    stop_process_tree,
    wait_in_foreground,
)
from tests.support.processes import wait_for

pytestmark = pytest.mark.integration

WAIT = 10.0

# A child that logs every SIGTERM it gets and, like flwr, needs a moment to shut down gracefully.
GRACEFUL_CHILD = """
import signal, sys, time
log = sys.argv[1]
def on_term(signum, frame):
    with open(log, "a") as f:
        f.write("TERM\\n")
    time.sleep(0.5)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
with open(log, "a") as f:
    f.write("ready\\n")
while True:
    time.sleep(1)
"""


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A shell leading its own session with two ``sleep`` children in its group and one outside.

    The ``setsid`` child mirrors flower-superexec, which leaves the SuperLink's process group.
    """
    proc = subprocess.Popen(
        ["sh", "-c", "sleep 300 & sleep 300 & setsid sleep 300 & wait"],
        start_new_session=True,
    )
    try:
        # the setsid child exists (as a forked sh) a moment before it leaves the group: wait
        # for both, or the test would race the fork
        wait_for(
            lambda: _children_and_outsiders(proc.pid) == (3, 1),
            timeout=WAIT,
            what="3 sleep children, one of them in its own session",
        )
        yield proc
    finally:
        if proc.poll() is None:
            stop_process_tree(proc.pid, process=proc, grace=1.0)


def _children_and_outsiders(root: int) -> tuple[int, int]:
    children = descendants(root)
    outside = 0
    for pid in children:
        try:
            outside += os.getpgid(pid) != root
        except ProcessLookupError:
            return (-1, -1)
    return (len(children), outside)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except OSError:
        return []


def test_a_tree_of_sleep_children_is_fully_stopped(tree: subprocess.Popen[bytes]) -> None:
    # arrange
    members = [tree.pid, *descendants(tree.pid)]
    outside_group = [pid for pid in members if os.getpgid(pid) != tree.pid]

    # act
    stop_process_tree(tree.pid, process=tree, grace=5.0)

    # assert
    assert len(outside_group) == 1  # the setsid child really left the group
    assert not [pid for pid in members if is_alive(pid)]
    assert tree.returncode is not None  # reaped through its Popen


def test_each_process_gets_sigterm_once_and_may_shut_down_gracefully(tmp_path: Path) -> None:
    # arrange: the root and its child both trap SIGTERM; the child is in the root's group
    root_log, child_log = tmp_path / "root.log", tmp_path / "child.log"
    script = tmp_path / "graceful.py"
    script.write_text(GRACEFUL_CHILD)
    proc = subprocess.Popen(
        [
            "sh",
            "-c",
            f'"{sys.executable}" "{script}" "{child_log}" & exec "{sys.executable}" "{script}" '
            f'"{root_log}"',
        ],
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: "ready" in _read_lines(root_log) and "ready" in _read_lines(child_log),
            timeout=WAIT,
            what="both graceful children ready",
        )
        child = descendants(proc.pid)

        # act
        stop_process_tree(proc.pid, process=proc, grace=5.0)

        # assert
        assert _read_lines(root_log) == ["ready", "TERM"]
        assert _read_lines(child_log) == ["ready", "TERM"]
        assert proc.returncode == 0  # exited from its handler, not killed
        assert not [pid for pid in child if is_alive(pid)]
    finally:
        if proc.poll() is None:
            stop_process_tree(proc.pid, process=proc, grace=1.0)


def test_sigkill_follows_the_grace_period_when_sigterm_is_ignored() -> None:
    # arrange: ignored signals are inherited, so the sleep children ignore SIGTERM too
    proc = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; sleep 300 & sleep 300 & wait"], start_new_session=True
    )
    wait_for(lambda: len(descendants(proc.pid)) == 2, timeout=WAIT, what="2 sleep children")
    members = [proc.pid, *descendants(proc.pid)]
    started = time.monotonic()

    # act
    stop_process_tree(proc.pid, process=proc, grace=0.5)

    # assert
    assert 0.5 <= time.monotonic() - started < WAIT
    assert proc.returncode == -9
    assert not [pid for pid in members if is_alive(pid)]


def test_children_left_in_the_group_after_the_root_exits_are_stopped(tmp_path: Path) -> None:
    # arrange: the root exits at once; its sleep child is reparented but stays in the group
    pid_file = tmp_path / "child.pid"
    proc = subprocess.Popen(
        ["sh", "-c", f'sleep 300 & echo $! > "{pid_file}"; exit 0'], start_new_session=True
    )
    proc.wait(timeout=WAIT)
    orphan = int(pid_file.read_text())
    assert is_alive(orphan)
    assert orphan not in descendants(proc.pid)

    # act
    stop_process_tree(proc.pid, process=proc, grace=5.0)

    # assert: gone when stop_process_tree returns, not some time later
    assert not is_alive(orphan)


def test_orphans_in_a_group_led_by_a_descendant_are_stopped(tmp_path: Path) -> None:
    # arrange: like Ray's workers under flower-superexec, an orphan (parent gone) lives on in the
    # group of a descendant that left the root's session
    orphan_file = tmp_path / "orphan.pid"
    leader = f"(sleep 300 & echo \\$! > '{orphan_file}'); exec sleep 301"
    proc = subprocess.Popen(["sh", "-c", f'setsid sh -c "{leader}" & wait'], start_new_session=True)
    try:
        wait_for(lambda: _read_lines(orphan_file) != [], timeout=WAIT, what="orphan started")
        orphan = int(orphan_file.read_text())
        wait_for(lambda: len(descendants(proc.pid)) == 1, timeout=WAIT, what="orphan reparented")
        (leader_pid,) = descendants(proc.pid)
        assert os.getpgid(orphan) == leader_pid != proc.pid
        assert orphan not in descendants(proc.pid)

        # act
        stop_process_tree(proc.pid, process=proc, grace=5.0)

        # assert
        assert not is_alive(orphan)
        assert not is_alive(leader_pid)
    finally:
        if proc.poll() is None:
            stop_process_tree(proc.pid, process=proc, grace=1.0)


def test_a_dead_pid_is_not_an_error_and_this_process_is_refused() -> None:
    # arrange: a child that exited with its own code and was reaped
    proc = subprocess.Popen(["sh", "-c", "exit 7"], start_new_session=True)
    proc.wait(timeout=WAIT)

    # act: no error
    stop_process_tree(proc.pid, process=proc, grace=1.0)

    # assert: the real exit code is kept (no signal was recorded)
    assert proc.returncode == 7
    assert not is_alive(proc.pid)
    for own in (os.getpid(), os.getpgrp(), 1):
        with pytest.raises(ConfigError, match="pid must be") as refused:
            stop_process_tree(own)
        assert str(own) in str(refused.value)
    assert is_alive(os.getpid())


def test_a_zombie_is_not_alive() -> None:
    # arrange: a child that exited but has not been reaped yet
    proc = subprocess.Popen(["true"])
    stat = Path(f"/proc/{proc.pid}/stat")
    wait_for(
        lambda: not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z",
        timeout=WAIT,
        what="child exited",
    )

    # act / assert
    try:
        assert not is_alive(proc.pid)
    finally:
        proc.wait(timeout=WAIT)


def test_a_free_port_is_bindable() -> None:
    # act
    port = pick_free_port()

    # assert
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
    assert 0 < port < 65536


def test_a_free_ipv6_port_is_bindable() -> None:
    # arrange
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this Python build")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError as e:
        pytest.skip(f"::1 is not available here: {e}")

    # act
    port = pick_free_port("::1")

    # assert
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.bind(("::1", port))
        assert sock.getsockname()[1] == port


def test_the_flower_environment_has_the_flower_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # arrange: a relative home, and a PATH without this interpreter's bin
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin")
    monkeypatch.delenv("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", raising=False)
    monkeypatch.setenv("FEDRISK_PROBE", "kept")
    before = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)

    # act
    env = flower_environment(Path("flwr-home"))
    again = flower_environment(Path("flwr-home"))

    # assert
    assert env["FLWR_HOME"] == str(tmp_path.resolve() / "flwr-home")
    assert env["FLWR_TELEMETRY_ENABLED"] == "0"
    assert env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert float(env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"]) < 1.0  # Flower's default is 1 s
    assert env["PATH"] == bin_dir + os.pathsep + "/usr/bin"
    assert env["FEDRISK_PROBE"] == "kept"
    assert again == env
    assert dict(os.environ) == before  # the parent's environment is untouched


def test_the_flower_environment_reaches_a_child(tmp_path: Path) -> None:
    # act
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, shutil; print(os.environ['FLWR_HOME'], "
            "os.environ['FLWR_TELEMETRY_ENABLED'], os.environ['FLWR_DISABLE_UPDATE_CHECK'], "
            "shutil.which('flwr'))",
        ],
        env=flower_environment(tmp_path),
        capture_output=True,
        text=True,
        check=True,
        timeout=WAIT,
    )

    # assert
    home, telemetry, update_check, flwr = done.stdout.split()
    assert (home, telemetry, update_check) == (str(tmp_path.resolve()), "0", "1")
    assert flwr == console_script("flwr")


def test_console_scripts_are_found_beside_the_interpreter_or_refused() -> None:
    # act
    flwr = console_script("flwr")

    # assert
    assert Path(flwr) == Path(sys.executable).parent / "flwr"
    with pytest.raises(ExecutableNotFoundError, match="must be installed") as caught:
        console_script("fedrisk-no-such-script")
    assert isinstance(caught.value, FedRiskError)
    assert isinstance(caught.value, FileNotFoundError)


def test_a_foreground_child_that_exits_gives_its_code_and_is_stopped() -> None:
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    stopped: list[int] = []

    code = wait_in_foreground(child.wait, lambda: stopped.append(child.pid))

    assert code == 3
    assert stopped == [child.pid]


def test_sigterm_interrupts_the_foreground_wait_and_stops_the_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.5, os.kill, args=(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        code = wait_in_foreground(child.wait, lambda: stop_process_tree(child.pid, process=child))
    finally:
        timer.cancel()

    assert code is None
    assert child.poll() is not None  # stopped by its pid, not left running
    assert signal.getsignal(signal.SIGTERM) is before
