"""Launch and stop a real ``flower-supernode`` for a provisioned party, after checking its data.

Flower 1.41: ``flower-supernode --superlink HOST:PORT --root-certificates CA.crt
--auth-supernode-private-key KEY --node-config FILE.toml --port RUNTIME_PORT``. The auth key is
an OpenSSH-format ECDSA (NIST curve) private key; the node config may be a TOML file (its keys
reach the ClientApp as ``context.node_config``); ``--port`` is the SuperNode's local Runtime API
(default 9094, so every local SuperNode needs its own). Without ``--root-certificates`` Flower
falls back to the system trust store, which does not know the federation's private CA.

The SuperNode runs with ``--isolation process`` and ``--superexec-auth-secret-file``: it starts
no ``flwr-clientapp`` itself; the party's warm executor (``clients.executor``), started beside
it and stopped with it, acquires its tasks with the shared secret, checks every run against the
app pin in the party's folder and runs the admitted ones in one process.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal

import tomli_w

from clients.bundle import NODE_CONFIG_PARTY, PartyBundle
from fedrisk.data.schema import load_schema
from fedrisk.data.validation import load_party_frame
from fedrisk.errors import ConfigError, FedRiskError, IdentityError, ProcessStopError
from fedrisk.federation.processes import (
    child_running,
    console_script,
    is_alive,
    pick_free_port,
    start_flower_process,
    stop_process_tree,
)
from fedrisk.files import write_atomic
from fedrisk.release.identity import receiving_public_key_pem
from secure_agg.params import parse_he_params

log = logging.getLogger(__name__)

PARTY_CONFIG_FILE: Final = "party.toml"
PEER_KEYS_FILE: Final = "peer_keys.json"
NODE_CONFIG_FILE: Final = "node-config.toml"
RUNTIME_FILE: Final = "supernode.json"
LOG_FILE: Final = "supernode.log"
EXECUTOR_SECRET_FILE: Final = "superexec.secret"  # noqa: S105 - a file name, not a secret
"""Shared secret between the SuperNode and its executor (mode 0600, renewed at every start)."""
CONNECTION_REFUSED_MARK: Final = "Exit Code: 305"
"""What flower-supernode logs when the SuperLink refused it (TLS or auth); its process exit code is
then 1, like for any other error, so the log is the observable."""


class SuperNodeError(FedRiskError, RuntimeError):
    """The SuperNode process could not be started or stopped."""


@dataclass(frozen=True)
class PartyRuntime:
    """Files a party's SuperNode runs with, under the bundle's ``state/`` directory."""

    state_dir: Path
    party_config: Path
    node_config: Path
    flwr_home: Path
    log_path: Path

    @property
    def executor_secret(self) -> Path:
        """The SuperExec auth secret file of this party's SuperNode and executor."""
        return self.state_dir / EXECUTOR_SECRET_FILE


def _validate_data(path: Path, schema_file: Path, *, what: str) -> int:
    schema = load_schema(schema_file)
    frame = load_party_frame(path, schema)
    log.info("%s data %s: %d rows valid against schema %s", what, path, len(frame), schema.name)
    return len(frame)


def prepare_party_runtime(
    bundle: PartyBundle,
    *,
    train: Path,
    test: Path | None = None,
    schema: Path | None = None,
    release_dir: Path | None = None,
    state_dir: Path | None = None,
    vertical: Path | None = None,
) -> PartyRuntime:
    """Check the party's data and keys, then write its ``party.toml`` and SuperNode node config.

    Parameters
    ----------
    bundle
        The party's loaded bundle.
    train
        The party's training data file (CSV, CSV.gz or Parquet).
    test
        Its held-out test file; when omitted the training file is used and a warning is logged
        (evaluation metrics are then in-sample).
    schema
        Dataset schema TOML; default the one provisioned in the bundle.
    release_dir
        Where the party writes a released model artifact; default ``state/releases``.
    state_dir
        Runtime directory; default ``BUNDLE/state``.
    vertical
        A vertical party's view (JSON, ``clients.vertical_party.VerticalView``): its role and
        its own columns of ``train``, which then need not follow the federation's schema.

    Raises
    ------
    SchemaError, DataFileError
        The data does not satisfy the schema (nothing is started then).
    IdentityError
        The CKKS secret context is missing: run the key ceremony first.

    Notes
    -----
    Validation happens here, before any connection to the SuperLink, so a party with bad data
    never joins the federation.
    """
    layout = bundle.layout
    schema_file = Path(schema) if schema else layout.schema
    if not schema_file.is_file() and vertical is None:
        raise ConfigError(
            f"schema must be given (--schema) or provisioned in the bundle; got no {schema_file}"
        )
    if not bundle.has_secret_context:
        raise IdentityError(
            f"party {bundle.name} must hold the CKKS secret context {layout.secret_context}; got "
            "none: the lead runs `fedrisk keys init`, the others `fedrisk keys accept`"
        )
    train = Path(train).resolve()
    if vertical is not None:
        test = train  # the guest splits its own table; a host scores every row it holds
    else:
        _validate_data(train, schema_file, what="training")
    if test is None:
        log.warning(
            "no test file for %s: evaluation will use the training data (in-sample metrics)",
            bundle.name,
        )
        test = train
    elif vertical is None:
        test = Path(test).resolve()
        _validate_data(test, schema_file, what="test")
    try:
        he_params = parse_he_params(json.loads(layout.he_params.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"CKKS parameters {layout.he_params} must be readable JSON; {e}") from e

    state = Path(state_dir).resolve() if state_dir else layout.state_dir
    releases = Path(release_dir).resolve() if release_dir else state / "releases"
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    releases.mkdir(parents=True, exist_ok=True)
    party_config = state / PARTY_CONFIG_FILE
    pinned_role = None
    if vertical is not None:
        from clients.pinning import installed_pin
        from clients.vertical_party import prepare_vertical_party  # TenSEAL: vertical only
        from fedrisk.federation.pin import pinned_vertical_role

        pinned_role = pinned_vertical_role(installed_pin(bundle).pin, bundle.name)
    vertical_config = (
        {
            "vertical": str(
                prepare_vertical_party(
                    Path(vertical),
                    name=bundle.name,
                    data=train,
                    state_dir=state,
                    signing_key=layout.signing_key,
                    release_dir=releases,
                    pinned_role=pinned_role,
                    roster=layout.manifest,
                )
            )
        }
        if vertical is not None
        else {}
    )
    # The pairwise masks' peers come from the provisioned manifest, never from the coordinator:
    # a key it substituted would let it strip a party's masks.
    peer_keys = state / PEER_KEYS_FILE
    write_atomic(
        peer_keys,
        json.dumps(
            {
                record.name: receiving_public_key_pem(record.receiving_key())
                for record in bundle.manifest.parties
            },
            indent=1,
        ),
        private=False,
    )
    write_atomic(
        party_config,
        tomli_w.dumps(
            {
                "name": bundle.name,
                "train": str(train),
                "test": str(test),
                "schema_file": str(schema_file.resolve()),
                "secret_context": str(layout.secret_context),
                "signing_key": str(layout.signing_key),
                "receiving_key": str(layout.receiving_key),
                "peer_keys": str(peer_keys),
                "roster": str(layout.manifest),
                "release_dir": str(releases),
                "he_params": he_params.model_dump(mode="json"),
                **vertical_config,
            }
        ),
        private=True,  # it names the key files: owner only, like the keys
    )
    node_config = state / NODE_CONFIG_FILE
    # What every ClientApp the SuperNode runs receives as context.node_config: only the party's
    # name. No path at all (bundle, keys, data, releases, party.toml): the executor hands
    # party.toml to our ClientApp in-process, so a run's code gets no map of the party's files.
    write_atomic(node_config, tomli_w.dumps({NODE_CONFIG_PARTY: bundle.name}), private=False)
    return PartyRuntime(
        state_dir=state,
        party_config=party_config,
        node_config=node_config,
        flwr_home=state / "flwr-home",
        log_path=state / LOG_FILE,
    )


Trust = Literal["bundle-ca", "system"] | Path


def supernode_command(
    bundle: PartyBundle,
    *,
    superlink: str,
    node_config: Path,
    runtime_port: int,
    trust: Trust = "bundle-ca",
    insecure: bool = False,
    max_retries: int | None = None,
    max_wait_time: float | None = None,
    executor_secret: Path | None = None,
) -> list[str]:
    """The ``flower-supernode`` argv for a party.

    ``trust`` picks the root certificate: the bundle's CA (default), ``"system"`` (no
    ``--root-certificates``: the OS store, which will not verify a private CA) or another file.
    Raises ``ExecutableNotFoundError`` when ``flower-supernode`` is not installed.
    """
    console_script("flower-supernode")  # Flower's SuperNode must be installed
    # Flower's own entry point, its idle loop paced (clients.flower_runtime.run_paced_supernode).
    argv = [sys.executable, "-m", "clients.flower_runtime", "flower-supernode"]
    argv += ["--superlink", superlink]
    if insecure:
        argv.append("--insecure")
    else:
        if trust == "bundle-ca":
            argv += ["--root-certificates", str(bundle.layout.ca_certificate)]
        elif isinstance(trust, Path):
            argv += ["--root-certificates", str(trust.resolve())]
        argv += ["--auth-supernode-private-key", str(bundle.layout.auth_private_key)]
    argv += ["--node-config", str(node_config), "--port", str(runtime_port)]
    argv += ["--isolation", "process"]
    if executor_secret is not None:
        argv += ["--superexec-auth-secret-file", str(executor_secret)]
    if max_retries is not None:
        argv += ["--max-retries", str(max_retries)]
    if max_wait_time is not None:
        argv += ["--max-wait-time", str(max_wait_time)]
    return argv


@dataclass
class SuperNodeProcess:
    """A running ``flower-supernode`` started by ``start_supernode``."""

    pid: int
    party: str
    superlink: str
    runtime_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    executor_pid: int | None = None
    executor_process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def pids(self) -> list[int]:
        """The SuperNode's pid, then its executor's."""
        return [self.pid] + ([self.executor_pid] if self.executor_pid is not None else [])

    def is_running(self) -> bool:
        """Whether the SuperNode process is alive."""
        return child_running(self.pid, self.process)

    def wait(self, *, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the process to exit; its exit code or ``None``."""
        if self.process is None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and is_alive(self.pid):
                time.sleep(0.1)
            return None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def was_refused(self) -> bool:
        """Whether the SuperNode logged that it could not connect (TLS failure or unknown key)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
        return CONNECTION_REFUSED_MARK in text

    def stop(self, *, timeout: float = 15.0) -> None:
        """SIGTERM the SuperNode and its children (it deactivates itself), SIGKILL if needed.

        ``timeout`` is the grace period before SIGKILL (see ``fedrisk.federation.processes``).
        The executor is stopped after the SuperNode (it would exit on its own once the
        SuperNode's pid is gone).
        """
        try:
            stop_process_tree(self.pid, process=self.process, grace=timeout)
            if self.executor_pid is not None:
                stop_process_tree(self.executor_pid, process=self.executor_process, grace=timeout)
        except ProcessStopError as e:
            raise SuperNodeError(f"the SuperNode of {self.party} must stop; {e}") from e


def start_supernode(
    bundle: PartyBundle,
    runtime: PartyRuntime,
    *,
    superlink: str,
    runtime_port: int | None = None,
    trust: Trust = "bundle-ca",
    insecure: bool = False,
    max_retries: int | None = None,
    max_wait_time: float | None = None,
) -> SuperNodeProcess:
    """Start the party's ``flower-supernode`` (in its own session, logging to ``state/``).

    Parameters
    ----------
    bundle
        The party's loaded bundle (auth key, CA certificate).
    runtime
        From ``prepare_party_runtime`` (data already validated).
    superlink
        ``HOST:PORT`` of the SuperLink; HOST must be in its certificate.
    runtime_port
        Local Runtime API port of this SuperNode; a free one when omitted.
    trust, insecure, max_retries, max_wait_time
        See ``supernode_command``. ``insecure`` disables TLS and node authentication; it must be
        asked for explicitly and is logged loudly.

    Returns
    -------
    SuperNodeProcess
        The process handle. A refused SuperNode exits early (code 1) and ``was_refused()``.
    """
    if insecure:
        log.warning(
            "INSECURE: SuperNode of %s connects WITHOUT TLS and WITHOUT authentication", bundle.name
        )
    port = runtime_port or pick_free_port()
    secret_file = runtime.executor_secret
    secret_file.unlink(missing_ok=True)
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secrets.token_bytes(32))
    argv = supernode_command(
        bundle,
        superlink=superlink,
        node_config=runtime.node_config,
        runtime_port=port,
        trust=trust,
        insecure=insecure,
        max_retries=max_retries,
        max_wait_time=max_wait_time,
        executor_secret=secret_file,
    )
    runtime.flwr_home.mkdir(parents=True, exist_ok=True)
    process = start_flower_process(
        argv, cwd=runtime.state_dir, flwr_home=runtime.flwr_home, log_path=runtime.log_path
    )
    executor = start_flower_process(
        executor_command(
            runtime, party_dir=bundle.layout.root, runtime_port=port, supernode_pid=process.pid
        ),
        cwd=runtime.state_dir,
        flwr_home=runtime.flwr_home,
        log_path=runtime.log_path,
    )
    (runtime.state_dir / RUNTIME_FILE).write_text(
        json.dumps(
            {
                "pid": process.pid,
                "party": bundle.name,
                "superlink": superlink,
                "runtime_port": port,
                "executor_pid": executor.pid,
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
            indent=2,
        )
        + "\n"
    )
    return SuperNodeProcess(
        pid=process.pid,
        party=bundle.name,
        superlink=superlink,
        runtime_port=port,
        log_path=runtime.log_path,
        process=process,
        executor_pid=executor.pid,
        executor_process=executor,
    )


def executor_command(
    runtime: PartyRuntime, *, party_dir: Path, runtime_port: int, supernode_pid: int
) -> list[str]:
    """The argv of the party's warm executor (``clients.executor``) for its SuperNode.

    ``party_dir`` is the party's own folder: the executor reads its manifest and installed app
    pin from there for every run.
    """
    return [
        sys.executable,
        "-m",
        "clients.executor",
        "--runtime-api-address",
        f"127.0.0.1:{runtime_port}",
        "--superexec-auth-secret-file",
        str(runtime.executor_secret),
        "--parent-pid",
        str(supernode_pid),
        "--party-dir",
        str(Path(party_dir).resolve()),
        "--party-config",
        str(runtime.party_config),
    ]


def running_supernode(state_dir: Path) -> SuperNodeProcess | None:
    """The SuperNode recorded in ``state_dir``, if that pid still runs ``flower-supernode``."""
    try:
        runtime = json.loads((Path(state_dir) / RUNTIME_FILE).read_text(encoding="utf-8"))
        pid = int(runtime["pid"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if b"flower-supernode" not in cmdline or not is_alive(pid):
        return None
    executor_pid = runtime.get("executor_pid")
    return SuperNodeProcess(
        pid=pid,
        party=str(runtime["party"]),
        superlink=str(runtime["superlink"]),
        runtime_port=int(runtime["runtime_port"]),
        log_path=Path(state_dir) / LOG_FILE,
        executor_pid=_running_executor(executor_pid),
    )


def _running_executor(pid: object) -> int | None:
    """``pid`` if it still runs ``clients.executor`` (a recycled pid is never signalled)."""
    if not isinstance(pid, int):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"clients.executor" in cmdline and is_alive(pid) else None
