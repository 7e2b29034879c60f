"""Hosting the worker: the Temporal client (the embedded dev server when no address is configured), the
Fullstory key (the simulator's when no FULLSTORY_API_KEY), and `serve()` until SIGTERM.

Used by the entry point (cli.py: `fullstory-jobs worker`, `demo`). It builds no activity and no
worker: those come in as `run_workers`, the composition root's (wiring.py), so infra/ never imports
activities/ or workflows/.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
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

from infra.embedded_temporal import start_embedded_temporal
from infra.health import Health
from infra.logging_setup import add_secret
from infra.settings import Settings, SettingsError
from infra.temporal_connection import TemporalTarget, connect, load_temporal_target
from infra.tracing import otel_hidden_from_children, shutdown_tracing

log = logging.getLogger("fullstory_jobs.worker")

SIMULATOR_KEY = "simulator-key"


@dataclass
class Services:
    client: Client
    api_key: str | None  # the Fullstory key; None: another process's worker already serves this task queue
    settings: Settings  # with the simulator's base URLs when it runs
    target: TemporalTarget
    runtime: Runtime  # its metric meter counts our own metrics too


RunWorkers = Callable[[Services], AbstractAsyncContextManager[None]]


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
    """Temporal client (embedded dev server if no address is configured) and Fullstory key (simulator if none).

    reuse_running_server (demo): use the embedded dev server another process runs here rather than fail;
    when a worker already polls the task queue there, `api_key` is None (and no simulator is started):
    that worker, with its own Fullstory client or simulator, runs the workflows.
    """
    target = load_temporal_target()
    for secret in target.secrets():
        add_secret(secret)
    runtime = temporal_runtime(settings)
    async with contextlib.AsyncExitStack() as stack:
        shared = False
        if target.embedded:
            with otel_hidden_from_children():  # the dev server reads OTEL_* too (and refuses `console`)
                client, target, shared = await start_embedded_temporal(
                    stack, settings, target, runtime, reuse_running_server=reuse_running_server
                )
        else:
            client = await connect(target, runtime)
        if shared and await worker_polls(client, target.namespace, settings.fullstory_task_queue):
            print(f"using the worker already polling task queue {settings.fullstory_task_queue!r} there", flush=True)
            yield Services(client, None, settings, target, runtime)
            return
        api_key = settings.api_key()
        if api_key is None:
            api_key, settings = SIMULATOR_KEY, start_simulator(stack, settings)
        add_secret(api_key)
        yield Services(client, api_key, settings, target, runtime)


def start_simulator(stack: contextlib.ExitStack | contextlib.AsyncExitStack, settings: Settings) -> Settings:
    """The bundled simulator, demo-flavoured, until `stack` closes; the settings pointing at it."""
    from simulator import Simulator

    sim = stack.enter_context(Simulator(api_key=SIMULATOR_KEY))
    # Demo flavour: jobs take a few seconds and have a few failed records to collect, and any
    # job or operation id you name exists (`fullstory-jobs start batch-import --job-id X`).
    sim.batch_defaults.update(duration=5.0, errors=3)
    sim.export_defaults.update(duration=8.0, table_rows=2_000)  # real rows: `--load duckdb` gives a table to query
    sim.adopt_unknown_ids = True
    print(
        f"!!! NO FULLSTORY_API_KEY SET: using the bundled Fullstory SIMULATOR at {sim.base_url} "
        "(fake data; set FULLSTORY_API_KEY to talk to Fullstory) !!!",
        flush=True,
    )
    return settings.model_copy(update={"fullstory_base_url": sim.base_url, "fullstory_export_base_url": sim.base_url})


async def serve_health(stack: contextlib.AsyncExitStack, settings: Settings, client: Client) -> Health:
    """/healthz and /readyz on FULLSTORY_HEALTH_PORT when set."""
    # GetSystemInfo: the call every SDK makes on connect, so self-hosted and Cloud frontends both answer it.
    health = Health(lambda: client.workflow_service.get_system_info(GetSystemInfoRequest()))
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
    return health


async def serve(settings: Settings, run_workers: RunWorkers, allowed_locations: str) -> None:
    """Run the workers until SIGINT/SIGTERM, then let in-flight activities finish (the workers' graceful timeout)."""
    async with services(settings) as rt, contextlib.AsyncExitStack() as stack:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        health = await serve_health(stack, settings, rt.client)
        if settings.fullstory_metrics_port:
            print(
                f"metrics on http://{settings.fullstory_listen_host}:{settings.fullstory_metrics_port}/metrics",
                flush=True,
            )
        print(f"workflows may read and write only in: {allowed_locations} (FULLSTORY_ALLOWED_LOCATIONS)", flush=True)
        async with run_workers(rt):
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


def exit_now(rc: int) -> NoReturn:
    """Flush, then `os._exit(rc)`.

    A normal interpreter shutdown after using temporalio can abort with "Fatal Python error:
    PyGILState_Release" (its runtime's threads outlive the interpreter; seen in about one run in
    ten), turning a clean exit 0 into SIGABRT. Everything was closed by then (but buffered spans: exported here).
    """
    shutdown_tracing()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
