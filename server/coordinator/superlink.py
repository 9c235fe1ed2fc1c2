"""Launch, stop and drive a real ``flower-superlink`` for a provisioned workspace (TLS, node auth).

Flower 1.41 facts this module relies on (read from the installed flwr source):

- ``flower-superlink`` serves the Fleet, Control and Runtime (ServerAppIo) APIs over HTTPS on ONE
  port (``--host``/``--port``, default 127.0.0.1:8000); ``--fleet-api-address`` and
  ``--control-api-address`` are deprecated. TLS: ``--ssl-ca-certfile --ssl-certfile
  --ssl-keyfile``; ``--enable-supernode-auth`` requires TLS; state on disk with ``--database``;
  ``--disable-runtime-dependency-installation`` stops ``uv sync`` of app dependencies.
- It spawns ``flower-superexec`` (own session, exits when the SuperLink's pid disappears) which
  spawns ``flwr-serverapp`` per run: both are found on ``PATH``, so the venv's bin goes first.
- ``flwr`` CLI commands read connections from ``$FLWR_HOME/config.toml``::

      [superlink]
      default = "fedrisk"
      [superlink.fedrisk]
      address = "127.0.0.1:PORT"
      root-certificates = "/abs/path/ca.crt"

- ``flwr supernode register PUB.pub fedrisk --name NAME --format json`` registers an OpenSSH
  ECDSA (NIST curve) public key through the Control API; ``--format json`` exits 0 even on
  failure, so the ``success`` field is what counts. ``flwr run APP fedrisk --format json`` exits 0
  whether or not the run later fails; ``flwr ls fedrisk --run-id ID --format json`` gives the
  real status (``finished:completed`` / ``finished:failed`` / ``finished:stopped``): use
  ``server.coordinator.runs`` with ``connection=CONNECTION_NAME`` and
  ``flwr_home=layout.flwr_home``.

Notes
-----
The Control API shares the Fleet API's port and, without Flower's OIDC account plugin, does not
authenticate callers: whoever reaches the port (with the CA certificate) can register SuperNodes
and submit runs. So ``start_superlink(..., fleet_proxy=True)`` (what ``fedrisk server start``
does) binds the SuperLink to 127.0.0.1 on a coordinator-only port and puts the nginx proxy of
:mod:`server.coordinator.fleet_proxy` on the parties' address: parties reach only ``/v1/fleet/``.
Without the proxy (the local deployment harness) keep ``--host 127.0.0.1``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import ssl
import subprocess
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import tomli_w

from fedrisk.errors import ConfigError, FedRiskError, ProcessStopError
from fedrisk.federation.processes import (
    child_running,
    console_script,
    flower_environment,
    is_alive,
    pick_free_port,
    start_flower_process,
    stop_process_tree,
)
from fedrisk.federation.roster import load_manifest
from fedrisk.files import write_atomic
from server.coordinator.fleet_proxy import (
    CONFIG_FILE,
    FleetProxyConfig,
    FleetProxyError,
    FleetProxyProcess,
    ProxyTLS,
    find_nginx,
    start_fleet_proxy,
)
from server.coordinator.provisioning import WorkspaceLayout

log = logging.getLogger(__name__)

CONNECTION_NAME: Final = "fedrisk"
"""Name of the SuperLink connection written to ``$FLWR_HOME/config.toml``."""

RUNTIME_FILE: Final = "superlink.json"
NODES_FILE: Final = "nodes.json"
LOG_FILE: Final = "superlink.log"
PROXY_DIR: Final = "fleet-proxy"
DEFAULT_READY_TIMEOUT: Final = 30.0
FLWR_CLI_TIMEOUT: Final = 120.0
_KEY_IN_USE: Final = "Public key already in use"
INSECURE_WARNING: Final = (
    "INSECURE: the SuperLink will run WITHOUT TLS and WITHOUT SuperNode authentication. Model "
    "updates, node identities and run commands cross the network in plaintext and any process "
    "that reaches the port can join the federation. Use this only for a local experiment."
)


class SuperLinkError(FedRiskError, RuntimeError):
    """The SuperLink (or a flwr CLI call against it) failed to start, answer or stop."""


# --------------------------------------------------------------------------------------------------
# The flwr connection file
# --------------------------------------------------------------------------------------------------


def write_flwr_connection(
    flwr_home: Path,
    *,
    address: str,
    root_certificates: Path | None,
    insecure: bool = False,
    name: str = CONNECTION_NAME,
    make_default: bool = True,
) -> Path:
    """Declare a SuperLink connection in ``$FLWR_HOME/config.toml`` for ``flwr`` CLI commands.

    Parameters
    ----------
    flwr_home
        The ``FLWR_HOME`` directory (created if needed).
    address
        ``HOST:PORT`` of the SuperLink as the CLI should reach it (must match a certificate SAN).
    root_certificates
        The federation CA certificate; stored as an absolute path. Required unless ``insecure``.
    insecure
        Plaintext connection (only for a SuperLink started with ``--insecure``).
    name
        Connection name; ``flwr run APP NAME`` selects it.
    make_default
        Also make it ``[superlink] default``.

    Returns
    -------
    Path
        The config file.
    """
    if insecure == (root_certificates is not None):
        raise ConfigError(
            "root_certificates must be given exactly when the connection is secure; got "
            f"insecure={insecure}, root_certificates={root_certificates}"
        )
    home = Path(flwr_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    config: dict[str, Any] = {}
    if path.exists():
        try:
            config = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"flwr config {path} must be valid TOML; got {e}") from e
    section: dict[str, Any] = config.setdefault("superlink", {})
    connection: dict[str, Any] = {"address": address}
    if insecure:
        connection["insecure"] = True
    else:
        connection["root-certificates"] = str(Path(str(root_certificates)).resolve())
    section[name] = connection
    if make_default:
        section["default"] = name
    write_atomic(path, tomli_w.dumps(config))
    return path


# --------------------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------------------


def log_tail(path: Path, *, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file (empty if it does not exist)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------------
# The SuperLink
# --------------------------------------------------------------------------------------------------


@dataclass
class SuperLinkProcess:
    """A running ``flower-superlink`` started by ``start_superlink`` (and its Fleet proxy, if any).

    ``host``/``port``/``address`` are the SuperLink's own: the coordinator's ``flwr`` connection.
    Parties connect to :attr:`fleet_address`, the proxy's when there is one.
    """

    pid: int
    host: str
    port: int
    address: str
    workspace: Path
    log_path: Path
    insecure: bool
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    proxy: FleetProxyProcess | None = None

    @property
    def fleet_address(self) -> str:
        """``HOST:PORT`` SuperNodes connect to: the Fleet proxy's, or the SuperLink's own."""
        return self.proxy.address if self.proxy is not None else self.address

    @property
    def fleet_port(self) -> int:
        """The port of :attr:`fleet_address`."""
        return self.proxy.port if self.proxy is not None else self.port

    def is_running(self) -> bool:
        """Whether the SuperLink (and its proxy, when it has one) is still alive."""
        alive = child_running(self.pid, self.process)
        return alive and (self.proxy is None or self.proxy.is_running())

    def wait(self, *, poll_interval: float = 0.5) -> int:
        """Block until the SuperLink or its proxy exits; return that process's exit code.

        Only for a handle from ``start_superlink`` (it holds both children). Without the proxy
        the SuperLink would be useless to the parties, so a foreground ``server start`` ends
        (and stops the SuperLink) when either one goes.
        """
        children = [self.process]
        if self.proxy is not None:
            children.append(self.proxy.process)
        if None in children:
            raise SuperLinkError("wait needs the handle that start_superlink returned")
        while True:
            for child in children:
                if child is not None and (code := child.poll()) is not None:
                    return code
            time.sleep(poll_interval)

    def stop(self, *, timeout: float = 15.0) -> None:
        """Stop the proxy, then the SuperLink and everything it started; forget its runtime file.

        SIGTERM once, SIGKILL after ``timeout`` seconds (see ``fedrisk.federation.processes``).
        The proxy goes first so parties are cut off before the SuperLink stops answering.
        """
        problems: list[str] = []
        if self.proxy is not None:
            try:
                self.proxy.stop(timeout=timeout)
            except FleetProxyError as e:
                problems.append(str(e))
        try:
            stop_process_tree(self.pid, process=self.process, grace=timeout)
        except ProcessStopError as e:
            problems.append(f"the SuperLink must stop; {e}")
        if problems:
            raise SuperLinkError("; ".join(problems))
        runtime = WorkspaceLayout(self.workspace).superlink_dir / RUNTIME_FILE
        with contextlib.suppress(FileNotFoundError):
            runtime.unlink()


def client_address(host: str, port: int) -> str:
    """How local flwr commands reach a SuperLink bound to ``host`` (wildcards become 127.0.0.1)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def wait_until_ready(
    address: str,
    *,
    ca_certificate: Path | None,
    is_alive: Callable[[], bool],
    timeout: float,
    log_path: Path | None = None,
    what: str = "flower-superlink",
) -> None:
    """Poll ``/health`` at ``address`` until it answers 200 (TLS verified with the CA).

    ``what`` names the process in errors (the SuperLink, or the Fleet proxy in front of it).

    Raises
    ------
    SuperLinkError
        The process exited, or ``timeout`` seconds passed; the message carries the log's tail.
    """
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]")
    context: ssl.SSLContext | None = None
    if ca_certificate is not None:
        context = ssl.create_default_context(cafile=str(ca_certificate))
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if not is_alive():
            tail = log_tail(log_path) if log_path else ""
            raise SuperLinkError(f"{what} exited during start-up; log tail:\n{tail}")
        conn: http.client.HTTPConnection
        if context is not None:
            conn = http.client.HTTPSConnection(host, int(port_text), timeout=2, context=context)
        else:
            conn = http.client.HTTPConnection(host, int(port_text), timeout=2)
        try:
            conn.request("GET", "/health")
            if conn.getresponse().status == http.client.OK:
                return
        except (OSError, http.client.HTTPException) as e:
            last_error = str(e)
        finally:
            conn.close()
        time.sleep(0.2)
    tail = log_tail(log_path) if log_path else ""
    raise SuperLinkError(
        f"{what} at {address} must answer /health within {timeout:.0f}s; last error: "
        f"{last_error}; log tail:\n{tail}"
    )


def superlink_command(
    layout: WorkspaceLayout, *, host: str, port: int, insecure: bool
) -> list[str]:
    """The ``flower-superlink`` argv for a workspace."""
    argv = [console_script("flower-superlink")]
    if insecure:
        # flwr refuses --enable-supernode-auth without TLS, so plaintext also means no node auth.
        argv.append("--insecure")
    else:
        argv += [
            "--ssl-ca-certfile",
            str(layout.ca_certificate),
            "--ssl-certfile",
            str(layout.superlink_certificate),
            "--ssl-keyfile",
            str(layout.superlink_key),
            "--enable-supernode-auth",
        ]
    argv += [
        "--database",
        str(layout.database),
        "--disable-runtime-dependency-installation",
        "--isolation",
        "subprocess",
        "--host",
        host,
        "--port",
        str(port),
    ]
    return argv


def _check_host_in_certificate(layout: WorkspaceLayout, host: str) -> None:
    manifest = load_manifest(layout.manifest)
    if host not in ("0.0.0.0", "::") and host not in manifest.superlink_hosts:
        log.warning(
            "host %s is not in the SuperLink certificate (%s): parties will fail TLS verification",
            host,
            ", ".join(manifest.superlink_hosts),
        )


def _start_proxy(
    layout: WorkspaceLayout,
    *,
    host: str,
    port: int,
    upstream_port: int,
    insecure: bool,
    ready_timeout: float,
) -> FleetProxyProcess:
    """Start nginx on the parties' address in front of the SuperLink; wait for ``/health``."""
    tls = None
    if not insecure:
        tls = ProxyTLS(
            certificate=layout.superlink_certificate,
            key=layout.superlink_key,
            ca_certificate=layout.ca_certificate,
        )
    config = FleetProxyConfig(
        listen_host=host,
        listen_port=port,
        upstream_port=upstream_port,
        prefix=layout.superlink_dir / PROXY_DIR,
        tls=tls,
    )
    proxy = start_fleet_proxy(config, address=client_address(host, port))
    try:
        wait_until_ready(
            proxy.address,
            ca_certificate=None if insecure else layout.ca_certificate,
            is_alive=proxy.is_running,
            timeout=ready_timeout,
            log_path=proxy.error_log,
            what="the Fleet-API proxy (nginx)",
        )
    except BaseException:
        proxy.stop(timeout=5.0)
        raise
    return proxy


def start_superlink(
    workspace: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    insecure: bool = False,
    ready_timeout: float = DEFAULT_READY_TIMEOUT,
    fleet_proxy: bool = False,
    control_port: int | None = None,
) -> SuperLinkProcess:
    """Start ``flower-superlink`` for a provisioned workspace and wait until it answers.

    Parameters
    ----------
    workspace
        A workspace made by ``provision_workspace``.
    host
        The parties' bind address; 127.0.0.1 by default. Other parties need a host in the
        certificate's SANs.
    port
        The parties' port (a free one when omitted): the SuperLink's single HTTPS port, or with
        ``fleet_proxy`` the proxy's.
    insecure
        Plaintext, no SuperNode authentication. Refused unless asked for; logs a loud warning.
    ready_timeout
        Seconds to wait for ``/health`` (of the SuperLink, then of the proxy).
    fleet_proxy
        Bind the SuperLink to 127.0.0.1:``control_port`` and serve only its Fleet API on
        ``host:port`` through nginx (:mod:`server.coordinator.fleet_proxy`), so parties cannot
        reach the Control or Runtime API. ``fedrisk server start`` always sets it.
    control_port
        With ``fleet_proxy``: the SuperLink's loopback port (a free one when omitted).

    Returns
    -------
    SuperLinkProcess
        The running process; ``$FLWR_HOME/config.toml`` now names its own (coordinator)
        address as connection ``fedrisk``; SuperNodes use ``fleet_address``.

    Raises
    ------
    SuperLinkError
        It did not start or answer in time (the process is stopped then).
    FleetProxyError
        ``fleet_proxy`` is asked for and nginx is missing or the ports clash.
    """
    layout = WorkspaceLayout(Path(workspace).resolve())
    if insecure:
        load_manifest(layout.manifest)  # an unprovisioned workspace is refused either way
        log.warning(INSECURE_WARNING)
    else:
        _check_host_in_certificate(layout, host)
    port = port or pick_free_port("127.0.0.1" if host in ("0.0.0.0", "::", "") else host)
    link_host, link_port = host, port
    if fleet_proxy:
        link_host, link_port = "127.0.0.1", control_port or pick_free_port("127.0.0.1")
        if link_port == port:
            raise FleetProxyError(
                f"control_port must differ from the parties' port; got {port} for both"
            )
        find_nginx()  # before anything starts: the error names the install command
    elif control_port is not None:
        raise ConfigError(f"control_port is only used with fleet_proxy; got {control_port}")
    layout.superlink_dir.mkdir(parents=True, exist_ok=True)
    log_path = layout.superlink_dir / LOG_FILE
    address = client_address(link_host, link_port)
    write_flwr_connection(
        layout.flwr_home,
        address=address,
        root_certificates=None if insecure else layout.ca_certificate,
        insecure=insecure,
    )
    argv = superlink_command(layout, host=link_host, port=link_port, insecure=insecure)
    process = start_flower_process(
        argv, cwd=layout.root, flwr_home=layout.flwr_home, log_path=log_path
    )
    handle = SuperLinkProcess(
        pid=process.pid,
        host=link_host,
        port=link_port,
        address=address,
        workspace=layout.root,
        log_path=log_path,
        insecure=insecure,
        process=process,
    )
    try:
        wait_until_ready(
            address,
            ca_certificate=None if insecure else layout.ca_certificate,
            is_alive=handle.is_running,
            timeout=ready_timeout,
            log_path=log_path,
        )
        if fleet_proxy:
            handle.proxy = _start_proxy(
                layout,
                host=host,
                port=port,
                upstream_port=link_port,
                insecure=insecure,
                ready_timeout=ready_timeout,
            )
    except BaseException:
        handle.stop(timeout=5.0)
        raise
    runtime: dict[str, Any] = {
        "pid": process.pid,
        "host": link_host,
        "port": link_port,
        "address": address,
        "insecure": insecure,
        "database": str(layout.database),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "proxy": None,
    }
    if handle.proxy is not None:
        runtime["proxy"] = {
            "pid": handle.proxy.pid,
            "host": handle.proxy.host,
            "port": handle.proxy.port,
            "address": handle.proxy.address,
            "prefix": str(handle.proxy.prefix),
        }
    (layout.superlink_dir / RUNTIME_FILE).write_text(json.dumps(runtime, indent=2) + "\n")
    return handle


def _cmdline(pid: int) -> list[bytes] | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None


def _running_proxy(record: object) -> FleetProxyProcess | None:
    """The proxy of a runtime file, if its pid is still an nginx running that prefix's config."""
    if not isinstance(record, dict):
        return None
    try:
        pid, address, prefix = int(record["pid"]), str(record["address"]), Path(record["prefix"])
        host, port = str(record["host"]), int(record["port"])
    except (KeyError, TypeError, ValueError):
        return None
    cmdline = _cmdline(pid)
    # nginx rewrites its title to "nginx: master process ARGV...", one string with spaces.
    if cmdline is None or str(prefix / CONFIG_FILE).encode() not in b" ".join(cmdline):
        return None
    if not is_alive(pid):
        return None
    return FleetProxyProcess(pid=pid, host=host, port=port, address=address, prefix=prefix)


def running_superlink(workspace: Path) -> SuperLinkProcess | None:
    """The SuperLink recorded in the workspace's runtime file, if that process still runs.

    The pid is trusted only if its command line is ``flower-superlink`` on this workspace's
    database (the proxy's: nginx on this workspace's config), so a recycled pid is never
    signalled.
    """
    layout = WorkspaceLayout(Path(workspace).resolve())
    path = layout.superlink_dir / RUNTIME_FILE
    try:
        runtime = json.loads(path.read_text(encoding="utf-8"))
        pid = int(runtime["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    cmdline = _cmdline(pid)
    if cmdline is None:
        return None
    joined = b" ".join(cmdline)
    if b"flower-superlink" not in joined or str(layout.database).encode() not in cmdline:
        return None
    if not is_alive(pid):
        return None
    return SuperLinkProcess(
        pid=pid,
        host=str(runtime["host"]),
        port=int(runtime["port"]),
        address=str(runtime["address"]),
        workspace=layout.root,
        log_path=layout.superlink_dir / LOG_FILE,
        insecure=bool(runtime.get("insecure", False)),
        proxy=_running_proxy(runtime.get("proxy")),
    )


# --------------------------------------------------------------------------------------------------
# flwr CLI calls against the workspace's SuperLink
# --------------------------------------------------------------------------------------------------


def run_flwr_json(
    workspace: Path, args: Sequence[str], *, timeout: float = FLWR_CLI_TIMEOUT
) -> dict[str, Any]:
    """Run ``flwr ARGS --format json`` with the workspace's ``FLWR_HOME``; return the JSON object.

    Raises
    ------
    SuperLinkError
        The command failed, timed out, printed no JSON, or reported ``"success": false``.
    """
    layout = WorkspaceLayout(Path(workspace).resolve())
    argv = [console_script("flwr"), *args, "--format", "json"]
    try:
        done = subprocess.run(
            argv,
            cwd=layout.root,
            env=flower_environment(layout.flwr_home),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise SuperLinkError(f"flwr {' '.join(args)} must finish within {timeout:.0f}s") from e
    stdout = done.stdout.decode("utf-8", errors="replace")
    start = stdout.find("{")
    payload: Any = None
    if start >= 0:
        with contextlib.suppress(json.JSONDecodeError):
            payload, _ = json.JSONDecoder().raw_decode(stdout[start:])
    if not isinstance(payload, dict):
        stderr = done.stderr.decode("utf-8", errors="replace")
        raise SuperLinkError(
            f"flwr {' '.join(args)} must print a JSON result; got exit code {done.returncode}, "
            f"output: {(stdout + stderr).strip()[-2000:]}"
        )
    if not payload.get("success", False):
        raise SuperLinkError(
            f"flwr {' '.join(args)} failed: {str(payload.get('error-message', payload)).strip()}"
        )
    return payload


def register_supernodes(
    workspace: Path, *, parties: Sequence[str] | None = None
) -> dict[str, str | None]:
    """Register parties' SuperNode auth public keys with the running SuperLink.

    Parameters
    ----------
    workspace
        The provisioned workspace whose SuperLink is running.
    parties
        Which parties; all parties of the manifest by default.

    Returns
    -------
    dict
        Party name to the node id Flower assigned, or ``None`` for a key that was already
        registered (restarts on the same database are idempotent).

    Notes
    -----
    Equivalent to ``flwr supernode register WORKSPACE/auth/<party>.pub fedrisk --name <party>``
    for each party; the node ids are also kept in ``superlink/nodes.json``.
    """
    layout = WorkspaceLayout(Path(workspace).resolve())
    manifest = load_manifest(layout.manifest)
    names = list(parties) if parties is not None else manifest.party_names
    nodes_path = layout.superlink_dir / NODES_FILE
    known: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        known = dict(json.loads(nodes_path.read_text(encoding="utf-8")))
    result: dict[str, str | None] = {}
    for name in names:
        manifest.party(name)  # unknown names are refused before anything is registered
        pub = layout.auth_public_key(name)
        try:
            payload = run_flwr_json(
                layout.root,
                ["supernode", "register", str(pub), CONNECTION_NAME, "--name", name],
            )
        except SuperLinkError as e:
            if _KEY_IN_USE not in str(e):
                raise
            result[name] = known.get(name)
            continue
        node_id = str(payload["node-id"])
        result[name] = node_id
        known[name] = node_id
    nodes_path.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")
    return result


def list_supernodes(workspace: Path) -> list[dict[str, Any]]:
    """``flwr supernode list fedrisk --format json``: node id, status (registered/online/...)."""
    payload = run_flwr_json(workspace, ["supernode", "list", CONNECTION_NAME])
    nodes = payload.get("nodes", [])
    return [dict(n) for n in nodes if isinstance(n, dict)]
