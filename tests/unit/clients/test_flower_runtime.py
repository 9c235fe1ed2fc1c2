"""Fails loudly when a Flower upgrade changes an internal that ``clients.flower_runtime`` uses.

The warm executor re-implements, task by task, what Flower 1.41's ``flwr-clientapp`` process
does against the SuperNode's Runtime API. Each assertion below names one internal and the shape
the executor relies on; when one fails, re-read ``flwr/supernode/runtime/run_clientapp.py`` of
the new version and adapt ``clients/flower_runtime.py`` (and only it).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

import flwr
import pytest
from flwr.cli.config_utils import get_fab_metadata
from flwr.cli.install import install_from_fab
from flwr.clientapp.utils import get_load_client_app_fn
from flwr.common.config import get_fused_config_from_fab
from flwr.common.constant import ISOLATION_MODE_PROCESS, ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest, AcquireTaskResponse
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import SuperExecAuthHttpInterceptor
from flwr.supercore.protobuf.client import ProtobufClient
from flwr.supercore.run import Run
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime import run_clientapp

from clients import flower_runtime


def _params(fn: object) -> list[str]:
    return list(inspect.signature(fn).parameters)  # type: ignore[arg-type]


def test_flower_is_the_pinned_version() -> None:
    assert flwr.__version__ == "1.41.0", (
        f"clients/flower_runtime.py was written against Flower 1.41.0; got {flwr.__version__}: "
        "re-check every internal it uses"
    )


def test_run_clientapp_helpers_keep_their_signatures() -> None:
    assert _params(run_clientapp.pull_task_input) == ["client"]
    assert _params(run_clientapp.push_message) == ["client", "message", "context"]
    assert _params(run_clientapp.push_task_output) == ["client", "context", "sub_status", "details"]
    assert flower_runtime.pull_task_input is run_clientapp.pull_task_input
    # flwr-clientapp still does per task what the executor does: heartbeat, pull, install the
    # FAB, load the ClientApp, call it, push the reply and the task output.
    source = inspect.getsource(run_clientapp.run_clientapp)
    for step in (
        "HeartbeatSender(make_task_heartbeat_fn_http(client))",
        "pull_task_input(client)",
        "install_from_fab(fab.content, skip_prompt=True)",
        "get_load_client_app_fn(",
        "client_app(message=message, context=context)",
        "push_message(client, reply_message, context)",
        "push_task_output(",
        "RuntimeTokenHttpInterceptor(token)",
    ):
        assert step in source, f"flwr-clientapp no longer does {step!r}"


def test_runtime_client_and_interceptors_keep_their_shape() -> None:
    assert issubclass(RuntimeHttpClient, ProtobufClient)
    assert {"AcquireTask", "PullTaskInput", "PushTaskOutput", "SendTaskHeartbeat"} <= set(
        dir(RuntimeHttpClient)
    )
    assert _params(RuntimeHttpClient.from_server_address) == [
        "server_address",
        "insecure",
        "root_certificates",
        "interceptors",
        "retry_invoker",
    ]
    assert _params(SuperExecAuthHttpInterceptor) == ["master_secret", "protected_methods"]
    assert _params(HeartbeatSender) == ["heartbeat_fn"]
    assert _params(make_task_heartbeat_fn_http) == ["client"]
    assert {"supported_task_types"} <= set(AcquireTaskRequest.DESCRIPTOR.fields_by_name)
    assert {"task", "token"} <= set(AcquireTaskResponse.DESCRIPTOR.fields_by_name)


def test_loader_and_installer_keep_their_signatures() -> None:
    assert _params(install_from_fab)[0] == "fab_file"
    assert "skip_prompt" in _params(install_from_fab)
    assert _params(get_load_client_app_fn) == ["default_app_ref", "app_path", "multi_app"]


def test_the_run_config_merge_is_still_the_supernodes() -> None:
    # The executor checks, and hands the ClientApp, the run config the SuperNode would build:
    # Flower's merge of the FAB's defaults with the run's overrides, read from the run object.
    from flwr.supernode import start_client_internal

    source = inspect.getsource(start_client_internal._pull_and_store_message)
    assert "get_fused_config_from_fab(fab.content, run_info)" in source
    assert _params(get_fused_config_from_fab) == ["fab_file", "run"]
    assert "run.override_config" in inspect.getsource(get_fused_config_from_fab)
    assert "override_config" in _params(Run)
    assert Run.create_empty(run_id=0).override_config == {}
    assert _params(get_fab_metadata) == ["fab_file"]


def test_constants_the_executor_reports_with_still_exist() -> None:
    assert TaskType.CLIENT_APP == "flwr-clientapp" == flower_runtime.CLIENT_APP_TASK
    assert ISOLATION_MODE_PROCESS == "process"
    assert (SubStatus.COMPLETED, SubStatus.FAILED) == (
        flower_runtime.TaskOutcome.COMPLETED,
        flower_runtime.TaskOutcome.FAILED,
    )
    assert ErrorCode.INVALID_FAB == flower_runtime.TaskOutcome.REFUSED


def test_supernode_runtime_api_still_protects_acquire_task_with_the_secret() -> None:
    from flwr.supercore.superexec import run_superexec

    assert flower_runtime.ACQUIRE_TASK_METHOD in run_superexec._SUPEREXEC_AUTH_METHODS


def test_supernode_loop_still_sleeps_where_the_pacer_shortens_it() -> None:
    # The pacer replaces ``time`` in this one module and wraps its pull; if Flower moves the
    # sleeps, renames the pull, or starts using more of ``time`` there, this fails.
    from flwr.supernode import start_client_internal as loop

    source = inspect.getsource(loop)
    assert source.count("time.sleep(3)") == 1, "the idle-pull sleep moved or changed"
    assert source.count("time.sleep(0.5)") == 2, "the reply-wait sleeps moved or changed"
    # ``time`` is used there for these sleeps only (the pacer forwards the rest anyway).
    assert len(re.findall(r"\btime\.\w+\(", source)) == source.count("time.sleep(")
    assert "run_id = _pull_and_store_message(" in inspect.getsource(loop.start_client_internal)
    assert _params(loop._pull_and_store_message)[:2] == ["state", "object_store"]
    assert flower_runtime.IDLE_PULL_SLEEP == 3.0 and flower_runtime.REPLY_CHECK_SLEEP == 0.5


def test_paced_sleep_waits_a_quarter_of_the_idle_time_within_bounds() -> None:
    now = [100.0]
    pacer = flower_runtime.PacedSleep(clock=lambda: now[0])
    pacer.saw_message()

    waits = []
    for idle in (0.0, 0.4, 2.0, 60.0):
        now[0] = 100.0 + idle
        waits.append(pacer.delay(flower_runtime.IDLE_PULL_SLEEP))

    assert waits == pytest.approx([0.05, 0.1, 0.5, 1.0])
    assert pacer.delay(flower_runtime.REPLY_CHECK_SLEEP) == flower_runtime.REPLY_CHECK
    assert pacer.delay(7.0) == 7.0
    assert pacer.monotonic is not None  # everything else is the time module's


def test_pacing_installs_into_the_supernode_loop_only() -> None:
    import time

    from flwr.supernode import start_client_internal as loop

    original_time, original_pull = loop.time, loop._pull_and_store_message
    pacer = flower_runtime.PacedSleep()
    try:
        flower_runtime.pace_supernode_loop(pacer)
        assert loop.time is pacer and time.sleep is not pacer.sleep
        assert loop._pull_and_store_message is not original_pull
    finally:
        loop.time, loop._pull_and_store_message = original_time, original_pull


def _pull_of_a_stopped_run(pull: Callable[..., int | None]) -> tuple[int | None, list[str]]:
    """Feed Flower's real SuperNode pull one message of a run the SuperLink no longer runs
    (its objects are refused as the SuperLink refuses them), in a real in-memory NodeState;
    returns what the pull returned and the statuses of the node's tasks."""
    import numpy as np
    from flwr.app import ArrayRecord, Message, RecordDict
    from flwr.supercore.inflatable.inflatable_object import get_object_tree
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.supercore.run import RunNotRunningException
    from flwr.supercore.task_identity import TaskIdentity
    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

    store = ObjectStoreFactory().store()
    state = InMemoryNodeState(store)
    run = Run.create_empty(5)
    state.store_run(run)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 5, 7, 1
    message = Message(RecordDict({"w": ArrayRecord([np.zeros(3)])}), dst_node_id=7,
                      message_type="train")  # fmt: skip
    message.metadata.__dict__["_message_id"] = message.object_id
    tree = get_object_tree(message)

    def run_stopped(run_id: int, object_id: str) -> bytes:
        raise RunNotRunningException(f"run {run_id} is not running")

    def not_reached(*args: object) -> None:
        raise AssertionError("the pull got further than the object pull")

    returned = pull(
        state=state, object_store=store, node_config={}, receive=lambda: (message, tree),
        get_run=not_reached, get_fab=not_reached, pull_object=run_stopped,
        confirm_message_received=not_reached, trusted_entities=None,
    )  # fmt: skip
    return returned, [task.status.status for task in state.get_tasks()]


def test_a_message_of_a_stopped_run_leaves_no_pending_task_behind() -> None:
    from flwr.supernode import start_client_internal as loop

    original_time, original_pull = loop.time, loop._pull_and_store_message
    # Flower 1.41 itself leaves the task pending (if an upgrade fixes that, this line fails:
    # then drop finish_leaked_tasks)...
    assert _pull_of_a_stopped_run(original_pull) == (None, ["pending"])
    try:
        flower_runtime.pace_supernode_loop(flower_runtime.PacedSleep())
        # ... which the executor would take first and hang on; the installed pull finishes it.
        returned, statuses = _pull_of_a_stopped_run(loop._pull_and_store_message)
    finally:
        loop.time, loop._pull_and_store_message = original_time, original_pull
    assert (returned, statuses) == (None, ["finished"])


def _status_error(status: int) -> Exception:
    import httpx

    request = httpx.Request("POST", "http://127.0.0.1:9/v1/runtime/pull-object")
    return httpx.HTTPStatusError(
        f"{status}", request=request, response=httpx.Response(status, request=request)
    )


def test_flowers_http_retry_still_sigints_its_own_process_on_401() -> None:
    # Why tasks get their own retry policy: right for flwr-clientapp (one process per task),
    # this would kill the warm executor, which serves every task of every run.
    from flwr.supercore.retry import http_retry

    source = inspect.getsource(http_retry.make_simple_http_retry_invoker)
    assert "os.kill(os.getpid(), signal.SIGINT)" in source


@pytest.mark.parametrize(
    ("status", "raised"),
    [(401, "TaskWithdrawnError"), (403, "RunNotRunningException"), (400, "HTTPStatusError")],
)
def test_a_task_call_refused_by_the_supernode_ends_the_task_not_the_executor(
    status: int, raised: str
) -> None:
    calls = []

    def refused() -> None:
        calls.append(status)
        raise _status_error(status)

    # Flower's RunNotRunningException is a BaseException, as a KeyboardInterrupt is.
    with pytest.raises(BaseException) as ended:
        flower_runtime.task_retry_invoker().invoke(refused)

    assert type(ended.value).__name__ == raised and calls == [status]  # no retry, no SIGINT
    assert isinstance(ended.value, flower_runtime.TASK_ENDED) == (status in (401, 403))


def test_a_task_call_retries_while_the_supernode_is_unavailable() -> None:
    import httpx

    failures: list[Exception] = [httpx.ConnectError("refused"), _status_error(503)]

    def flaky() -> str:
        if failures:
            raise failures.pop(0)
        return "answered"

    invoker = flower_runtime.task_retry_invoker()
    invoker.wait_function = lambda seconds: None  # the retry's waits, not its decisions
    assert invoker.invoke(flaky) == "answered" and failures == []
