"""A whole multi-organisation deployment on one machine, with real processes on 127.0.0.1.

It performs, through the same functions the CLI commands call, what each role does by hand:
each party creates its own keys, the coordinator provisions the federation from their public
requests and each party merges its public bundle, the lead party runs the CKKS key ceremony,
the other parties accept their sealed secret context, the coordinator installs the public
context and starts the TLS SuperLink with node authentication, each party validates its data and
starts its SuperNode, and the coordinator submits the run. Every process is stopped by PID on exit.
``kill_party`` and ``kill_superlink`` crash a process tree at once (SIGKILL, no graceful
shutdown) for the fault-tolerance tests; ``start_superlink`` then restarts the SuperLink on the
same port and state database, so SuperNodes reconnect on their own.
Used by ``make demo``, the deployment integration tests and ``benchmarks/deployment.py``.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clients.bundle import PartyBundle, load_bundle
from clients.pinning import install_pin, installed_pin, issue_pin, load_pin_file
from clients.supernode import LOG_FILE as SUPERNODE_LOG_FILE
from clients.supernode import (
    SuperNodeError,
    SuperNodeProcess,
    prepare_party_runtime,
    start_supernode,
)
from clients.vertical_party import VerticalView
from fedrisk.data.partitions import PartyData
from fedrisk.data.schema import DatasetSchema, write_schema
from fedrisk.data.vertical import VerticalDataset
from fedrisk.federation.pin import PIN_FILE, VerticalRoster
from fedrisk.federation.processes import KILL_WAIT, descendants, signal_tree, stop_process_tree
from fedrisk.federation.run_config import RunConfigValue
from secure_agg.ceremony import accept_sealed_context, run_key_ceremony
from secure_agg.params import HEParams
from server.coordinator.deployed_runs import DeployedRun, execute_run, prepare_run, resumable_run
from server.coordinator.provisioning import WorkspaceLayout, install_public_context
from server.coordinator.runs import RunFailedError, RunOutcome
from server.coordinator.superlink import LOG_FILE as SUPERLINK_LOG_FILE
from server.coordinator.superlink import (
    SuperLinkProcess,
    log_tail,
    register_supernodes,
    start_superlink,
)
from simulations.enrollment import enroll_parties

ACCEPTED_MARK = b"SuperNode ID: "
"""What flower-supernode logs once the SuperLink has activated it (Flower 1.41)."""


@dataclass
class LocalDeployment:
    """Handles on a running local federation: the coordinator's and every party's side."""

    root: Path
    workspace: Path
    bundles: dict[str, Path]
    data: dict[str, tuple[Path, Path]]
    release_dir: Path
    superlink: SuperLinkProcess | None = None
    supernodes: dict[str, SuperNodeProcess] = field(default_factory=dict)
    plaintext: bool = False
    masking: bool = True
    """Masks in encrypted runs; off only for benchmarks (the pin must allow it)."""
    mask_self: bool = False
    """Self masks besides the pairwise ones (run-config ``mask-self``)."""
    superlink_port: int | None = None
    """The parties' port once started; a restart reuses it so SuperNodes find it again."""
    fleet_proxy: bool = False
    """Put the Fleet-API proxy in front of the SuperLink, as ``fedrisk server start`` does."""
    views: dict[str, Path] = field(default_factory=dict)
    """A vertical federation's party views (``party start --vertical``), by party."""
    release_dirs: dict[str, Path] = field(default_factory=dict)
    """Per-party release folders (a vertical party keeps its own part); default ``release_dir``."""

    @property
    def lead(self) -> str:
        """The party that ran the key ceremony and releases the model by default."""
        return next(iter(self.bundles))

    def bundle(self, party: str) -> PartyBundle:
        """A party's loaded bundle."""
        return load_bundle(self.bundles[party])

    def start_superlink(self, *, port: int | None = None) -> SuperLinkProcess:
        """Start the coordinator's TLS SuperLink and register every party's auth key.

        ``port`` defaults to the port of an earlier start (a restart after a crash: the state
        database on disk still knows every node and run, and the SuperNodes, which retry without
        limit, reconnect to the same address), or a free one the first time. Registering again
        is idempotent.
        """
        self.superlink = start_superlink(
            self.workspace, port=port or self.superlink_port, fleet_proxy=self.fleet_proxy
        )
        self.superlink_port = self.superlink.fleet_port
        register_supernodes(self.workspace)
        return self.superlink

    def kill_superlink(self) -> None:
        """Crash the SuperLink with everything it started (SuperExec, ServerApp): SIGKILL."""
        if self.superlink is not None:
            if self.superlink.proxy is not None:
                _crash(self.superlink.proxy.pid, self.superlink.proxy.process)
            _crash(self.superlink.pid, self.superlink.process)
            self.superlink = None

    def start_party(self, party: str) -> SuperNodeProcess:
        """Validate the party's data and start its SuperNode against the SuperLink."""
        assert self.superlink is not None, "start the SuperLink first"
        bundle = self.bundle(party)
        installed_pin(bundle)  # as `party start` does: the signed app pin, verified first
        train, test = self.data[party]
        runtime = prepare_party_runtime(
            bundle,
            train=train,
            test=test,
            release_dir=self.release_dirs.get(party, self.release_dir),
            vertical=self.views.get(party),
        )
        node = start_supernode(bundle, runtime, superlink=self.superlink.fleet_address)
        self.supernodes[party] = node
        return node

    def stop_party(self, party: str) -> None:
        """Stop one party's SuperNode and its warm executor by PID."""
        node = self.supernodes.pop(party, None)
        if node is not None:
            node.stop()

    def restart_party(
        self, party: str, *, timeout: float = 180.0, retry_every: float = 1.0
    ) -> SuperNodeProcess:
        """Start a crashed party's SuperNode again, retrying until the SuperLink accepts it.

        Raises
        ------
        SuperNodeError
            It was not accepted within ``timeout`` seconds.

        Notes
        -----
        Flower 1.41 keeps a node online until two heartbeat intervals (2 x 30 s) pass without a
        heartbeat, and refuses to activate a node it still counts as online: a SuperNode
        restarted sooner logs exit code 305 ("Failed to activate SuperNode") and exits. Like a
        service manager's restart policy, this starts it again every ``retry_every`` seconds
        until it logs its node id. The node id is the one registered for the party's key.
        """
        log_path = self.bundle(party).layout.state_dir / SUPERNODE_LOG_FILE
        deadline = time.monotonic() + timeout
        attempts = 0
        while True:
            offset = log_path.stat().st_size if log_path.exists() else 0
            node = self.start_party(party)
            attempts += 1
            while node.is_running() and time.monotonic() < deadline:
                with log_path.open("rb") as handle:
                    handle.seek(offset)
                    if ACCEPTED_MARK in handle.read():
                        return node
                time.sleep(0.2)
            self.stop_party(party)  # refused; also stops what it left behind (its SuperExec)
            if time.monotonic() >= deadline:
                raise SuperNodeError(
                    f"the SuperNode of {party} must be accepted by the SuperLink within "
                    f"{timeout:.0f}s; got {attempts} refused attempts (see {log_path})"
                )
            time.sleep(retry_every)

    def kill_party(self, party: str) -> None:
        """Crash one party's SuperNode and its warm executor: SIGKILL, no deactivation.

        Unlike ``stop_party`` the SuperLink is not told: it keeps the node online until its
        heartbeat expires, as when a party's machine loses power mid-round.
        """
        node = self.supernodes.pop(party, None)
        if node is not None:
            _crash(node.pid, node.process)
            if node.executor_pid is not None:
                _crash(node.executor_pid, node.executor_process)

    def run(
        self,
        *,
        rounds: int,
        model: str = "lr",
        seed: int = 0,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        round_timeout: float = 120.0,
        resume: bool = False,
        min_parties: int = 3,
        timeout: float = 3600.0,
        privacy: Mapping[str, RunConfigValue] | None = None,
        trees: Mapping[str, RunConfigValue] | None = None,
        vertical: Mapping[str, RunConfigValue] | None = None,
    ) -> tuple[DeployedRun, RunOutcome]:
        """Submit a run (or resume the last unfinished one) and wait for its real outcome.

        With ``resume`` the other settings are those the unfinished run was started with.
        ``timeout`` bounds the wait for the outcome, in seconds; ``privacy`` holds the run's
        ``dp_*`` settings (``prepare_run``); ``trees`` a ``gbdt`` run's ``trees`` / ``tree-*``
        run-config keys; ``vertical`` a vertical run's keys (``prepare_run``).
        """
        deployed = (
            resumable_run(self.workspace)
            if resume
            else prepare_run(
                self.workspace,
                rounds=rounds,
                model=model,
                seed=seed,
                round_timeout=round_timeout,
                min_parties=min_parties,
                plaintext=self.plaintext,
                masking=self.masking,
                mask_self=self.mask_self,
                privacy=privacy,
                trees=trees,
                vertical=vertical,
            )
        )
        try:
            outcome = execute_run(self.workspace, deployed, on_event=on_event, timeout=timeout)
        except RunFailedError as e:
            raise RunFailedError(f"{e}\n{self.log_tails()}") from e
        return deployed, outcome

    def log_tails(self, *, lines: int = 25) -> str:
        """The end of the SuperLink's and every party's SuperNode log: what a failed run's
        error needs for a diagnosis when the workspace is gone (a CI machine)."""
        logs = [("superlink", WorkspaceLayout(self.workspace).superlink_dir / SUPERLINK_LOG_FILE)]
        for party in sorted(self.data):
            node = self.supernodes.get(party)
            if node is None:
                state = "not started"
            elif node.is_running():
                state = f"pid {node.pid} running"
            else:
                state = f"pid {node.pid} exited with code {node.wait(timeout=0)}"
            path = self.bundle(party).layout.state_dir / SUPERNODE_LOG_FILE
            logs.append((f"{party} ({state})", path))
        return "\n".join(
            f"--- last {lines} lines of {name}'s log ({path}):\n{log_tail(path, lines=lines)}"
            for name, path in logs
        )

    def stop(self) -> None:
        """Stop every SuperNode first, then the SuperLink (the reverse order strands nodes)."""
        for party in list(self.supernodes):
            with contextlib.suppress(Exception):
                self.stop_party(party)
        if self.superlink is not None:
            with contextlib.suppress(Exception):
                self.superlink.stop()
            self.superlink = None


def _crash(pid: int, process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a process tree all at once, then reap it; a crash, not a shutdown.

    The tree is collected before any signal, so children cannot escape by being reparented when
    their parent dies first. ``stop_process_tree`` afterwards reaps the root and catches anything
    that was forked meanwhile.
    """
    signal_tree(pid, [pid, *descendants(pid)], signal.SIGKILL)
    stop_process_tree(pid, process=process, grace=KILL_WAIT)


def _provision_keys(
    root: Path,
    *,
    names: Sequence[str],
    schema: DatasetSchema | None,
    he_params: HEParams | None,
    allow_plaintext: bool,
    vertical: VerticalRoster | None = None,
) -> tuple[Path, dict[str, Path]]:
    """Enrol, run the key ceremony, sign and hand out the app pin (a vertical one after the
    ceremony's, as ``party pin sign --vertical-guest`` does), install the public context.
    Returns the coordinator workspace and every party's bundle folder."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    schema_file = None
    if schema is not None:
        schema_file = root / "schema.toml"
        write_schema(schema, schema_file)
    workspace = root / "coordinator"
    # Each party creates its own keys in its own folder; the coordinator sees only requests.
    bundles = enroll_parties(
        workspace,
        parties=names,
        lead=names[0],
        parties_dir=root / "parties",
        bundles_dir=root / "coordinator-outbox",
        schema_file=schema_file,
    ).bundles
    lead = load_bundle(bundles[names[0]])
    handouts = root / "handouts"
    ceremony = run_key_ceremony(
        lead.manifest,
        lead=lead.name,
        signing_key=lead.signing_key(),
        own_ckks_dir=lead.layout.ckks_dir,
        out_dir=handouts,
        params=he_params or HEParams(),
    )
    # The lead signs the app pin beside the ceremony's hand-outs; every other party installs it
    # from that file, as `keys accept` does. Without it a party's executor refuses every run.
    issue_pin(
        lead,
        out_dir=handouts,
        allow_plaintext=allow_plaintext,
        coordinator_workspace=str(workspace.resolve()),
    )
    for name, sealed in ceremony.sealed.items():
        receiver = load_bundle(bundles[name])
        install_pin(receiver, load_pin_file(handouts / PIN_FILE))
        accept_sealed_context(
            sealed.read_bytes(),
            manifest=receiver.manifest,
            recipient=receiver.name,
            receiving_key=receiver.receiving_key(),
            own_ckks_dir=receiver.layout.ckks_dir,
        )
    if vertical is not None:
        amendment = root / "pin-vertical"
        issue_pin(
            lead,
            out_dir=amendment,
            coordinator_workspace=str(workspace.resolve()),
            vertical=vertical,
        )
        for name in names[1:]:  # `party pin accept --expect-role`: each knows its own role
            install_pin(
                load_bundle(bundles[name]),
                load_pin_file(amendment / PIN_FILE),
                expect_role=vertical.role_of(name),
            )
    install_public_context(
        workspace, context_file=ceremony.public_context, signature_file=ceremony.public_signature
    )
    return workspace, bundles


def _trusting_registry(release_dir: Path, bundle: PartyBundle) -> None:
    """A lender's registry folder that trusts the parties' provisioned signing keys only."""
    trusted = release_dir / "trusted_keys"
    trusted.mkdir(parents=True)
    for record in bundle.manifest.parties:
        (trusted / f"{record.name}.pub").write_text(record.signing_public_key, encoding="utf-8")


def provision_local(
    root: Path,
    *,
    schema: DatasetSchema,
    parties: Sequence[PartyData],
    he_params: HEParams | None = None,
    allow_plaintext: bool = False,
) -> LocalDeployment:
    """Provision, run the key ceremony and the app pin, hand out files: everything before
    processes start. ``allow_plaintext`` lets the pin admit unencrypted comparison runs."""
    workspace, bundles = _provision_keys(
        root,
        names=[p.name for p in parties],
        schema=schema,
        he_params=he_params,
        allow_plaintext=allow_plaintext,
    )
    data: dict[str, tuple[Path, Path]] = {}
    for party in parties:
        folder = root / "party-data" / party.name
        folder.mkdir(parents=True)
        party.train.to_csv(folder / "train.csv", index=False)
        party.test.to_csv(folder / "test.csv", index=False)
        data[party.name] = (folder / "train.csv", folder / "test.csv")
    release_dir = root / "registry"
    _trusting_registry(release_dir, load_bundle(next(iter(bundles.values()))))
    return LocalDeployment(
        root=root,
        workspace=workspace,
        bundles=bundles,
        data=data,
        release_dir=release_dir,
    )


def provision_vertical_local(
    root: Path, *, dataset: VerticalDataset, he_params: HEParams | None = None
) -> LocalDeployment:
    """A vertical federation before its processes start: the guest leads and signs a vertical
    pin; each party keeps its own table (identifier column included), its view of it and its
    own release folder (its part of the model lands there and nowhere else)."""
    raw = [dataset.guest, *dataset.hosts]
    roster = VerticalRoster(
        guest=dataset.guest.name,
        hosts=tuple(p.name for p in dataset.hosts),
        id_column=dataset.guest.id_column,
    )
    workspace, bundles = _provision_keys(
        root,
        names=[p.name for p in raw],
        schema=None,
        he_params=he_params,
        allow_plaintext=False,
        vertical=roster,
    )
    data: dict[str, tuple[Path, Path]] = {}
    views: dict[str, Path] = {}
    for party in raw:
        folder = root / "party-data" / party.name
        folder.mkdir(parents=True)
        table = folder / "own.csv"
        party.frame.to_csv(table, index=False)
        data[party.name] = (table, table)
        views[party.name] = folder / "view.json"
        views[party.name].write_text(
            VerticalView(
                role="guest" if party.label is not None else "host",
                id_column=party.id_column,
                numeric=party.numeric,
                categorical=party.categorical,
                label=party.label,
            ).model_dump_json(indent=1),
            encoding="utf-8",
        )
    release_dir = root / "registry"
    _trusting_registry(release_dir, load_bundle(bundles[roster.guest]))
    return LocalDeployment(
        root=root,
        workspace=workspace,
        bundles=bundles,
        data=data,
        release_dir=release_dir,
        views=views,
        release_dirs={p.name: root / "party-releases" / p.name for p in raw},
    )


@contextlib.contextmanager
def running_federation(
    root: Path,
    *,
    schema: DatasetSchema,
    parties: Sequence[PartyData],
    allow_plaintext: bool = False,
    fleet_proxy: bool = False,
) -> Iterator[LocalDeployment]:
    """Provision, start the SuperLink and every SuperNode; stop them all on exit.

    ``fleet_proxy`` puts nginx on the parties' address, as ``fedrisk server start`` does.
    """
    deployment = provision_local(
        root, schema=schema, parties=parties, allow_plaintext=allow_plaintext
    )
    deployment.fleet_proxy = fleet_proxy
    with _started(deployment) as started:
        yield started


@contextlib.contextmanager
def _started(deployment: LocalDeployment) -> Iterator[LocalDeployment]:
    """Start the SuperLink and every party's SuperNode; stop them all on exit."""
    try:
        deployment.start_superlink()
        for party in deployment.data:
            deployment.start_party(party)
        yield deployment
    finally:
        deployment.stop()


@contextlib.contextmanager
def running_vertical_federation(
    root: Path, *, dataset: VerticalDataset, fleet_proxy: bool = False
) -> Iterator[LocalDeployment]:
    """:func:`provision_vertical_local`, then the SuperLink and every party's SuperNode, each
    serving its own vertical view; stop them all on exit."""
    deployment = provision_vertical_local(root, dataset=dataset)
    deployment.fleet_proxy = fleet_proxy
    with _started(deployment) as started:
        yield started


def coordinator_files(deployment: LocalDeployment) -> list[Path]:
    """Every file in the coordinator's workspace (for the no-secret-key checks)."""
    return sorted(p for p in WorkspaceLayout(deployment.workspace).root.rglob("*") if p.is_file())
