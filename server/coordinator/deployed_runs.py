"""The coordinator's ``fedrisk run``: submit the federated run to the TLS SuperLink and follow it.

Each run keeps its server-side state under ``WORKSPACE/runs/<run-id>/``: ``run.json`` (the
settings it was started with), ``progress.jsonl`` (round events), ``checkpoints/`` (ciphertexts
only) and ``results.json`` when it completes. ``--resume`` picks the newest run that has not
completed and continues it from its last checkpoint with the same settings, so no completed
round is lost or repeated. ``flower-runs.txt`` lists every Flower run id an attempt used; before
a resumed attempt starts, earlier attempts the SuperLink still counts as unfinished are stopped.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedrisk.errors import ConfigError
from fedrisk.federation.roster import load_manifest
from fedrisk.federation.run_config import FederationConfig, RunConfigValue, parse_run_config
from fedrisk.files import write_atomic
from server.coordinator.progress import read_events
from server.coordinator.provisioning import WorkspaceLayout
from server.coordinator.runs import RunOutcome, run_status, submit_run, wait_for_run
from server.coordinator.superlink import (
    CONNECTION_NAME,
    SuperLinkError,
    run_flwr_json,
    running_superlink,
)

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
FLOWER_RUNS_FILE = "flower-runs.txt"


@dataclass(frozen=True)
class DeployedRun:
    """Where a deployed run's server-side files live, and the settings it runs with."""

    run_dir: Path
    config: FederationConfig

    @property
    def run_config(self) -> dict[str, RunConfigValue]:
        """What ``flwr run --run-config`` submits."""
        return self.config.to_run_config()

    @property
    def progress(self) -> Path:
        """The run's round events."""
        return self.run_dir / "progress.jsonl"

    @property
    def results(self) -> Path:
        """Written by the ServerApp when the run completes."""
        return self.run_dir / "results.json"

    @property
    def flower_run_ids(self) -> list[str]:
        """Every Flower run id this run's attempts used, oldest first."""
        path = self.run_dir / FLOWER_RUNS_FILE
        if not path.exists():
            return []
        return path.read_text(encoding="utf-8").split()


def _runs_dir(workspace: Path) -> Path:
    return workspace / "runs"


def prepare_run(
    workspace: Path,
    *,
    rounds: int,
    model: str,
    seed: int = 0,
    release_party: str | None = None,
    min_parties: int = 3,
    round_timeout: float = 300.0,
    stage: str = "application",
    local_epochs: int = 1,
    plaintext: bool = False,
    masking: bool = True,
    mask_self: bool = False,
    privacy: Mapping[str, RunConfigValue] | None = None,
    trees: Mapping[str, RunConfigValue] | None = None,
    vertical: Mapping[str, RunConfigValue] | None = None,
) -> DeployedRun:
    """Create a new run folder and its validated run config.

    ``vertical`` holds a vertical run's ``vertical-*`` keys (``vertical-guest``,
    ``vertical-parties``, ``vertical-id-column``, …) and may hold ``batch-size``,
    ``learning-rate``, ``l2`` and ``patience``: the run is then PSI alignment and encrypted
    vertical LR among exactly ``vertical-parties`` (the quorum), which each party's pin must
    name the same way.

    ``privacy`` holds the run's ``dp-*`` run-config keys (differential privacy, off when empty);
    the noise multiplier is calibrated here, once, and written into the run config. ``trees``
    holds a ``gbdt`` run's ``trees`` and ``tree-*`` keys (the run config's defaults otherwise).

    ``plaintext`` runs the INSECURE comparison mode (updates readable by the server); it exists
    for benchmarks only and must be asked for explicitly; so is ``masking=False`` (CKKS without
    masks), which the deployed pin admits only where it admits plaintext. ``mask_self`` adds
    self masks to the pairwise ones (:mod:`secure_agg.masking`).
    """
    layout = WorkspaceLayout(workspace)
    manifest = load_manifest(layout.manifest)
    if not layout.public_context.exists():
        raise ConfigError(
            f"public context must be installed before a run; {layout.public_context} is missing. "
            "Run `fedrisk server install-public-context` with the lead party's hand-out."
        )
    party = release_party or manifest.lead
    if party not in manifest.party_names:
        raise ConfigError(f"release party must be one of {manifest.party_names}; got {party!r}")
    vertical_keys: dict[str, RunConfigValue] = {}
    if vertical:
        parties = [p for p in str(vertical.get("vertical-parties", "")).split(",") if p]
        outside = sorted(set(parties) - set(manifest.party_names))
        if not parties or outside:
            raise ConfigError(
                f"vertical-parties must name parties of the federation {manifest.party_names}; "
                f"got {parties}"
            )
        vertical_keys = {
            "layout": "vertical",
            "min_parties": len(parties),
            "allow_fewer_parties": len(parties) < 3,
            **vertical,
        }
    run_id = f"run-{uuid.uuid4().hex[:12]}"
    run_dir = _runs_dir(workspace) / run_id
    # Validated here, not inside the SuperLink.
    config = parse_run_config(
        {
            "run_id": run_id,
            "rounds": rounds,
            "model": model,
            "seed": seed,
            "min_parties": min_parties,
            "release_party": party,
            "stage": stage,
            "local_epochs": local_epochs,
            "round_timeout": round_timeout,
            "public_context": str(layout.public_context.resolve()),
            "server_dir": str(run_dir.resolve()),
            "plaintext": plaintext,
            "masking": masking,
            "mask_self": mask_self,
            **(privacy or {}),
            **(trees or {}),
            **vertical_keys,
        }
    ).with_calibrated_noise()
    run_dir.mkdir(parents=True)
    write_atomic(run_dir / RUN_FILE, json.dumps(config.to_run_config(), indent=2))
    return DeployedRun(run_dir=run_dir, config=config)


def resumable_run(workspace: Path) -> DeployedRun:
    """The newest run that has not completed, set to resume from its last checkpoint."""
    candidates = sorted(
        (p for p in _runs_dir(workspace).glob("run-*") if (p / RUN_FILE).exists()),
        key=lambda p: (p / RUN_FILE).stat().st_mtime,
    )
    unfinished = [p for p in candidates if not (p / "results.json").exists()]
    if not unfinished:
        raise ConfigError(f"--resume needs an unfinished run under {_runs_dir(workspace)}; none")
    run_dir = unfinished[-1]
    config = parse_run_config(json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8")))
    return DeployedRun(run_dir=run_dir, config=config.model_copy(update={"resume": True}))


def execute_run(
    workspace: Path,
    run: DeployedRun,
    *,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    timeout: float = 3600.0,
) -> RunOutcome:
    """Submit to the workspace's running SuperLink and wait for the real outcome.

    Raises
    ------
    RunFailedError
        The run ended in any state but ``finished:completed`` (``flwr run`` exits 0 anyway).
    """
    if running_superlink(workspace) is None:
        raise SuperLinkError(
            f"no SuperLink is running for workspace {workspace}; start it with "
            "`fedrisk server start --workspace ...`"
        )
    flwr_home = WorkspaceLayout(workspace).flwr_home
    if run.config.resume:
        stop_earlier_attempts(workspace, run)
    earlier_events = len(read_events(run.progress))
    run_id = submit_run(connection=CONNECTION_NAME, flwr_home=flwr_home, run_config=run.run_config)
    with (run.run_dir / FLOWER_RUNS_FILE).open("a", encoding="utf-8") as handle:
        handle.write(run_id + "\n")  # every Flower run id this fedrisk run used
    return wait_for_run(
        skip_events=earlier_events,
        connection=CONNECTION_NAME,
        flwr_home=flwr_home,
        run_id=run_id,
        progress_path=run.progress,
        on_event=on_event,
        timeout=timeout,
    )


def stop_earlier_attempts(workspace: Path, run: DeployedRun) -> list[str]:
    """Stop the Flower runs of this run's earlier attempts that have not finished; their ids.

    Notes
    -----
    After a coordinator crash the SuperLink's state database still lists the interrupted
    attempt as running until its ServerApp's task token expires, and a ServerApp that outlived
    its SuperLink would resume polling once the SuperLink is back. Either could write events or
    checkpoints into the run folder next to the resumed attempt, so the earlier attempt is
    stopped first (``flwr stop``); the SuperLink then also drops its undelivered messages.
    """
    flwr_home = WorkspaceLayout(workspace).flwr_home
    stopped: list[str] = []
    for flower_run in run.flower_run_ids:
        status = run_status(connection=CONNECTION_NAME, flwr_home=flwr_home, run_id=flower_run)
        if status.startswith("finished"):
            continue
        try:
            run_flwr_json(workspace, ["stop", flower_run, CONNECTION_NAME])
        except SuperLinkError as e:
            # It finished in between, or this state database never knew it (a new database).
            log.warning("earlier attempt %s (%s) could not be stopped: %s", flower_run, status, e)
            continue
        log.info("stopped earlier attempt %s of %s (was %s)", flower_run, run.run_dir.name, status)
        stopped.append(flower_run)
    return stopped
