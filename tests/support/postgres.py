"""Throw-away PostgreSQL for tests: initdb in a temp dir, 127.0.0.1, a free port, stop by PID.

Binaries come from Debian's ``postgresql`` package (``tests/support/ensure_postgres.sh`` installs
it). Run as root, the server runs as the ``postgres`` user via ``runuser``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


class PostgresUnavailableError(RuntimeError):
    """No PostgreSQL binaries on this machine (tests skip, or fail under CI)."""


def find_pg_bin() -> Path | None:
    """Newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``postgres``."""
    candidates = []
    for path in Path("/usr/lib/postgresql").glob("*/bin"):
        if (path / "initdb").exists() and (path / "postgres").exists():
            try:
                candidates.append((int(path.parent.name.split(".")[0]), path))
            except ValueError:
                continue
    return max(candidates)[1] if candidates else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A running test server. ``url`` points at its ``postgres`` database."""

    host: str
    port: int
    user: str
    data_dir: Path
    pid: int

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3) of ``database``."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, prefix: str = "fedrisk") -> str:
        """Create a fresh database; returns its SQLAlchemy URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb/postgres refuse to run as root; run them as the package's postgres user
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        first = (data_dir / "postmaster.pid").read_text().splitlines()[0]
        return int(first)
    except (OSError, ValueError, IndexError):
        return None


def _stop(pid: int | None, launcher: subprocess.Popen[bytes] | None) -> None:
    if pid is not None and _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)  # fast shutdown: abort sessions, clean stop
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if launcher is not None:
        try:
            launcher.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a private PostgreSQL server; stop it by PID and delete its data on exit.

    Raises
    ------
    PostgresUnavailableError
        No PostgreSQL binaries were found.
    RuntimeError
        The server did not accept connections in time (its log is in the message).
    """
    pg_bin = find_pg_bin()
    if pg_bin is None:
        raise PostgresUnavailableError(
            "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin "
            "(run tests/support/ensure_postgres.sh)"
        )
    root = Path(tempfile.mkdtemp(prefix="fedrisk-pg-"))
    data_dir, socket_dir, log_path = root / "data", root / "sock", root / "postgres.log"
    socket_dir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres", group="postgres")
        shutil.chown(socket_dir, user="postgres", group="postgres")
    root.chmod(0o700)
    launcher: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    try:
        subprocess.run(
            _as_postgres(
                [
                    str(pg_bin / "initdb"),
                    "-D",
                    str(data_dir),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        port = free_port()
        with log_path.open("wb") as log:
            launcher = subprocess.Popen(
                _as_postgres(
                    [
                        str(pg_bin / "postgres"),
                        "-D",
                        str(data_dir),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(port),
                        "-k",
                        str(socket_dir),
                        "-c",
                        "fsync=off",
                        "-c",
                        "synchronous_commit=off",
                        "-c",
                        "full_page_writes=off",
                        "-c",
                        "max_connections=60",
                    ]
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        ready = False
        while time.monotonic() < deadline:
            if launcher.poll() is not None:
                break
            pid = pid or _postmaster_pid(data_dir)
            probe = subprocess.run(
                [str(pg_bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"],
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                ready = True
                break
            time.sleep(0.1)
        pid = pid or _postmaster_pid(data_dir)
        if not ready:
            log_text = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"PostgreSQL did not start within {START_TIMEOUT_S} s:\n{log_text}")
        assert pid is not None
        yield PostgresServer(
            host="127.0.0.1", port=port, user="postgres", data_dir=data_dir, pid=pid
        )
    finally:
        _stop(pid or _postmaster_pid(data_dir), launcher)
        shutil.rmtree(root, ignore_errors=True)
