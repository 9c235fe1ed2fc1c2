"""The one place that uses Flower 1.41 internals: the SuperNode's Runtime API, task by task.

``flower-supernode --isolation process`` stops starting ``flwr-clientapp`` itself and waits for
an external executor to ``AcquireTask`` from its Runtime API (HTTP on 127.0.0.1). Flower's own
``flower-superexec`` would then spawn one cold ``flwr-clientapp`` per message, and its warm
executors serve only agent/model/connector tasks (``flwr.supercore.warm_executor_constants``).
``clients.executor`` instead runs each ClientApp task in its own long-lived process, doing what
``flwr.supernode.runtime.run_clientapp.run_clientapp`` does per task: heartbeat, pull the task
input, load the ClientApp the run's FAB names, call it, push the reply and the task output.

It also paces the SuperNode's own loop (:func:`run_paced_supernode`). Flower 1.41's
``start_client_internal`` sleeps a hard-coded 3 s whenever a pull from the SuperLink finds no
message, and 0.5 s between checks for the ClientApp's reply; no option changes either. A round of
the federation is one message per party, so the next round's message arrives well under a second
after a party's reply, and each round paid most of those 3 s. ``python -m clients.flower_runtime
flower-supernode ARGS`` runs Flower's own ``flower-supernode`` entry point unchanged, with that
module's ``time`` replaced by :class:`PacedSleep`: it waits a quarter of the time the node has
been idle (50 ms right after a message, at most 1 s), and 20 ms between reply checks.

Every name imported from ``flwr`` outside its public app API is imported here and nowhere else;
``tests/unit/clients/test_flower_runtime.py`` fails loudly when a Flower upgrade renames them or
changes the signatures and sleeps this module relies on.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
from flwr.app import Context, Message
from flwr.app.error import Error
from flwr.cli.config_utils import get_fab_metadata
from flwr.cli.install import install_from_fab
from flwr.clientapp import ClientApp
from flwr.clientapp.client_app import LoadClientAppError
from flwr.clientapp.utils import get_load_client_app_fn
from flwr.common.config import get_fused_config_from_fab
from flwr.common.constant import MAX_RETRY_DELAY, ErrorCode, Status, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest, SendTaskHeartbeatRequest
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.retry import RetryInvoker, exponential, make_simple_http_retry_invoker
from flwr.supercore.run import Run, RunNotRunningException
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode import start_client_internal as supernode_loop
from flwr.supernode.cli import flower_supernode
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

ACQUIRE_TASK_METHOD: Final = "/flwr.proto.Runtime/AcquireTask"
"""The Runtime API method the SuperNode protects with the SuperExec auth secret."""
CLIENT_APP_TASK: Final = str(TaskType.CLIENT_APP)
COMPONENT_NAME: Final = "SuperExec"
"""How the executor introduces itself to the Runtime API (its version check)."""


@dataclass(frozen=True)
class AcquiredTask:
    """A ClientApp task the SuperNode handed to this executor."""

    task_id: int
    run_id: int
    fab_hash: str
    token: str


@dataclass(frozen=True)
class TaskInput:
    """Everything one ClientApp task needs, pulled from the SuperNode."""

    message: Message
    context: Context
    run_id: int
    fab_id: str
    fab_version: str
    fab_hash: str
    """The hash the SuperLink states for the FAB: a label, never trusted."""
    fab_content: bytes = field(repr=False)
    override_config: Mapping[str, bool | int | float | str] = field(default_factory=dict)
    """The run's own overrides of the FAB's run-config defaults, as submitted."""


class TaskOutcome:
    """What ``run_clientapp`` reports for a task: Flower's sub-status values and error codes."""

    COMPLETED: Final = SubStatus.COMPLETED
    FAILED: Final = SubStatus.FAILED
    APP_RAISED: Final = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    LOAD_FAILED: Final = ErrorCode.LOAD_CLIENT_APP_EXCEPTION
    REFUSED: Final = ErrorCode.INVALID_FAB


class RuntimeConnection:
    """The executor's own connection to a SuperNode's Runtime API (acquires tasks only)."""

    def __init__(self, address: str, *, auth_secret: bytes | None) -> None:
        interceptors: list[RuntimeVersionHttpInterceptor | SuperExecAuthHttpInterceptor] = [
            RuntimeVersionHttpInterceptor(component_name=COMPONENT_NAME)
        ]
        if auth_secret:
            interceptors.append(
                SuperExecAuthHttpInterceptor(
                    master_secret=auth_secret, protected_methods=frozenset({ACQUIRE_TASK_METHOD})
                )
            )
        self.address = address
        self._client = RuntimeHttpClient.from_server_address(
            server_address=address,
            insecure=True,
            root_certificates=None,
            interceptors=interceptors,
            retry_invoker=make_simple_http_retry_invoker(),
        )

    def acquire(self) -> AcquiredTask | None:
        """One ClientApp task waiting at the SuperNode, or ``None``."""
        response = self._client.AcquireTask(
            AcquireTaskRequest(supported_task_types=[CLIENT_APP_TASK])
        )
        if not response.HasField("task") or not response.token:
            return None
        task = response.task
        return AcquiredTask(
            task_id=int(task.task_id),
            run_id=int(task.run_id),
            fab_hash=str(task.fab_hash),
            token=str(response.token),
        )

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()


class TaskChannel:
    """One task's token-authenticated channel: pull its input, push its reply and outcome."""

    def __init__(self, address: str, token: str) -> None:
        self._client = RuntimeHttpClient.from_server_address(
            server_address=address,
            insecure=True,
            root_certificates=None,
            interceptors=[
                RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                RuntimeTokenHttpInterceptor(token),
            ],
            retry_invoker=task_retry_invoker(),
        )
        self.withdrawn = threading.Event()
        """Set once the SuperNode no longer knows this task (see :class:`TaskWithdrawnError`)."""

    def pull(self) -> TaskInput:
        """The message, context, run and FAB of the task (activates it at the SuperNode)."""
        message, context, run, fab = pull_task_input(self._client)
        return TaskInput(
            message=message,
            context=context,
            run_id=int(run.run_id),
            fab_id=str(run.fab_id),
            fab_version=str(run.fab_version),
            fab_hash=str(fab.hash_str),
            fab_content=bytes(fab.content),
            override_config=dict(run.override_config),
        )

    def push_reply(self, reply: Message, context: Context) -> None:
        """Send the ClientApp's reply (or error reply) back to the SuperNode."""
        push_message(self._client, reply, context)

    def finish(self, context: Context | None, *, sub_status: str, details: str) -> None:
        """Report the task's final status and the updated context (its ``state``)."""
        push_task_output(self._client, context, sub_status, details)

    @contextmanager
    def heartbeat(self) -> Iterator[None]:
        """Keep the task alive at the SuperNode while the block runs."""
        sender = HeartbeatSender(self._send_heartbeat)
        sender.start()
        try:
            yield
        finally:
            if sender.is_running:
                sender.stop()

    def _send_heartbeat(self) -> bool:
        """One heartbeat; ``False`` asks the sender to retry. Flower's own heartbeat function
        SIGINTs its process when the SuperNode no longer knows the task; here that only marks
        the task withdrawn (the executor outlives its tasks)."""
        if self.withdrawn.is_set():
            return True
        try:
            answer = self._client.SendTaskHeartbeat(SendTaskHeartbeatRequest())
        except (TaskWithdrawnError, RunNotRunningException):
            self.withdrawn.set()
            return True
        except (httpx.TransportError, httpx.HTTPStatusError):
            return False
        if not answer.success:
            self.withdrawn.set()
        return True

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()


class TaskWithdrawnError(RuntimeError):
    """The SuperNode refused a task's token (401): it finished the task without the executor.

    It does so when the task's message never arrived, e.g. after a coordinator crash the
    SuperLink answers that the message's run is no longer running (:func:`finish_leaked_tasks`,
    or Flower's own "Failed to receive message" path) while the executor is still pulling the
    task's input. That ends the task, never the executor.
    """


TASK_ENDED: Final = (TaskWithdrawnError, RunNotRunningException)
"""What a task's Runtime API call raises once the task or its run ended without the executor."""

_RETRYABLE_STATUS: Final = frozenset({502, 503, 504})


def _task_giveup(error: Exception) -> bool:
    if isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
        if status == 401:
            raise TaskWithdrawnError(str(error)) from error
        if status == 403:
            raise RunNotRunningException(str(error)) from error
        return status not in _RETRYABLE_STATUS
    return False  # a transport error: the SuperNode on 127.0.0.1 is restarting; retry


def task_retry_invoker() -> RetryInvoker:
    """Flower's retry policy for a task's Runtime API calls, without its self-SIGINT.

    ``make_simple_http_retry_invoker`` answers a 401 with ``os.kill(os.getpid(), SIGINT)``,
    right for ``flwr-clientapp``, which lives for one task. In the executor, which serves every
    task of every run, that killed the process on a withdrawn task, and the next run's tasks
    then waited at the SuperNode for an executor that was gone. Here a 401 raises
    :class:`TaskWithdrawnError` and a 403 Flower's ``RunNotRunningException``, in the task.
    """
    return RetryInvoker(
        wait_gen_factory=lambda: exponential(max_delay=MAX_RETRY_DELAY),
        recoverable_exceptions=(httpx.TransportError, httpx.HTTPStatusError),
        max_tries=None,
        max_time=None,
        should_giveup=_task_giveup,
    )


def error_reply(message: Message, *, code: int, reason: str) -> Message:
    """A Flower error reply to ``message``; the ServerApp sees ``code`` and ``reason``."""
    return Message(Error(code=code, reason=reason), reply_to=message)


def fused_run_config(
    fab_content: bytes, override_config: Mapping[str, bool | int | float | str]
) -> dict[str, bool | int | float | str]:
    """The run config a ClientApp of this run reads, merged as the SuperNode merges it.

    Flower's own ``get_fused_config_from_fab``: the FAB's ``[tool.flwr.app.config]`` defaults,
    flattened, with the run's overrides on top. Parses the FAB's ``pyproject.toml`` only.

    Raises
    ------
    ValueError
        An override names a key the FAB does not define, or the FAB's config is invalid.
    """
    run = Run.create_empty(run_id=0)
    run.override_config = dict(override_config)
    return dict(get_fused_config_from_fab(fab_content, run))


def load_client_app(fab_content: bytes, *, fab_sha256: str) -> ClientApp:
    """The ClientApp a FAB names, installed and loaded as ``flwr-clientapp`` would.

    ``fab_sha256`` is the hash the caller computed from ``fab_content``; the FAB's id and version
    are read from the FAB itself. Nothing the SuperLink states about the run picks which installed
    app is imported.

    Notes
    -----
    Flower's loader imports a module only if it is not in ``sys.modules`` yet, so the second task
    of a run (and every task of a later run of the same app) reuses the already-imported
    ClientApp: that is what keeps the worker warm.

    Raises
    ------
    flwr.clientapp.client_app.LoadClientAppError
        The FAB's ClientApp cannot be loaded.
    """
    install_from_fab(fab_content, skip_prompt=True)
    fab_id, fab_version = get_fab_metadata(fab_content)
    load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
    return load(fab_id, fab_version, fab_sha256)


def is_load_error(error: BaseException) -> bool:
    """Whether ``error`` is Flower's failure to load a ClientApp."""
    return isinstance(error, LoadClientAppError)


# --------------------------------------------------------------------------------------------------
# The SuperNode's loop, paced
# --------------------------------------------------------------------------------------------------

IDLE_PULL_SLEEP: Final = 3.0
"""What ``start_client_internal`` sleeps after a pull that found no message (Flower 1.41)."""
REPLY_CHECK_SLEEP: Final = 0.5
"""What it sleeps between checks for a ClientApp reply, and for a reply's object contents."""
IDLE_FRACTION: Final = 0.25
"""An idle pull waits this fraction of the time since the last message: the latency it adds to
the next message is at most a quarter of the time the node was waiting anyway."""
IDLE_MIN: Final = 0.05
IDLE_MAX: Final = 1.0
"""Bounds of an idle wait. An idle node pulls once a second: a few ms of CPU each, on the node
and the SuperLink, where Flower's default was once in 3 s."""
REPLY_CHECK: Final = 0.02
"""Seconds between checks for the reply of a running task (an in-memory lookup at the node)."""


class PacedSleep:
    """Stands in for the ``time`` module inside Flower's SuperNode loop, shortening its sleeps.

    Only ``sleep`` differs: a sleep of :data:`IDLE_PULL_SLEEP` waits in proportion to how long
    the node has been idle, and a sleep of :data:`REPLY_CHECK_SLEEP` waits
    :data:`REPLY_CHECK`. Any other duration is slept as asked.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._last_message = clock()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def saw_message(self) -> None:
        """The loop just pulled a message: the next one is likely soon."""
        with self._lock:
            self._last_message = self._clock()

    def delay(self, seconds: float) -> float:
        """How long a sleep of ``seconds`` asked for by Flower's loop really waits."""
        if seconds == IDLE_PULL_SLEEP:
            with self._lock:
                idle = self._clock() - self._last_message
            return min(IDLE_MAX, max(IDLE_MIN, IDLE_FRACTION * idle))
        if seconds == REPLY_CHECK_SLEEP:
            return REPLY_CHECK
        return seconds

    def sleep(self, seconds: float) -> None:
        """Sleep :meth:`delay` of ``seconds``."""
        time.sleep(self.delay(seconds))


_UNFINISHED: Final = (Status.PENDING, Status.STARTING, Status.RUNNING)


def _unfinished_tasks(state: Any) -> set[int]:
    return {int(task.task_id) for task in state.get_tasks(statuses=_UNFINISHED)}


def finish_leaked_tasks(state: Any, *, before: set[int]) -> list[int]:
    """Finish, as failed, every task created since ``before`` that is still unfinished.

    Called after a pull that stored no message. Flower 1.41's ``_pull_and_store_message``
    creates the message's task before pulling the message's objects, and when the SuperLink
    then answers that the run is no longer running (a coordinator that crashed and came back
    marks the old run failed) it logs "Ignoring message" but leaves the task pending. The
    executor takes the oldest pending task first, so it would sit in that dead task's object
    pull (Flower retries it for up to two hours) while the next run's tasks wait behind it.
    """
    leaked = sorted(_unfinished_tasks(state) - before)
    for task_id in leaked:
        state.finish_task(
            task_id,
            sub_status=SubStatus.FAILED,
            details="the message of this task was not received (its run is no longer running)",
        )
    return leaked


def pace_supernode_loop(pacer: PacedSleep) -> None:
    """Install ``pacer`` into Flower's SuperNode loop of this process, and finish the tasks its
    pull leaks (:func:`finish_leaked_tasks`).

    The loop looks up ``time`` and ``_pull_and_store_message`` as module globals on every call,
    so replacing them there paces it without touching any other Flower module.
    """
    pull = supernode_loop._pull_and_store_message

    def pull_and_note(*args: Any, **kwargs: Any) -> int | None:
        state = kwargs["state"]
        before = _unfinished_tasks(state)
        run_id = pull(*args, **kwargs)
        if run_id is None:
            finish_leaked_tasks(state, before=before)
        else:
            pacer.saw_message()
        return run_id

    supernode_loop.time = pacer  # type: ignore[attr-defined,assignment]
    supernode_loop._pull_and_store_message = pull_and_note


def run_paced_supernode(argv: Sequence[str]) -> None:
    """Run Flower's ``flower-supernode`` entry point with ``argv``, its loop paced."""
    pace_supernode_loop(PacedSleep())
    sys.argv = ["flower-supernode", *argv]
    flower_supernode()


if __name__ == "__main__":
    # python -m clients.flower_runtime flower-supernode ARGS...
    if sys.argv[1:2] != ["flower-supernode"]:
        raise SystemExit(
            f"usage: python -m clients.flower_runtime flower-supernode ARGS; got {sys.argv[1:2]}"
        )
    run_paced_supernode(sys.argv[2:])
