"""The party's warm worker: runs every ClientApp task of its SuperNode in one long-lived process.

``clients.supernode`` starts ``flower-supernode --isolation process`` and, beside it, this
executor (``python -m clients.executor``). The executor loads the party's code, torch, its data
and its CKKS secret context once, then polls the SuperNode's Runtime API for tasks and runs each
in-process, so a message costs what its work costs instead of a cold ``flwr-clientapp`` (≈ 7 s).
The simulation engine and the deployment runtime still call the same ``clients.clientapp:app``.

Every run passes one admission check, ``RunCheck``, after its task input is pulled and before
any of the run's code is installed, imported or executed. The executor hashes the FAB bytes it
received itself (the hash the SuperLink states is never used) and merges the run config exactly
as Flower does; ``clients.pinning.PinnedRunCheck`` then checks both against the app pin in the
party's own folder (``--party-dir``). A refused run gets a Flower error reply naming the party and
the reason (the ServerApp sees it; fedrisk's coordinator shows it as a party error) and is logged
with the run id. Without a party folder, or without a valid pin in it, every run is refused.

The party's own configuration (``--party-config``, its ``party.toml``) is handed to the ClientApp
in-process, so ``context.node_config`` holds nothing but the party's name.

Flower internals are confined to ``clients.flower_runtime``.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from flwr.app import Message
from flwr.clientapp import ClientApp

from clients.flower_runtime import (
    TASK_ENDED,
    AcquiredTask,
    RuntimeConnection,
    TaskChannel,
    TaskInput,
    TaskOutcome,
    error_reply,
    is_load_error,
    load_client_app,
)
from clients.party import PartyConfig, load_party_config, serve_party, warm_up
from clients.pinning import PinnedRunCheck, RunAdmission, refuse_every_run
from fedrisk.errors import FedRiskError, RunRefusedError
from fedrisk.federation.processes import is_alive

log = logging.getLogger(__name__)

DEFAULT_POLL: Final = 0.2
"""Seconds between ``AcquireTask`` polls when the SuperNode holds no task. Each poll costs the
SuperNode and the executor a few ms of CPU; 0.2 s adds 0.1 s per message on average, small next
to the SuperNode's own 0.5 s reply polling, and keeps three idle parties under 5 % of a core."""
PARENT_CHECK: Final = 0.5
"""Seconds between checks that the SuperNode is still alive (the executor exits with it)."""


RunCheck = Callable[[RunAdmission], None]
"""Raises ``RunRefusedError`` to refuse a run; returns to admit it."""


@dataclass
class WarmExecutor:
    """Runs the ClientApp tasks of one SuperNode in this process.

    Parameters
    ----------
    runtime_api_address
        The SuperNode's Runtime API, ``127.0.0.1:PORT``.
    auth_secret
        The SuperNode's SuperExec auth secret (``--superexec-auth-secret-file``): without it
        any local process could acquire the party's tasks.
    check
        The admission check run before any of a run's code is loaded; the default refuses
        every run (an executor must be told which pin it enforces).
    party
        The party's name, for the reason a refused run's error reply carries.
    poll
        Seconds between polls while no task waits.
    """

    runtime_api_address: str
    auth_secret: bytes | None = field(default=None, repr=False)
    check: RunCheck = refuse_every_run
    party: str = ""
    poll: float = DEFAULT_POLL
    _apps: dict[str, ClientApp] = field(default_factory=dict, repr=False)

    def serve(self, *, stop: threading.Event, max_tasks: int | None = None) -> int:
        """Acquire and run tasks until ``stop`` is set (or ``max_tasks`` ran); the count run."""
        runtime = RuntimeConnection(self.runtime_api_address, auth_secret=self.auth_secret)
        done = 0
        try:
            while not stop.is_set() and (max_tasks is None or done < max_tasks):
                task = runtime.acquire()
                if task is None:
                    stop.wait(self.poll)
                    continue
                self.run_task(task)
                done += 1
        finally:
            runtime.close()
        return done

    def run_task(self, task: AcquiredTask) -> None:
        """Run one task as ``flwr-clientapp`` would, reporting its outcome to the SuperNode."""
        channel = TaskChannel(self.runtime_api_address, task.token)
        started = time.perf_counter()
        task_input: TaskInput | None = None
        reply: Message | None = None
        sub_status: str = TaskOutcome.FAILED
        details = "ClientApp task failed due to unknown reason"
        try:
            with channel.heartbeat():
                try:
                    task_input = channel.pull()
                    app = self.admit(task_input)
                    reply = app(message=task_input.message, context=task_input.context)
                    sub_status, details = TaskOutcome.COMPLETED, ""
                except RunRefusedError as e:
                    log.error("run %s refused (%s): %s", task.run_id, e.reason, e)
                    details = refusal_reason(e, party=self.party)
                    if task_input is not None:
                        reply = error_reply(
                            task_input.message, code=TaskOutcome.REFUSED, reason=details
                        )
                except TASK_ENDED as e:
                    log.warning(
                        "task %s of run %s ended without us: %s", task.task_id, task.run_id, e
                    )
                    details = f"task ended at the SuperNode: {e}"
                except Exception as e:
                    # The same reason format as flwr-clientapp, which the ServerApp parses.
                    details = str(type(e)) + ":<'" + str(e) + "'>"
                    code = TaskOutcome.APP_RAISED
                    if is_load_error(e):
                        details = "An exception was raised when attempting to load `ClientApp`"
                        code = TaskOutcome.LOAD_FAILED
                    log.error("task %s of run %s failed", task.task_id, task.run_id, exc_info=e)
                    if task_input is not None:
                        reply = error_reply(task_input.message, code=code, reason=details)
                finally:
                    context = task_input.context if task_input is not None else None
                    if reply is not None and context is not None:
                        try:
                            channel.push_reply(reply, context)
                        except Exception as e:
                            log.error("push of task %s failed", task.task_id, exc_info=e)
                            sub_status, details = TaskOutcome.FAILED, f"push failed: {e}"
                    try:
                        channel.finish(context, sub_status=sub_status, details=details)
                    except TASK_ENDED as e:
                        sub_status = f"withdrawn ({type(e).__name__})"
        finally:
            channel.close()
        # whole milliseconds: a decimal like "0.091 s" in a party's log is indistinguishable
        # from one of its feature values to anyone auditing the log for leaked data
        log.info(
            "task %s of run %s: %s in %d ms",
            task.task_id,
            task.run_id,
            sub_status,
            round((time.perf_counter() - started) * 1000),
        )

    def admit(self, task_input: TaskInput) -> ClientApp:
        """Check the run, then install and load the ClientApp its FAB names (once per FAB).

        The check sees the hash of the FAB bytes received and the run config merged from them;
        the ClientApp then gets exactly that run config, and the app is installed from those
        bytes under that hash.

        Raises
        ------
        RunRefusedError
            The check refused the run: nothing of it was installed or imported.
        """
        admission = RunAdmission(
            run_id=task_input.run_id,
            fab_content=task_input.fab_content,
            override_config=task_input.override_config,
            stated_fab_hash=task_input.fab_hash,
        )
        self.check(admission)
        task_input.context.run_config = admission.run_config()
        fab_sha256 = admission.fab_sha256
        app = self._apps.get(fab_sha256)
        if app is None:
            app = load_client_app(task_input.fab_content, fab_sha256=fab_sha256)
            self._apps[fab_sha256] = app
        return app


def refusal_reason(error: RunRefusedError, *, party: str) -> str:
    """The reason a refused run's error reply carries: who refused, why (the code), and how."""
    who = f"party {party}" if party else "the party"
    return f"run refused by {who} ({error.reason}): {error}"


def _exit_with_parent(parent_pid: int) -> None:
    """Exit this process as soon as ``parent_pid`` is gone (the SuperNode crashed or stopped)."""

    def watch() -> None:
        while is_alive(parent_pid):
            time.sleep(PARENT_CHECK)
        log.info("SuperNode %d is gone; the executor exits", parent_pid)
        os._exit(0)

    threading.Thread(target=watch, name="parent-monitor", daemon=True).start()


def _warm_up_beside(config: PartyConfig, *, started: float) -> None:
    """Run ``warm_up(config)`` in a thread; a failure is logged (tasks then refuse by
    themselves, with the same error)."""

    def warm() -> None:
        try:
            warm_up(config)
        except FedRiskError as e:
            log.error("warm-up failed: %s", e)
            return
        log.info("executor warm in %d ms", round((time.perf_counter() - started) * 1000))

    threading.Thread(target=warm, name="warm-up", daemon=True).start()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m clients.executor",
        description="Run a party's SuperNode tasks in one warm process.",
    )
    parser.add_argument("--runtime-api-address", required=True, help="HOST:PORT of the SuperNode")
    parser.add_argument("--superexec-auth-secret-file", type=Path, default=None)
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this pid exits")
    parser.add_argument(
        "--party-dir",
        type=Path,
        default=None,
        help="the party's folder: its manifest and installed app pin (without it, refuse all)",
    )
    parser.add_argument(
        "--party-config", type=Path, default=None, help="party.toml to load before the first task"
    )
    parser.add_argument("--poll", type=float, default=DEFAULT_POLL)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m clients.executor``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # One line per Runtime API call (several per poll) would drown the SuperNode's log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = _parse_args(argv)
    if not 0.01 <= args.poll <= 60.0:
        raise SystemExit(f"--poll must be between 0.01 and 60 seconds; got {args.poll}")
    if args.parent_pid is not None:
        _exit_with_parent(args.parent_pid)
    secret_file: Path | None = args.superexec_auth_secret_file
    secret = secret_file.read_bytes() if secret_file is not None else None
    started = time.perf_counter()
    import clients.clientapp  # noqa: F401 - imported before the first task: that is the point

    party = ""
    if args.party_config is not None:
        config = load_party_config(args.party_config)
        serve_party(config)
        # Beside the first tasks, not before them: the statistics query needs no torch, so it
        # is answered while torch loads, and the run's start does not wait for the warm-up.
        _warm_up_beside(config, started=started)
        party = config.name
    check: RunCheck = refuse_every_run
    if args.party_dir is not None:
        check = PinnedRunCheck(args.party_dir.resolve())
    else:
        log.warning("no --party-dir: every run will be refused")
    log.info(
        "executor ready in %d ms; serving %s",
        round((time.perf_counter() - started) * 1000),
        args.runtime_api_address,
    )
    executor = WarmExecutor(
        args.runtime_api_address, auth_secret=secret, check=check, party=party, poll=args.poll
    )
    executor.serve(stop=threading.Event())


if __name__ == "__main__":
    main()
